"""Static int8 quantisation: training photos only, contract round-trip, features agree with float32, reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featkit.backbones import get_backbone, get_backbone_from_spec
from featkit.backbones.base import file_sha256
from featkit.backbones.onnx_model import OnnxBackbone, available_cores
from featkit.core.errors import FeatkitError
from featkit.data import prepare
from featkit.data.images import decode_image
from featkit.features import extract as ex
from featkit.features.cache import read_cache
from featkit.features.quantize import METHOD, calibration_rows, ensure_int8, quantize_onnx

SIZE = 64


class ReadSpy:
    """Wraps Prepared.read and records every path read."""

    def __init__(self, prep):
        self.inner, self.paths = prep.read, []
        prep.read = self

    def __call__(self, path: str) -> bytes:
        self.paths.append(path)
        return self.inner(path)


@pytest.fixture(scope="module")
def quantized(mini, tmp_path_factory, mobilenet_onnx):
    """(prep, result, paths read) of one quantisation of MobileNetV2 on the mini dataset's training photos."""
    cache = tmp_path_factory.mktemp("qcache")
    prep = prepare(mini, cache_dir=cache, quiet=True)
    spy = ReadSpy(prep)
    opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE)
    result = quantize_onnx(mobilenet_onnx, prep, opts, photos=512, cache_dir=cache, quiet=True)
    prep.read = spy.inner
    return prep, result, spy.paths, cache


def test_quantisation_reads_training_photos_only(quantized):
    prep, result, read, _ = quantized
    m = prep.manifest
    split_of = dict(zip(m["path"], m["split"], strict=True))
    assert read, "calibration read no photo"
    assert {split_of[p] for p in read} == {"train"}  # never a valid or test photo
    train = m[m["split"] == "train"]
    assert sorted(read) == sorted(train["path"])  # 512 asked, fewer exist: every training photo once
    contract = json.loads(Path(result.contract).read_text())
    q = contract["quantization"]
    assert sorted(q["calibration_image_ids"]) == sorted(train["image_id"])
    assert q["calibration_photos"] == result.photos == len(train) and q["settings"]["split"] == "train"
    assert set(m[m["split"] != "train"]["image_id"]).isdisjoint(q["calibration_image_ids"])


def test_calibration_sample_is_seeded_and_from_train(quantized):
    prep = quantized[0]
    a, b, c = (calibration_rows(prep, 20, seed) for seed in (0, 0, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(a) == 20
    assert set(prep.manifest["split"].to_numpy()[np.concatenate([a, c])]) == {"train"}


def test_int8_contract_round_trips_and_loads_as_a_backbone(quantized, mobilenet_onnx):
    _, result, _, _ = quantized
    path = Path(result.path)
    contract = json.loads(path.with_suffix(".json").read_text())
    source = json.loads(mobilenet_onnx.with_suffix(".json").read_text())
    assert contract["precision"] == "int8" and contract["sha256"] == file_sha256(path)
    assert contract["file"] == path.name and contract["file_size_bytes"] == path.stat().st_size
    assert contract["quantization"]["source_model"]["sha256"] == file_sha256(mobilenet_onnx) == source["sha256"]
    assert contract["quantization"]["method"] == METHOD and contract["quantization"]["calibration_size"] == SIZE
    for key in (
        "input_name",
        "input_layout",
        "input_dtype",
        "output_name",
        "feature_size",
        "input_size",
        "dynamic_size",
        "preprocessing_in_graph",
        "labels_file",
        "source",
    ):
        assert contract[key] == source[key], key
    assert path.stat().st_size < mobilenet_onnx.stat().st_size / 3  # int8 weights: under a third of float32

    bb = get_backbone(str(path), size=SIZE)
    assert isinstance(bb, OnnxBackbone) and bb.precision == "int8" and bb.feature_dim == 1280
    assert bb.spec.extra["precision"] == "int8"
    assert bb.spec.extra["quantization"]["source_model"]["sha256"] == source["sha256"]
    again = get_backbone_from_spec(json.loads(json.dumps(bb.spec.to_dict())))
    assert again.spec == bb.spec
    assert "precision" not in get_backbone(str(mobilenet_onnx), size=SIZE).spec.extra  # float32 specs unchanged


def test_int8_features_agree_with_float32(quantized, mobilenet_onnx, food_photos_64):
    photos, _ = food_photos_64  # 60 real photos of 5 classes
    f32 = get_backbone(str(mobilenet_onnx), size=SIZE)(photos)
    i8 = get_backbone(quantized[1].path, size=SIZE)(photos)
    cos = (f32 * i8).sum(1) / (np.linalg.norm(f32, axis=1) * np.linalg.norm(i8, axis=1))
    assert np.median(cos) >= 0.95
    assert not np.allclose(f32, i8, atol=1e-3)  # really a different (quantised) model


def test_a_complete_int8_model_is_reused_without_reading_photos(quantized, mobilenet_onnx):
    prep, result, _, cache = quantized
    spy = ReadSpy(prep)
    try:
        opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE)
        again = quantize_onnx(mobilenet_onnx, prep, opts, photos=512, cache_dir=cache, quiet=True)
        assert ensure_int8(prep, opts, cache) == Path(result.path)
    finally:
        prep.read = spy.inner
    assert again.status == "up to date" and again.path == result.path and spy.paths == []


def test_an_existing_file_is_never_overwritten(quantized, mobilenet_onnx, tmp_path):
    prep = quantized[0]
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"somebody's model")
    with pytest.raises(FeatkitError, match="already exists"):
        quantize_onnx(mobilenet_onnx, prep, ex.ExtractOptions(size=SIZE), out=mine, quiet=True)
    assert mine.read_bytes() == b"somebody's model"
    with pytest.raises(FeatkitError, match="already quantised"):
        quantize_onnx(quantized[1].path, prep, ex.ExtractOptions(size=SIZE), out=tmp_path / "x.onnx", quiet=True)


