"""The typed contract between stages: each dataclass round-trips, files of featkit 0.1 still load, and a file that
is damaged or from a newer featkit fails with one line that says how to rebuild it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from featkit.core.errors import FeatkitError
from featkit.core.schema import (
    SCHEMA_VERSION,
    BackboneSpec,
    CacheMeta,
    ClassEntry,
    CnnState,
    HeadFile,
    OnnxContract,
    ReportRow,
    RunConfig,
    RunMetrics,
    StageSeconds,
    SweepRow,
    check_comparable,
)
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
            best_epoch=4,
            temperature=1.3,
            ece=0.05,
            valid_top1=0.3,
            extra={"n_iter": 40},
        ),
        CacheMeta(
            backbone=ONNX,
            size=128,
            data="food.zip",
            rebuild="featkit extract --data food.zip",
            stage_seconds=StageSeconds(decode=1.5, forward=3.25, write=0.125),
        ),
        HeadFile(
            head="logreg",
            params={"C": 0.1},
            model_file="model.joblib",
            n_classes=2,
            n_features=1280,
            classes=[0, 1],
            temperature=1.2,
            fitted={"n_iter_": 30},
        ),
        CnnState(epoch=3, best_val_loss=1.25, best_epoch=2, fingerprint={"seed": 0}),
    ],
)
def test_round_trip_through_json(obj):
    d = json.loads(json.dumps(obj.to_dict()))
    again = type(obj).from_dict(d)
    assert again == obj
    if not isinstance(obj, BackboneSpec):
        assert d["schema"] == SCHEMA_VERSION


@pytest.mark.parametrize(
    "obj",
    [
        ClassEntry(3, "ramen", "Ramen"),
        OnnxContract(
            name="m",
            input_name="images",
            input_layout="NHWC",
            input_size=[224, 224],
            feature_size=1280,
            extra={"license": "Apache-2.0"},
        ),
        SweepRow(candidate="logreg(C=1) on m-96", params={"C": 1}, run="r1", valid_top1=0.5, top1=0.4, selected=True),
        ReportRow(
            run_id="r1",
            kind="head",
            backbone="m",
            size=96,
            head="logreg",
            augment=False,
            views="plain",
            top1=0.5,
            top5=0.9,
            log_loss=1.2,
            ece=None,
            extract_seconds=2.0,
            fit_seconds=1.0,
            date="",
            folder="runs/r1",
        ),
    ],
)
def test_unversioned_records_round_trip(obj):
    d = json.loads(json.dumps(obj.to_dict()))
    assert type(obj).from_dict(d) == obj and "schema" not in d


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
    assert (m.fit_seconds, m.epochs_run, m.seconds_per_epoch) == (12.5, 5, None)


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
    assert (
        fs.meta.backbone == ONNX
        and [c.to_dict() for c in fs.meta.classes] == CLASSES
        and fs.subset("test").image_ids.tolist() == ["c"]
    )
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


# ---- files written by featkit with schema 2 (calibration, validation and epoch facts untyped) -------------------

V2_HEAD_METRICS = {  # fit-head logreg with an augmented cache, as schema 2 wrote it
    "brier": 0.6741605820094292,
    "calibration": {
        "after": {"brier": 0.6741605820094292, "ece": 0.13898351769894363, "log_loss": 1.4196285261750916},
        "before": {"brier": 0.676836487288881, "ece": 0.12264908198267223, "log_loss": 1.4375779626622243},
        "temperature": 0.8208,
    },
    "ece": 0.13898351769894363,
    "extract_seconds": 2.2,
    "fit_seconds": 1.273,
    "log_loss": 1.4196285261750916,
    "macro_f1": 0.45993534973798134,
    "n": 80,
    "n_augmented": 192,
    "n_candidates": 3,
    "n_iter": 23,
    "n_test": 80,
    "n_train": 432,
    "refit_seconds": 0.473,
    "schema": 2,
    "search_seconds": 0.8,
    "temperature": 0.8208,
    "top1": 0.4625,
    "top5": 0.95,
    "topk": {"1": 0.4625, "5": 0.95},
    "valid_top1": 0.4166666666666667,
    "valid_top5": 0.9583333333333334,
}
V2_CNN_METRICS = {  # train-cnn, as schema 2 wrote it (best_epoch from a Keras callback could be a float)
    "schema": 2,
    "top1": 0.375,
    "top5": 0.85,
    "n": 40,
    "topk": {"1": 0.375, "5": 0.85},
    "macro_f1": 0.31,
    "log_loss": 1.7,
    "fit_seconds": 62.4,
    "epochs_run": 4,
    "seconds_per_epoch": 15.6,
    "best_epoch": 3.0,
    "best_val_loss": 1.61,
    "stopped_early": True,
    "predict_seconds": 0.9,
    "n_test": 40,
    "study_top1": None,
    "study_top5": None,
    "temperature": 1.12,
    "ece": 0.04,
    "brier": 0.7,
    "calibration": {"temperature": 1.12, "before": {"ece": 0.09}, "after": {"ece": 0.04}},
}


def test_v2_metrics_convert_to_typed_fields():
    head = RunMetrics.from_dict(V2_HEAD_METRICS, where="m.json")
    assert (head.ece, head.brier, head.temperature) == (0.13898351769894363, 0.6741605820094292, 0.8208)
    assert (head.valid_top1, head.valid_top5) == (0.4166666666666667, 0.9583333333333334)
    assert head.calibration["before"]["ece"] == 0.12264908198267223
    assert (head.best_epoch, head.epochs_run, head.stopped_early) == (None, None, None)
    # what no RunMetrics field names stays an extra fact, and the file keeps every key when written back
    assert head.extra == {
        k: V2_HEAD_METRICS[k]
        for k in ("n_augmented", "n_candidates", "n_iter", "n_test", "n_train", "refit_seconds", "search_seconds")
    }
    again = head.to_dict()
    assert again["schema"] == SCHEMA_VERSION == 3
    assert {k: again[k] for k in V2_HEAD_METRICS if k != "schema"} == {
        k: v for k, v in V2_HEAD_METRICS.items() if k != "schema"
    }
    assert {k for k in again if k not in V2_HEAD_METRICS} == {
        "best_epoch",
        "epochs_run",
        "seconds_per_epoch",
        "stopped_early",
    }  # the typed fields it had not
    assert RunMetrics.from_dict(json.loads(json.dumps(again))) == head

    cnn = RunMetrics.from_dict(V2_CNN_METRICS, where="m.json")
    assert (cnn.best_epoch, cnn.epochs_run, cnn.seconds_per_epoch, cnn.stopped_early) == (3, 4, 15.6, True)
    assert type(cnn.best_epoch) is int and cnn.temperature == 1.12 and cnn.valid_top1 is None
    assert cnn.extra == {
        "best_val_loss": 1.61,
        "predict_seconds": 0.9,
        "n_test": 40,
        "study_top1": None,
        "study_top5": None,
    }
    assert cnn.scores.topk == {"1": 0.375, "5": 0.85} and cnn.scores.n == 40


def test_v2_config_cache_and_files_of_other_records_convert(tmp_path):
    cfg = RunConfig.from_dict({**V1_CNN_CONFIG, "per_class": 4, "schema": 2, "params": {"epochs": 5}})
    assert cfg.per_class == 4 and "per_class" not in cfg.extra and cfg.to_dict()["per_class"] == 4

    v2_meta = {
        "backbone": ONNX.to_dict(),
        "size": 128,
        "classes": CLASSES,
        "schema": 2,
        "photos": 3,
        "data": "/data/food.zip",
        "rebuild": "featkit extract --data /data/food.zip --size 128",
        "onnxruntime_session": {"intra_op_num_threads": 2},
    }
    meta = CacheMeta.from_dict(v2_meta)
    assert (meta.data, meta.rebuild, meta.stage_seconds) == (
        "/data/food.zip",
        "featkit extract --data /data/food.zip --size 128",
        None,
    )
    assert meta.classes == [ClassEntry(0, "apple_pie", "Apple pie"), ClassEntry(1, "ramen", "Ramen")]
    assert meta.extra == {"onnxruntime_session": {"intra_op_num_threads": 2}}

    # head.json as featkit 0.1 wrote it: no schema, no temperature, no label classes
    head = HeadFile.from_dict(
        {
            "head": "knn",
            "params": {"k": 5},
            "model_file": "model.joblib",
            "n_classes": 3,
            "n_features": 16,
            "history": [],
            "fitted": {},
            "featkit_version": "0.1.0",
        }
    )
    assert (head.temperature, head.classes, head.n_classes, head.to_dict()["schema"]) == (1.0, None, 3, 3)

    # checkpoints/state.json of schema 2: no schema key
    state = CnnState.from_dict(
        {
            "epoch": 2,
            "best_val_loss": 1.5,
            "best_epoch": 1,
            "stopped_early": False,
            "fingerprint": {"preset": {"lr": 0.001}, "n_classes": 5, "seed": 0},
        }
    )
    assert (state.epoch, state.best_epoch, state.best_val_loss, state.fingerprint["n_classes"]) == (2, 1, 1.5, 5)


def test_v2_sweep_json_still_lists(tmp_path):
    from featkit.apps.sweep import list_sweeps

    folder = tmp_path / "sweeps" / "20260101-000000-sweep"
    folder.mkdir(parents=True)
    rows = [
        {
            "candidate": "logreg(C=1) on m-96",
            "kind": "head",
            "head": "logreg",
            "params": {"C": 1},
            "caches": "m-96",
            "tta": "",
            "error": "",
            "run": "r1",
            "valid_top1": 0.5,
            "valid_top5": 0.9,
            "top1": 0.45,
            "top5": 0.88,
            "log_loss": 1.2,
            "ece": 0.03,
            "fit_seconds": 1.5,
            "seconds": 2.0,
            "selected": "yes",
        },
        {
            "candidate": "knn(k=5) on m-96",
            "kind": "head",
            "head": "knn",
            "params": {"k": 5},
            "caches": "m-96",
            "tta": "",
            "error": "m-96.h5 is damaged",
            "seconds": 0.1,
            "selected": "",
        },
    ]
    (folder / "sweep.json").write_text(
        json.dumps(
            {
                "id": folder.name,
                "selected": rows[0],
                "rows": rows,
                "selection": "validation top-1, then validation top-5",
            }
        )
    )
    (done,), other = list_sweeps(tmp_path)
    assert other == [] and [r.selected for r in done.rows] == [True, False]
    assert done.selected == done.rows[0] and done.selected.valid_top1 == 0.5 and done.selected.params == {"C": 1}
    assert (done.rows[1].top1, done.rows[1].run, done.rows[1].error) == (None, None, "m-96.h5 is damaged")


def test_onnx_contract_of_the_shared_model_reads_typed(mobilenet_onnx):
    from featkit.backbones.onnx_model import read_contract

    c = read_contract(mobilenet_onnx)
    assert (c.name, c.input_name, c.output_name, c.input_layout, c.input_dtype) == (
        "mobilenet-v2",
        "images",
        "features",
        "NHWC",
        "uint8",
    )
    assert (c.size, c.input_size, c.dynamic_size, c.feature_size, c.precision) == (
        224,
        [224, 224],
        True,
        1280,
        "float32",
    )
    assert c.preprocessing_in_graph.startswith("x_float = (uint8 - 128) / 128")
    assert (
        c.extra["num_classes"] == 1000
        and c.sha256 == "12e9924b7caa3e076d400e96e801e08f8de46d819d31b084aa74ba82f629bd76"
    )


@pytest.mark.parametrize(
    "record, d, match",
    [
        (RunMetrics, {"top1": 0.5, "top5": 0.9, "ece": "low"}, "m.json: ece is 'low', expected a number or null"),
        (RunMetrics, {"top1": 0.5, "top5": 0.9, "best_epoch": 2.5}, "best_epoch is 2.5, expected a whole number"),
        (RunMetrics, {"top1": 0.5, "top5": 0.9, "stopped_early": "yes"}, "stopped_early is 'yes', expected true or"),
        (
            HeadFile,
            {"head": "knn", "params": {}, "model_file": "m", "n_classes": "3", "n_features": 4},
            "n_classes is '3', expected a whole number",
        ),
        (HeadFile, {"head": "knn", "params": {}, "model_file": "m"}, "is damaged \\(n_classes, n_features missing\\)"),
        (OnnxContract, {"input_layout": "HWC"}, "input_layout is 'HWC', expected NHWC or NCHW"),
        (OnnxContract, {"input_size": [224, 192]}, "a size N or \\[N, N\\]"),
        (CnnState, {"epoch": "2"}, "epoch is '2', expected a whole number"),
    ],
)
def test_a_field_of_the_wrong_type_fails_with_one_line_naming_it(record, d, match):
    with pytest.raises(FeatkitError, match=match) as e:
        record.from_dict(d, where="m.json")
    assert "\n" not in str(e.value) and "m.json" in str(e.value)


def test_numpy_numbers_from_a_producer_become_plain_json_values():
    m = RunMetrics.from_dict({"top1": np.float32(0.5), "top5": 1.0, "best_epoch": np.int64(7), "n": np.int32(4)})
    assert (type(m.top1), type(m.best_epoch), type(m.n)) == (float, int, int)
    assert json.loads(json.dumps(m.to_dict()))["best_epoch"] == 7
