"""featkit extract: cache round-trip, views, resume after a kill, invalidation, shards, idempotence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI_CLASSES as CLASSES
from conftest import MINI_PER_CLASS as PER_CLASS
from typer.testing import CliRunner

from featkit.cli import app
from featkit.data import prepare
from featkit.data.images import decode_image
from featkit.features import extract as ex
from featkit.features import pipeline
from featkit.features.cache import array_digest, read_cache


def _opts(model: Path, **kw) -> ex.ExtractOptions:
    return ex.ExtractOptions(backbone=str(model), size=kw.pop("size", 64), **kw)


def _run(data: Path, cache: Path, opts: ex.ExtractOptions):
    prep = prepare(data, cache_dir=cache, quiet=True)
    return prep, ex.extract(prep, opts, cache_dir=cache, quiet=True)


def test_cache_equals_direct_forward_pass(mini, tmp_path, mobilenet_onnx):
    import onnxruntime as ort

    prep, res = _run(mini, tmp_path, _opts(mobilenet_onnx, dtype="float32"))
    fs = read_cache(res[0].path)
    assert res[0].status == "extracted" and len(fs) == CLASSES * PER_CLASS
    m = prep.manifest
    images = np.stack([decode_image(prep.read(p), 64) for p in m["path"]])
    sess = ort.InferenceSession(str(mobilenet_onnx), providers=["CPUExecutionProvider"])
    direct = sess.run(["features"], {"images": images})[0]
    np.testing.assert_allclose(fs.features, direct, rtol=1e-4, atol=1e-4)
    assert list(fs.labels) == m["label"].tolist() and list(fs.split) == m["split"].tolist()
    assert list(fs.image_ids) == m["image_id"].tolist()
    assert fs.meta.backbone.kind == "onnx" and fs.meta.size == 64
    assert [c.id for c in fs.classes] == sorted(p.name for p in mini.iterdir())
    assert fs.meta.photos_per_second > 0


def test_second_run_returns_at_once_without_building(mini, tmp_path, mobilenet_onnx, monkeypatch):
    _run(mini, tmp_path, _opts(mobilenet_onnx))
    monkeypatch.setattr(ex, "_build_backbone", lambda *a: pytest.fail("a complete cache must not rebuild the backbone"))
    _, res = _run(mini, tmp_path, _opts(mobilenet_onnx))
    assert [r.status for r in res] == ["up to date"]


def test_views_have_the_right_rows_and_differ_from_plain(mini, tmp_path, mobilenet_onnx):
    prep, res = _run(mini, tmp_path, _opts(mobilenet_onnx, augment=2, sensitivity=True))
    by = {r.view: read_cache(r.path) for r in res}
    plain = by.pop("plain")
    n_train = int((prep.manifest["split"] == "train").sum())
    n_test = int((prep.manifest["split"] == "test").sum())
    (aug_name,) = [v for v in by if v.startswith("augment")]
    aug = by.pop(aug_name)
    assert aug.features.shape == (2 * n_train, plain.features.shape[1])
    assert set(aug.split) == {"train"} and sorted(set(aug.copy)) == [0, 1]
    train_plain = plain.subset("train")
    first = aug.features[aug.copy == 0]
    assert np.array_equal(aug.image_ids[aug.copy == 0], train_plain.image_ids)
    assert not np.allclose(first, train_plain.features, atol=1e-2)
    assert not np.allclose(first, aug.features[aug.copy == 1], atol=1e-2)  # copies are different draws
    assert len(by) == 3
    test_plain = plain.subset("test")
    for view, fs in by.items():
        assert len(fs) == n_test and set(fs.split) == {"test"}
        assert fs.meta.view_params["rotation"] in (45, 180)
        assert not np.allclose(fs.features, test_plain.features, atol=1e-2), view


def test_views_are_seeded(mini, tmp_path, mobilenet_onnx):
    _, a = _run(mini, tmp_path / "a", _opts(mobilenet_onnx, sensitivity=True, plain=False))
    _, b = _run(mini, tmp_path / "b", _opts(mobilenet_onnx, sensitivity=True, plain=False))
    for ra, rb in zip(a, b, strict=True):
        assert np.array_equal(read_cache(ra.path).features, read_cache(rb.path).features)


def test_shards_merged_equal_one_full_run(mini, tmp_path, mobilenet_onnx, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK", 16)
    _, full = _run(mini, tmp_path / "full", _opts(mobilenet_onnx))
    shard_files = []
    for i in range(3):
        _, res = _run(mini, tmp_path / "sh", _opts(mobilenet_onnx, shard=(i, 3)))
        assert res[0].status == "shard done"
        shard_files.append(Path(res[0].path))
    with pytest.raises(ex.FeatkitError, match="missing"):
        ex.merge(shard_files[:2])
    # through the command line: --json names the file written, --quiet prints nothing
    shards = [str(p) for p in shard_files]
    res = CliRunner().invoke(app, ["merge", *shards, "--json"], catch_exceptions=False)
    out = json.loads(res.stdout)
    assert res.exit_code == 0 and out == {"path": str(shard_files[0].parent / "plain.h5"), "shards": shards}
    merged = read_cache(out["path"])
    res = CliRunner().invoke(app, ["merge", *shards, "--quiet", "--out", str(tmp_path / "q.h5")])
    assert (res.exit_code, res.stdout) == (0, "") and (tmp_path / "q.h5").exists()
    whole = read_cache(full[0].path)
    assert np.array_equal(merged.features, whole.features)
    assert np.array_equal(merged.image_ids, whole.image_ids) and np.array_equal(merged.labels, whole.labels)
    _, again = _run(mini, tmp_path / "sh", _opts(mobilenet_onnx))
    assert again[0].status == "up to date"  # the merged file is what a full extract would have made


KILLER = r"""
import os, signal, sys
from featkit.features import extract as ex
from featkit.data import prepare
from featkit.features import pipeline
pipeline.CHUNK = 16
real = ex._build_backbone
def build(*a):
    bb = real(*a)
    calls = {"n": 0}
    inner = bb._run
    def run(x):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return inner(x)
    bb._run = run
    bb.batch_size = 16
    return bb