def test_extract_precision_int8_uses_the_cached_int8_model(quantized, mobilenet_onnx, mini):
    from featkit.features.jobs import extract_features

    prep, result, _, cache = quantized
    opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE, precision="int8", dtype="float32")
    (res,) = extract_features(mini, opts, cache, quiet=True)
    fs = read_cache(res.path)
    assert fs.meta.backbone.extra["precision"] == "int8" and fs.meta.backbone.weights_sha256 == file_sha256(result.path)
    assert fs.meta.extra["onnxruntime_session"]["intra_op_num_threads"] == available_cores()
    assert fs.meta.extra["onnxruntime_session"]["graph_optimization_level"] == "ORT_ENABLE_ALL"
    (f32,) = ex.extract(prep, ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE), cache_dir=cache, quiet=True)
    assert Path(f32.path).parent != Path(res.path).parent  # its own cache folder
    assert "precision" not in read_cache(f32.path).meta.backbone.extra  # float32 specs stay as they were
    direct = get_backbone(result.path, size=SIZE)(
        np.stack([decode_image(prep.read(p), SIZE) for p in prep.manifest["path"]])
    )
    np.testing.assert_allclose(fs.features, direct, rtol=1e-4, atol=1e-4)


def test_precision_int8_needs_an_onnx_backbone_or_a_keras_name(quantized):
    with pytest.raises(FeatkitError, match="needs an ONNX backbone .* or a Keras name"):
        ensure_int8(quantized[0], ex.ExtractOptions(backbone="model.pb", precision="int8"), "cache")
    with pytest.raises(FeatkitError, match="--precision should be"):
        ex.ExtractOptions(precision="int4")


def test_quantize_command(quantized, mini, mobilenet_onnx, capsys):
    from conftest import run_main
    from typer.testing import CliRunner

    from featkit.cli import app

    _, result, _, cache = quantized
    res = CliRunner().invoke(
        app,
        [
            "quantize",
            str(mobilenet_onnx),
            "--data",
            str(mini),
            "--size",
            str(SIZE),
            "--cache",
            str(cache),
            "--json",
            "--quiet",
        ],
        catch_exceptions=False,
    )
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and out["status"] == "up to date" and out["path"] == result.path
    assert out["photos"] == result.photos and out["size"] == SIZE
    # --precision int4, --decode fast: usage errors (exit 2), see test_cli_conventions.py
    r = run_main(capsys, "quantize", mobilenet_onnx, "--data", mini, "--photos", "0", "--cache", cache)
    lines = r.err.strip().splitlines()
    assert r.code == 1 and len(lines) == 1 and lines[0].startswith("error: "), r.err  # 2: usage errors
    assert "int8" in CliRunner().invoke(app, ["quantize", "--help"]).stdout


