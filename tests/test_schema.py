"""The typed contract between stages: each dataclass round-trips, files of featkit 0.1 still load, and a file that
is damaged or from a newer featkit fails with one line that says how to rebuild it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from featkit.core.errors import FeatkitError
from featkit.core.schema import SCHEMA_VERSION, BackboneSpec, CacheMeta, RunConfig, RunMetrics, check_comparable
from featkit.features.cache import read_cache, read_meta
from featkit.runs.store import Run, list_runs, load_run

ONNX = BackboneSpec(
    kind="onnx",
    name="mobilenet-v2",
    size=128,
    weights={"path": "/m/mobilenet-v2.onnx", "sha256": "ab" * 32},
    preprocessing="in graph",
    feature_dim=1280,
    options={"onnx_output": "features"},
    versions={"onnxruntime": "1.20"},
    extra={"native_size": 224},
)
CLASSES = [{"index": 0, "id": "apple_pie", "name": "Apple pie"}, {"index": 1, "id": "ramen", "name": "Ramen"}]


@pytest.mark.parametrize(
    "obj",
    [
        ONNX,
        BackboneSpec(kind="keras", name="vgg16", size=64, weights="none"),
        CacheMeta(
            backbone=ONNX,
            size=128,
            view="sens-rot45-shift0.1",
            view_params={"rotation": 45},
            classes=CLASSES,
            dataset="food-0a1b-70-20-10-s0",
            fingerprint="0a1b",
            photos=10,
            seconds=1.5,
            identity={"rows": 10},
            extra={"added_by_a_later_stage": [1, 2]},
        ),
        RunConfig(
            kind="head",
            name="logreg",
            backbone=ONNX,
            size=128,
            params={"C": 0.05},
            n_classes=2,
            cache="/c/plain.h5",
            extra={"selection": "valid"},
        ),
        RunConfig(
            kind="cnn", name="benchmark-64", size=64, params={"blocks": 3, "filters": [16, 32, 64]}, data="x.zip"
        ),
        RunMetrics(
            top1=0.25,
            top5=0.5,
            n=8,
            topk={"1": 0.25, "5": 0.5},
            macro_f1=0.2,
            log_loss=1.9,
            fit_seconds=3.0,
            extra={"best_epoch": 4},
        ),
    ],
)
def test_round_trip_through_json(obj):
    d = json.loads(json.dumps(obj.to_dict()))
    again = type(obj).from_dict(d)
    assert again == obj
    if not isinstance(obj, BackboneSpec):
        assert d["schema"] == SCHEMA_VERSION


def test_comparable_key_ignores_where_the_weights_live_and_library_versions():
    moved = BackboneSpec.from_dict(
        {
            **ONNX.to_dict(),
            "weights": {"path": "/elsewhere/copy.onnx", "sha256": "ab" * 32},
            "name": "copy",
            "versions": {},
        }
    )
    assert moved.comparable_key() == ONNX.comparable_key()
    retrained = BackboneSpec.from_dict(
        {**ONNX.to_dict(), "weights": {"path": "/m/mobilenet-v2.onnx", "sha256": "cd" * 32}}
    )
    assert retrained.comparable_key() != ONNX.comparable_key()


def test_check_comparable_names_every_differing_field_with_both_values():
    a = CacheMeta(backbone=ONNX, size=128, classes=CLASSES, dataset="d1", fingerprint="f1")
    b = a.replace(size=224, classes=CLASSES[::-1], fingerprint="f2")
    with pytest.raises(FeatkitError) as e:
        check_comparable(a.comparable_key(), b.comparable_key(), "a.h5", "b.h5", "extract them alike")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("b.h5 does not match a.h5: ")
    assert "size: 128 vs 224" in msg and "fingerprint: 'f1' vs 'f2'" in msg
    assert "classes: 2 vs 2, first difference at index 0 ('apple_pie' vs 'ramen')" in msg
    assert "dataset" not in msg and msg.endswith("extract them alike.")


# ---- files written by featkit 0.1 (no "schema" key) --------------------------------------------------------

V1_HEAD_CONFIG = {
    "kind": "head",
    "name": "logreg",
    "head": "logreg",
    "params": {"C": 1.0, "max_iter": 1000},
    "backbone": ONNX.to_dict(),
    "size": 128,
    "view": "plain",
    "views": ["plain"],
    "augment": False,
    "augment_view_params": None,
    "cache": "/c/plain.h5",
    "augment_cache": None,
    "dataset": "food-0a1b-70-20-10-s0",
    "fingerprint": "0a1b",
    "resize": "stretch",
    "crop_box": False,
    "seed": 0,
    "n_classes": 2,
    "selection": "valid",
    "featkit_version": "0.1.0",
}
V1_CNN_CONFIG = {
    "dataset": "food-0a1b-70-20-10-s0",
    "fingerprint": "0a1b",
    "data": "food.zip",
    "resize": "stretch",
    "per_class": None,
    "manifest": "cache/datasets/food-0a1b/manifest.csv",
    "kind": "cnn",
    "name": "vgg16-transfer-128",
    "preset": "vgg16-transfer-128",
    "size": 128,
    "blocks": 0,
    "filters": [],
    "kernel": 2,
    "dropout": 0.0,
    "augment": False,
    "epochs": 5,
    "batch_size": 32,
    "optimizer": "rmsprop",
    "lr": 0.001,
    "model": "transfer",
    "backbone": "vgg16",
    "weights": "imagenet",
    "dense": 1024,
    "study_top1": 21.73,
    "study_top5": 49.0,
    "note": "",
    "seed": 0,
    "n_classes": 2,
    "n_train": 10,
    "keras": "3.6.0",
    "params": 14_977_346,
    "trainable_params": 262_658,
}
V1_METRICS = {
    "top1": 0.5,
    "top5": 1.0,
    "n": 2,
    "topk": {"1": 0.5, "5": 1.0},
    "macro_f1": 0.33,
    "log_loss": 0.7,
    "train_seconds": 12.5,
    "epochs_run": 5,
}


def test_v1_run_configs_convert():
    head = RunConfig.from_dict(V1_HEAD_CONFIG)
    assert (head.kind, head.name, head.backbone, head.n_classes, head.cache) == (
        "head",
        "logreg",
        ONNX,
        2,
        "/c/plain.h5",
    )
    assert head.extra["selection"] == "valid" and "head" not in head.extra
    cnn = RunConfig.from_dict(V1_CNN_CONFIG)
    assert (cnn.name, cnn.size, cnn.backbone_name, cnn.data) == ("vgg16-transfer-128", 128, "vgg16", "food.zip")
    assert cnn.params["epochs"] == 5 and cnn.params["study_top1"] == 21.73 and cnn.extra["n_params"] == 14_977_346
    assert "epochs" not in cnn.extra and "preset" not in cnn.extra
    m = RunMetrics.from_dict(V1_METRICS)
    assert (m.fit_seconds, m.get("epochs_run"), m.get("seconds_per_epoch")) == (12.5, 5, None)


def test_a_v1_run_folder_and_cache_still_load(tmp_path):
    run_dir = tmp_path / "reports" / "runs" / "20260101-000000-vgg16-transfer"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(V1_CNN_CONFIG))
    (run_dir / "classes.json").write_text(json.dumps(CLASSES))
    (run_dir / "metrics.json").write_text(json.dumps(V1_METRICS))
    run = load_run("latest", tmp_path / "reports")
    assert (
        run.config.name == "vgg16-transfer-128" and run.metrics.top1 == 0.5 and list_runs(tmp_path / "reports") == [run]
    )

    # an HDF5 cache exactly as featkit 0.1 wrote it: meta without "schema"
    v1_meta = {
        "backbone": ONNX.to_dict(),
        "size": 128,
        "view": "plain",
        "view_params": None,
        "classes": CLASSES,
        "dataset": "food-0a1b-70-20-10-s0",
        "fingerprint": "0a1b",
        "manifest": "m.csv",
        "featkit_version": "0.1.0",
        "photos": 3,
        "seconds": 0.5,
        "photos_per_second": 6.0,
        "created": "2026-01-01T00:00:00",
        "failures": [],
        "dtype": "float16",
        "resize": "stretch",
        "crop_box": False,
        "rows_total": 3,
        "shard": None,
        "final_name": "plain.h5",
        "identity": {"rows": 3},
    }
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.arange(6, dtype=np.float16).reshape(3, 2))
        f.create_dataset("labels", data=np.array([0, 1, 1], np.int32))
        f.create_dataset("split", data=np.array(["train", "valid", "test"], dtype="S5"))
        f.create_dataset("image_ids", data=np.array(["a", "b", "c"], dtype=object), dtype=h5py.string_dtype())
        f.attrs["meta"] = json.dumps(v1_meta)
        f.attrs["complete"] = True
    fs = read_cache(path)
    assert fs.meta.backbone == ONNX and fs.meta.classes == CLASSES and fs.subset("test").image_ids.tolist() == ["c"]
    assert read_meta(path).to_dict()["schema"] == SCHEMA_VERSION


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"schema": 99, "kind": "head", "name": "logreg"}', "written by a newer featkit \\(schema 99"),
        ('["not", "a", "config"]', "does not hold a JSON object"),
        ('{"kind": "svm", "name": "x"}', "kind 'svm'"),
        ('{"kind": "head", "name": "logreg", "size": 128, "backbone": {"oops": 1}}', "not a featkit run config"),
    ],
)
def test_a_bad_config_fails_with_one_line_naming_the_file(tmp_path, text, match):
    run = Run(tmp_path / "run")
    run.path.mkdir()
    (run.path / "config.json").write_text(text)
    with pytest.raises(FeatkitError, match=match) as e:
        _ = run.config
    assert str(run.path / "config.json") in str(e.value) and "\n" not in str(e.value)
    assert "re-run the command that made the run" in str(e.value) or "upgrade featkit" in str(e.value)


def test_metrics_without_scores_are_refused():
    with pytest.raises(FeatkitError, match="no top1/top5 scores: re-score the run with `featkit evaluate RUN`"):
        RunMetrics.from_dict({"fit_seconds": 3.0}, where="m.json")