ex._build_backbone = build
prep = prepare(sys.argv[1], cache_dir=sys.argv[2], quiet=True)
ex.extract(prep, ex.ExtractOptions(backbone=sys.argv[3], size=64), cache_dir=sys.argv[2], quiet=True)
"""


def test_resumes_after_kill_minus_9(mini, tmp_path, mobilenet_onnx, monkeypatch):
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(mini), str(cache), str(mobilenet_onnx)])
    assert proc.returncode == -9
    partial = list(cache.glob("features/*/*/plain.partial"))
    assert len(partial) == 1 and len(list(partial[0].glob("chunk-*.npz"))) == 3
    assert not list(cache.glob("features/*/*/plain.h5"))  # never a half-written file at the final path
    monkeypatch.setattr(pipeline, "CHUNK", 16)
    _, res = _run(mini, cache, _opts(mobilenet_onnx))
    assert res[0].status == "resumed"
    _, clean = _run(mini, tmp_path / "clean", _opts(mobilenet_onnx))
    np.testing.assert_array_equal(read_cache(res[0].path).features, read_cache(clean[0].path).features)
    assert not partial[0].exists()


def test_changed_dataset_invalidates_with_a_message(mini, tmp_path, mobilenet_onnx):
    data = tmp_path / "data"
    shutil.copytree(mini, data)
    _, first = _run(data, tmp_path / "c", _opts(mobilenet_onnx))
    victim = sorted((data / sorted(os.listdir(data))[0]).iterdir())[0]
    other = sorted((data / sorted(os.listdir(data))[1]).iterdir())[0]
    victim.write_bytes(other.read_bytes())  # a photo's content changed
    messages = []
    prep = prepare(data, cache_dir=tmp_path / "c", quiet=True)
    second = ex.extract(prep, _opts(mobilenet_onnx), cache_dir=tmp_path / "c", log=messages.append)
    assert second[0].status == "extracted" and second[0].path != first[0].path
    assert any("changed" in m for m in messages)


def test_onnx_extract_does_not_import_tensorflow(mini, tmp_path, mobilenet_onnx):
    code = (
        "import sys; from featkit.data import prepare; from featkit.features import extract as ex\n"
        f"p = prepare({str(mini)!r}, cache_dir={str(tmp_path)!r}, quiet=True)\n"
        f"ex.extract(p, ex.ExtractOptions(backbone={str(mobilenet_onnx)!r}, size=64), cache_dir={str(tmp_path)!r}, "
        "quiet=True)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_keras_path_with_shared_weights_agrees_with_onnx(mini, tmp_path, mobilenet_onnx, keras_notop_weights):
    """Same weights, two runtimes: the cached features must agree (the proof that Keras preprocessing is right)."""
    _, onnx_res = _run(mini, tmp_path, _opts(mobilenet_onnx, size=96, dtype="float32"))
    _, keras_res = _run(
        mini,
        tmp_path,
        ex.ExtractOptions(backbone="mobilenetv2", size=96, weights=str(keras_notop_weights), dtype="float32"),
    )
    a, b = read_cache(onnx_res[0].path).features, read_cache(keras_res[0].path).features
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999
    assert Path(onnx_res[0].path).parent != Path(keras_res[0].path).parent


def test_bad_options_give_one_line_errors(mini, tmp_path):
    with pytest.raises(ex.FeatkitError, match="i/n"):
        ex.parse_shard("2")
    with pytest.raises(ex.FeatkitError, match="0 <= i < n"):
        ex.ExtractOptions(shard=(3, 3))
    with pytest.raises(ex.FeatkitError, match="does not exist"):
        ex.resolve_backbone(ex.ExtractOptions(backbone=str(tmp_path / "nope.onnx")))
    with pytest.raises(ex.FeatkitError, match="weights file"):
        ex.resolve_backbone(ex.ExtractOptions(backbone="vgg16", weights=str(tmp_path / "nope.h5")))


# ---- stages and structured failures --------------------------------------------------------------------------


def test_a_photo_whose_path_holds_a_colon_space_is_reported_by_its_exact_path(mini, tmp_path, mobilenet_onnx):
    data = tmp_path / "data"
    shutil.copytree(mini, data)
    first_class = sorted(data.iterdir())[0]
    odd = first_class / "lunch: day 2: plate.jpg"
    sorted(first_class.glob("*.jpg"))[0].rename(odd)
    prep = prepare(data, cache_dir=tmp_path / "c", quiet=True)
    assert f"{first_class.name}/lunch: day 2: plate.jpg" in prep.manifest["path"].tolist()
    odd.write_bytes(b"not a jpeg any more")  # damaged after the scan: the extraction's decoder finds it
    said: list[str] = []
    (res,) = ex.extract(prep, _opts(mobilenet_onnx), cache_dir=tmp_path / "c", log=said.append)
    (f,) = res.failures
    row = prep.manifest["path"].tolist().index(f"{first_class.name}/lunch: day 2: plate.jpg")
    assert (f.index, f.path) == (row, f"{first_class.name}/lunch: day 2: plate.jpg")
    assert not f.error.startswith(first_class.name) and ": day 2" not in f.error  # the reason, not the path
    meta = read_cache(res.path).meta
    assert meta.failures == [{"row": row, "path": f.path, "error": f.error}] and meta.photos == CLASSES * PER_CLASS - 1
    assert f"    {f.path}: {f.error}" in said
    again = ex.cached_result(
        prep, _opts(mobilenet_onnx), ex.plan_views(prep, _opts(mobilenet_onnx), Path(res.path).parent)[0]
    )
    assert again is not None and again.status == "up to date" and again.failures == [f]


def test_seconds_per_stage_are_recorded_and_merged_shards_add_them_up(mini, tmp_path, mobilenet_onnx, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK", 16)
    _, (full,) = _run(mini, tmp_path / "full", _opts(mobilenet_onnx))
    stages = read_cache(full.path).meta.stage_seconds
    assert stages == full.stage_seconds and min(stages.decode, stages.forward, stages.write) > 0
    shards = [_run(mini, tmp_path / "sh", _opts(mobilenet_onnx, shard=(i, 2)))[1][0] for i in range(2)]
    parts = [read_cache(r.path).meta.stage_seconds for r in shards]
    merged = read_cache(ex.merge([Path(r.path) for r in shards])).meta.stage_seconds
    assert merged == parts[0] + parts[1]
    assert merged.forward == pytest.approx(parts[0].forward + parts[1].forward, abs=0)


def test_a_chunk_saved_before_failures_were_structured_is_extracted_again(mini, tmp_path, mobilenet_onnx, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK", 16)
    prep = prepare(mini, cache_dir=tmp_path, quiet=True)
    opts = _opts(mobilenet_onnx)
    job = ex.plan_views(prep, opts, ex.features_dir(prep, opts, tmp_path))[0]
    identity = ex.job_identity(prep, ex.resolve_backbone(opts), opts, job)
    bound = pipeline.identity_digest(identity)
    job.partial.mkdir(parents=True)
    old = {  # the arrays a chunk held when failures were one "path: error" string each
        "features": np.zeros((16, 1280), np.float16),
        "failed_rows": np.zeros(0, np.int64),
        "failed_msgs": np.zeros(0, dtype=str),
        "chunk": np.array(0),
        "identity": np.array(bound),
    }
    with open(pipeline.chunk_file(job.partial, 0), "wb") as fh:
        np.savez(fh, checksum=np.array(array_digest(old)), **old)
    with pytest.raises(ex.DamagedFileError, match="no array failed_paths, failed_errors"):
        pipeline.load_chunk(job.partial, 0, bound, len(job.rows))
    said: list[str] = []
    (res,) = ex.extract(prep, opts, cache_dir=tmp_path, log=said.append)
    assert res.status == "extracted" and any("extracting that chunk again" in s for s in said)
    _, (clean,) = _run(mini, tmp_path / "clean", opts)
    np.testing.assert_array_equal(read_cache(res.path).features, read_cache(clean.path).features)