def test_quantisation_is_deterministic(quantized, mobilenet_onnx, tmp_path):
    prep, result, _, _ = quantized
    opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE)
    again = quantize_onnx(mobilenet_onnx, prep, opts, photos=512, out=tmp_path / "again.onnx", quiet=True)
    assert again.status == "quantized" and file_sha256(again.path) == file_sha256(result.path)
    first, second = (json.loads(Path(r.contract).read_text())["quantization"] for r in (result, again))
    assert first["calibration_image_ids"] == second["calibration_image_ids"]


def test_int8_caches_made_with_the_saturating_kernels_are_made_again(quantized, mobilenet_onnx, mini, monkeypatch):
    from featkit.features.jobs import extract_features, find_plain_caches

    prep, _, _, cache = quantized
    opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE, precision="int8")
    identity = ex.job_identity

    def before_exact_kernels(*args):  # the identity an int8 cache of featkit 0.1 has
        return {k: v for k, v in identity(*args).items() if k != "int8_kernels"}

    with monkeypatch.context() as m:
        m.setattr(ex, "job_identity", before_exact_kernels)
        (old,) = extract_features(mini, opts, cache, quiet=True)
    with pytest.raises(FeatkitError, match="int8 features made before featkit asked onnxruntime for exact int8 kern"):
        find_plain_caches(prep, [str(mobilenet_onnx)], [SIZE], cache, precision="int8")
    (again,) = extract_features(mini, opts, cache, quiet=True)
    assert again.path == old.path and again.status == "extracted"  # not "up to date"
    assert read_cache(again.path).meta.identity["int8_kernels"] == "exact"
    assert find_plain_caches(prep, [str(mobilenet_onnx)], [SIZE], cache, precision="int8") == [Path(again.path)]


def test_fit_head_with_data_finds_the_int8_and_full_decode_caches(quantized, mobilenet_onnx, mini, tmp_path):
    from featkit.features.jobs import extract_features, find_plain_caches

    prep, result, _, cache = quantized
    int8_opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE, precision="int8")
    full_opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE, decode="full")
    (int8_cache,) = extract_features(mini, int8_opts, cache, quiet=True)
    (full_cache,) = extract_features(mini, full_opts, cache, quiet=True)
    extract_features(mini, ex.ExtractOptions(backbone=str(mobilenet_onnx), size=SIZE), cache, quiet=True)
    found = {
        p: find_plain_caches(prep, [str(mobilenet_onnx)], [SIZE], cache, **kw)
        for p, kw in (("int8", {"precision": "int8"}), ("full", {"decode": "full"}), ("plain", {}))
    }
    assert found["int8"] == [Path(int8_cache.path)] and found["full"] == [Path(full_cache.path)]
    assert len({str(v[0]) for v in found.values()}) == 3  # three different caches
    assert read_cache(found["int8"][0]).meta.backbone.extra["precision"] == "int8"
    # the int8 model itself as the backbone: extract uses it as it is, and so does the search
    assert find_plain_caches(prep, [result.path], [SIZE], cache, precision="int8") == [Path(int8_cache.path)]
    # a Keras backbone is looked for through its ONNX copy, which only extract --precision int8 makes
    with pytest.raises(FeatkitError, match="no ONNX copy of the Keras backbone mobilenetv2 .* --precision int8"):
        find_plain_caches(prep, ["mobilenetv2"], [SIZE], cache, precision="int8")

    from typer.testing import CliRunner

    from featkit.cli import app

    base = [
        "fit-head",
        "--data",
        str(mini),
        "--backbone",
        str(mobilenet_onnx),
        "--size",
        str(SIZE),
        "--cache",
        str(cache),
        "--reports",
        str(tmp_path),
        "--head",
        "logreg",
        "-p",
        "C=0.1",
        "--json",
        "--quiet",
    ]
    res = CliRunner().invoke(app, base + ["--precision", "int8"], catch_exceptions=False)
    assert res.exit_code == 0, res.stdout
    run = json.loads(res.stdout)
    config = json.loads((Path(run["path"]) / "config.json").read_text())
    assert config["cache"] == str(Path(int8_cache.path).resolve())

    # no int8 copy for another size: one line saying which command makes it
    with pytest.raises(FeatkitError, match=r"no int8 copy of mobilenet-v2.onnx .* --precision int8 --size 96` first"):
        find_plain_caches(prep, [str(mobilenet_onnx)], [96], cache, precision="int8")
