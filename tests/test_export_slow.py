"""`featkit export model` for the run kinds that need TensorFlow (softmax head, CNN run), `--precision int8`, and
Keras backbones converted to ONNX for `featkit extract --precision int8`: real photos, real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_export_model import _check_reproduces, _fit, _onnx_probs, reports, small_cache, test_photos  # noqa: F401

pytestmark = pytest.mark.slow  # builds Keras models, converts them with tf2onnx


def test_export_of_a_softmax_head_run_reproduces_it(caches, reports, test_photos, tmp_path):  # noqa: F811
    from featkit.apps.export_model import export_model

    run = _fit(caches.plain, "softmax", reports, params={"hidden": 32, "epochs": 4, "lr": 1e-3})
    export_model(run.id, tmp_path / "model.onnx", reports=reports, quiet=True)
    _check_reproduces(run, tmp_path / "model.onnx", test_photos)


def test_export_of_a_cnn_run_reproduces_it(mini, tmp_path_factory, tmp_path):
    from featkit.apps.export_model import export_model, run_test_photos
    from featkit.cnn.series import train_preset

    root = tmp_path_factory.mktemp("cnn-export")
    run, _ = train_preset(
        "basic", mini, {"epochs": 1, "size": 32}, cache=root / "cache", reports=root / "reports", quiet=True
    )
    out = tmp_path / "cnn.onnx"
    export_model(run.id, out, reports=root / "reports", quiet=True)
    images, ids = run_test_photos(run, 32)
    pred = run.load_predictions("test")
    assert list(ids) == list(pred["image_ids"])
    probs = _onnx_probs(out, {32: images})
    assert float((probs.argmax(1) == pred["probs"].argmax(1)).mean()) >= 0.995
    assert float(np.abs(probs - pred["probs"]).mean()) <= 1e-3
    # a CNN run without its model file: one line, nothing written
    (run.path / "model.keras").rename(run.path / "moved.keras")
    from featkit.core.errors import FeatkitError

    with pytest.raises(FeatkitError, match="model.keras is missing"):
        export_model(run.id, tmp_path / "gone.onnx", reports=root / "reports", quiet=True)
    assert not (tmp_path / "gone.onnx").exists()


@pytest.fixture(scope="module")
def keras_int8(mini, keras_notop_weights, tmp_path_factory):
    """`featkit extract --backbone mobilenetv2 --weights <shared Keras weights> --size 64 --precision int8` on the
    mini dataset, and the same features in float32 through Keras."""
    from featkit.cli import main

    root = tmp_path_factory.mktemp("keras-int8")
    args = ["--data", str(mini), "--backbone", "mobilenetv2", "--weights", str(keras_notop_weights), "--size", "64"]
    for precision in ("float32", "int8"):
        with pytest.raises(SystemExit) as e:
            main(["extract", *args, "--precision", precision, "--cache", str(root / "cache"), "--quiet"])
        assert e.value.code == 0
    return root


def test_keras_backbone_runs_int8_through_its_onnx_copy(keras_int8, keras_notop_weights, mini):
    from featkit.backbones.to_onnx import keras_onnx
    from featkit.features.cache import read_cache

    caches = {read_cache(p).meta.backbone.name: read_cache(p) for p in keras_int8.glob("cache/features/*/*/plain.h5")}
    assert sorted(caches) == ["mobilenetv2", "mobilenetv2-onnx-int8"]
    f32, i8 = caches["mobilenetv2"], caches["mobilenetv2-onnx-int8"]
    assert list(f32.image_ids) == list(i8.image_ids)
    a, b = f32.features.astype(np.float64), i8.features.astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    # a floor that catches a broken conversion or quantisation; the accuracy itself is measured at 128 px by
    # benchmarks/export.py (median 0.982 with featkit's session settings, 0.825 with onnxruntime's defaults on AVX2)
    assert np.median(cos) >= 0.8, f"median cosine int8 vs Keras float32 {np.median(cos):.3f}"
    # the ONNX copy was made once, with its contract, and is found again without converting
    path = keras_onnx("mobilenetv2", 64, str(keras_notop_weights), cache_dir=keras_int8 / "cache", convert=False)
    contract = json.loads(path.with_suffix(".json").read_text())
    from featkit.backbones.onnx_model import OnnxBackbone
    from featkit.data import prepare
    from featkit.data.arrays import load_rows

    prep = prepare(mini, cache_dir=keras_int8 / "cache", quiet=True)
    photos, _ = load_rows(prep, np.arange(8), 64, "stretch", False, "draft")
    rows = [list(f32.image_ids).index(i) for i in prep.manifest["image_id"].astype(str)[:8]]
    copy = OnnxBackbone(path)(photos)  # the float32 ONNX copy computes the Keras features
    assert np.abs(copy - f32.features[rows].astype(np.float32)).max() <= 0.01 * np.abs(copy).max()
    assert contract["precision"] == "float32" and contract["input_size"] == [64, 64]
    assert contract["conversion"]["check_relative_max_abs_diff"] < 1e-4
    models = sorted(p.name for p in (keras_int8 / "cache" / "models").glob("*.onnx"))
    assert len(models) == 2 and path.name in models  # one copy, and its int8 model beside it
    assert [m for m in models if m != path.name][0].startswith(f"{path.stem}.int8-")


def test_int8_export_runs_the_int8_backbone_featkit_calibrates(mini, mobilenet_onnx, tmp_path):
    """--precision int8: the backbone part is featkit's int8 copy (calibrated on the run's training photos); the
    export computes exactly what that int8 backbone and the run's head compute in featkit."""
    import onnx

    from featkit.apps.export_model import export_model, run_test_photos
    from featkit.backbones.onnx_model import OnnxBackbone
    from featkit.data import prepare
    from featkit.features.extract import ExtractOptions
    from featkit.features.jobs import extract_features, find_plain_caches
    from featkit.heads import load_run_head

    cache, where = tmp_path / "cache", tmp_path / "reports"
    extract_features(mini, ExtractOptions(backbone=str(mobilenet_onnx), size=64), cache, quiet=True)
    [plain] = find_plain_caches(prepare(mini, cache_dir=cache, quiet=True), [str(mobilenet_onnx)], [64], cache)
    run = _fit(plain, "logreg", where)
    for precision in ("float32", "int8"):
        export_model(run.id, tmp_path / f"{precision}.onnx", precision=precision, reports=where, cache_dir=cache)
    images, _ = run_test_photos(run, 64)
    pred = run.load_predictions("test")
    f32 = _onnx_probs(tmp_path / "float32.onnx", {64: images})
    assert float((f32.argmax(1) == pred["probs"].argmax(1)).mean()) >= 0.995
    assert float(np.abs(f32 - pred["probs"]).mean()) <= 1e-3
    [int8_model] = (cache / "models").glob("mobilenet-v2.int8-*.onnx")
    want = load_run_head(run).predict_proba(OnnxBackbone(int8_model, size=64)(images))
    got = _onnx_probs(tmp_path / "int8.onnx", {64: images})
    assert float(np.abs(got - want).max()) <= 1e-4
    meta = json.loads((tmp_path / "int8.json").read_text())
    assert meta["precision"] == "int8" and any(int8_model.name in note for note in meta["notes"])
    assert meta["session_config"] == {"session.x64quantprecision": "1"}  # what featkit's own sessions set
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
