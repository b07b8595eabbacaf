"""`featkit export model`: one ONNX file from photo pixels to a run's calibrated probabilities.

Each run kind is fitted on small REAL caches (Food-101 photos through the shared MobileNetV2 ONNX graph, see
cachefixtures.py); the exported file, run by onnxruntime alone on the same photos decoded as the caches were,
must reproduce the run's saved test predictions: top-1 agreement >= 99.5 % and mean |dp| <= 1e-3 (the caches
store float16 features, the export computes float32 ones: that rounding is the whole difference).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cachefixtures import CLASSES, SIZE, TEST_PER_CLASS, one_blas_thread
from conftest import REPO, read_food_photos

from featkit.core.errors import FeatkitError

SMALL = 64  # the second cache of the two-cache run: the same photos at 64 px


def _decode(blobs: list[bytes], size: int) -> np.ndarray:
    from featkit.data.images import decode_image

    return np.stack([decode_image(b, size) for b in blobs])


@pytest.fixture(scope="module")
def test_photos():
    names, blobs, _ = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
    return names, {SIZE: _decode(blobs, SIZE), SMALL: _decode(blobs, SMALL)}


@pytest.fixture(scope="module")
def small_cache(caches, tmp_path_factory):
    """The plain cache's photos at 64 px through the same MobileNetV2 graph: a second cache of the same photos."""
    import dataclasses

    from cachefixtures import TRAIN_PER_CLASS, _features

    from featkit.features.cache import read_cache, write_cache

    plain = read_cache(caches.plain)
    tr_names, tr_blobs, _ = read_food_photos(CLASSES, TRAIN_PER_CLASS, "train")
    te_names, te_blobs, _ = read_food_photos(CLASSES, TEST_PER_CLASS, "test")
    assert list(plain.image_ids) == tr_names + te_names
    feats = _features(_decode(tr_blobs + te_blobs, SMALL))
    meta = plain.meta.replace(size=SMALL, backbone=dataclasses.replace(plain.meta.backbone, size=SMALL))
    path = tmp_path_factory.mktemp("small") / "plain.h5"
    write_cache(path, feats, plain.labels, plain.split, list(plain.image_ids), meta)
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return tmp_path_factory.mktemp("export-reports")


def _fit(cache, head, reports, **kw):
    from featkit.heads.fit import fit_head

    with one_blas_thread():
        return fit_head(cache, head=head, reports=reports, quiet=True, **kw)


@pytest.fixture(scope="module")
def runs(caches, small_cache, reports):
    return {
        "logreg": _fit(caches.plain, "logreg", reports, params={"C": 0.01}),
        "knn": _fit(caches.plain, "knn", reports, params={"k": 40, "tau": 0.05, "smoothing": 2.0}),
        "lightgbm": _fit(caches.plain, "lightgbm", reports, params={"n_estimators": 40, "reduce": "pca", "pca": 16}),
        "two-cache": _fit([caches.plain, small_cache], "logreg", reports, params={"C": 0.01}),
        "mirrored": _fit(caches.plain, "logreg", reports, params={"C": 0.01}, tta="flip"),
    }


def _onnx_probs(path: Path, photos: dict[int, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    meta = json.loads(Path(path).with_suffix(".json").read_text())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([meta["output"]], {i["name"]: photos[i["size"]] for i in meta["inputs"]})[0]


def _check_reproduces(run, path: Path, test_photos) -> tuple[float, float]:
    names, photos = test_photos
    pred = run.load_predictions("test")
    order = {n: i for i, n in enumerate(names)}
    rows = [order[str(i)] for i in pred["image_ids"]]
    probs = _onnx_probs(path, {s: p[rows] for s, p in photos.items()})
    assert probs.shape == pred["probs"].shape and probs.dtype == np.float32
    agree = float((probs.argmax(1) == pred["probs"].argmax(1)).mean())
    dp = float(np.abs(probs - pred["probs"]).mean())
    assert agree >= 0.995, f"top-1 agreement {agree:.4f}"
    assert dp <= 1e-3, f"mean |dp| {dp:.2e}"
    return agree, dp


@pytest.mark.parametrize("kind", ["logreg", "knn", "lightgbm", "two-cache", "mirrored"])
def test_export_reproduces_the_runs_test_predictions(kind, runs, reports, test_photos, tmp_path):
    from featkit.apps.export_model import export_model

    out = tmp_path / "model.onnx"
    result = export_model(runs[kind].id, out, reports=reports, quiet=True)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["sha256"] == result.sha256 and meta["run"] == runs[kind].id
    assert [c["id"] for c in meta["classes"]] == [c["id"] for c in runs[kind].classes]
    assert meta["resize"] == "stretch" and meta["size"] == SIZE and meta["output"] == "probabilities"
    assert meta["test_metrics"]["top1"] == pytest.approx(runs[kind].metrics.top1)
    if kind == "two-cache":
        assert [i["size"] for i in meta["inputs"]] == [SIZE, SMALL]
    _check_reproduces(runs[kind], out, test_photos)


def test_export_of_an_ensemble_averages_its_members_then_its_temperature(runs, reports, test_photos, tmp_path):
    from featkit.apps.ensemble import ensemble_runs
    from featkit.apps.export_model import export_model

    ens = ensemble_runs([runs["knn"].id, runs["mirrored"].id, runs["two-cache"].id], reports=reports, quiet=True)
    assert ens.metrics.get("temperature") != 1.0  # the ensemble's own temperature is part of what is checked
    out = tmp_path / "ens.onnx"
    export_model(ens.id, out, reports=reports, quiet=True)
    _check_reproduces(ens, out, test_photos)
    import onnx

    convs = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    # MobileNetV2 (52 convolutions without its ImageNet logits) once per size, though three members use it at 96 px
    assert len(convs) == 52 * 2
