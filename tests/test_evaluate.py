"""Scoring maths on hand-computed cases, and scoring of a real fitted run."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from cachefixtures import CLASSES

from featkit.apps.evaluate import check_compatible, evaluate_run, sensitivity
from featkit.core.errors import FeatkitError
from featkit.features.cache import read_cache, read_meta, write_cache
from featkit.heads import load_run_head
from featkit.heads.fit import fit_head
from featkit.runs.metrics import (
    confusion_matrix,
    log_loss,
    most_confused_pairs,
    per_class_accuracy,
    score,
    topk_accuracy,
    topk_correct,
)

# ---- top-k --------------------------------------------------------------------------------------------


def test_topk_hand_computed():
    probs = np.array(
        [
            [0.1, 0.6, 0.3],  # true 1: rank 1
            [0.5, 0.2, 0.3],  # true 2: rank 2
            [0.5, 0.3, 0.2],  # true 2: rank 3
            [0.2, 0.7, 0.1],
        ]
    )  # true 0: rank 2
    labels = np.array([1, 2, 2, 0])
    assert topk_accuracy(probs, labels, (1, 2, 3)) == {1: 0.25, 2: 0.75, 3: 1.0}
    assert topk_correct(probs, labels, 2).tolist() == [True, True, False, True]


def test_topk_ties_are_pessimistic():
    uniform = np.full((6, 4), 0.25)
    labels = np.array([0, 1, 2, 3, 0, 1])
    assert topk_accuracy(uniform, labels, (1, 3)) == {1: 0.0, 3: 0.0}  # no lucky 1/C
    assert topk_accuracy(uniform, labels, (4,)) == {4: 1.0}
    tie = np.array([[0.4, 0.4, 0.2]])
    assert topk_accuracy(tie, [1], (1, 2)) == {1: 0.0, 2: 1.0}
    assert topk_accuracy(tie, [0], (1, 2)) == {1: 0.0, 2: 1.0}  # the lower index gets no advantage either


def test_k_larger_than_classes_is_clamped():
    probs = np.array([[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]])
    assert topk_accuracy(probs, [0, 0], (1, 5)) == {1: 0.5, 5: 1.0}


def test_per_class_and_score():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.1, 0.8, 0.1], [0.0, 0.5, 0.5]])
    labels = np.array([0, 0, 1, 2])
    n, acc = per_class_accuracy(probs, labels, 1)
    assert n.tolist() == [2, 1, 1] and acc.tolist() == [0.5, 1.0, 0.0]  # class 2 tied with class 1: a miss
    classes = [{"index": i, "id": c, "name": c} for i, c in enumerate("abc")]
    m = score(probs, labels, classes, ks=(1, 2))
    assert (m.n, m.top1, m.top(2), m.top5, m.topk) == (4, 0.5, 0.75, 1.0, {"1": 0.5, "2": 0.75, "5": 1.0})
    expected = -np.mean(np.log([0.7, 0.1, 0.8, 0.5]))
    assert m.log_loss == pytest.approx(expected)
    assert log_loss(np.array([[1.0, 0.0]]), [1]) == pytest.approx(-np.log(1e-7))  # clipped, not inf
    # F1 per class: a 2/3 (precision 1, recall 1/2), b 2/3 (precision 1/2, recall 1), c 0 (predicted as b)
    assert m.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_confusion_matrix_and_most_confused_pairs():
    labels = np.array([0, 0, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 2, 0, 0])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [2, 0, 1]]
    classes = [
        {"index": 0, "id": "apple_pie", "name": "Apple pie"},
        {"index": 1, "id": "baklava", "name": "Baklava"},
        {"index": 2, "id": "bibimbap", "name": "Bibimbap"},
    ]
    pairs = most_confused_pairs(cm, classes, top=5)
    assert pairs[["true_name", "predicted_name", "count"]].values.tolist() == [
        ["Bibimbap", "Apple pie", 2],
        ["Apple pie", "Baklava", 1],
    ]
    assert pairs["share_of_true"].tolist() == [pytest.approx(2 / 3, abs=1e-4), 0.5]


# ---- a real run ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(caches, tmp_path_factory):
    return fit_head(caches.plain, "logreg", {"max_iter": 500}, reports=tmp_path_factory.mktemp("reports"), quiet=True)


def test_fit_head_writes_a_complete_run(run, caches):
    names = {p.name for p in run.path.iterdir()}
    assert {
        "config.json",
        "classes.json",
        "model.joblib",
        "head.json",
        "test_predictions.npz",
        "metrics.json",
        "per_class.csv",
        "confusion.csv",
        "confusion.png",
        "confused_pairs.csv",
        "reliability.csv",
        "reliability.png",
    } <= names
    cfg, meta = run.config, read_meta(caches.plain)
    assert (cfg.kind, cfg.name, cfg.backbone, cfg.size, cfg.dataset, cfg.augment) == (
        "head",
        "logreg",
        meta.backbone,
        meta.size,
        meta.dataset,
        False,
    )
    assert cfg.params["max_iter"] == 500 and cfg.seed == 0 and cfg.featkit_version
    assert cfg.fingerprint == meta.fingerprint and cfg.cache == str(caches.plain.resolve())
    assert run.classes == meta.classes
    m = run.metrics
    # the chosen C is refitted on train + valid: 192 + 48 rows
    assert (m.extra["n_train"], m.extra["n_train_photos"], m.extra["n_valid"], m.extra["n_test"], m.n) == (
        240,
        192,
        48,
        80,
        80,
    )
    assert m.extract_seconds == meta.seconds and m.fit_seconds > 0
    assert m.top1 > 2.0 / CLASSES and m.top5 >= m.top1
    pred = run.load_predictions()
    test = read_cache(caches.plain).subset("test")
    assert pred["probs"].shape == (80, CLASSES) and np.array_equal(pred["image_ids"], test.image_ids)
    assert np.array_equal(load_run_head(run).predict_proba(test.features), pred["probs"])


def test_evaluate_run_files(run):
    before = run.metrics
    m = evaluate_run(run, ks=(1, 3, 5))
    assert m["fit_seconds"] == before.fit_seconds and m["top1"] == before.top1 and "top3" in m
    assert json.loads((run.path / "metrics.json").read_text()) == m
    per_class = pd.read_csv(run.path / "per_class.csv")
    assert list(per_class.columns) == ["index", "id", "name", "n", "top1", "top3", "top5"]
    assert per_class["n"].tolist() == [10] * CLASSES
    assert np.average(per_class["top1"], weights=per_class["n"]) == pytest.approx(m["top1"])
    cm = pd.read_csv(run.path / "confusion.csv", index_col=0)
    assert list(cm.columns) == [c.name for c in run.classes] and int(cm.values.sum()) == 80
    assert int(np.trace(cm.values)) == round(m["top1"] * 80)  # no ties in real probabilities
    pairs = pd.read_csv(run.path / "confused_pairs.csv")
    assert set(pairs["true_name"]) <= {c.name for c in run.classes} and (pairs["count"] > 0).all()
    assert (run.path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _variant(caches, tmp_path, name, **meta_changes):
    fs = read_cache(caches.plain)
    path = tmp_path / f"{name}.h5"
    write_cache(path, fs.features, fs.labels, fs.split, fs.image_ids, fs.meta.replace(**meta_changes))
    return path


def test_check_compatible_refuses_other_backbone_size_or_classes(run, caches, tmp_path):
    meta = read_meta(caches.plain)
    bb = meta.backbone
    check_compatible(run, caches.plain)  # its own cache
    moved = replace(bb, weights={**bb.weights, "path": "/elsewhere/mobilenet-v2.onnx"})
    check_compatible(run, meta.replace(backbone=moved))  # same weights (sha256), another folder: fine
    check_compatible(run, meta.replace(backbone=replace(bb, versions={"onnxruntime": "9.9"})))
    other = _variant(
        caches,
        tmp_path,
        "effnet",
        backbone=replace(bb, name="efficientnet-lite0", weights={"path": "x", "sha256": "c515eb"}),
    )
    with pytest.raises(FeatkitError) as e:
        check_compatible(run, other)
    msg = str(e.value)
    assert "\n" not in msg and str(other) in msg and run.id in msg and "c515eb" in msg and "backbone" in msg
    renamed = [c.to_dict() for c in meta.classes][::-1]
    with pytest.raises(FeatkitError, match="classes: 8 vs 8, first difference at index 0"):
        check_compatible(run, meta.replace(classes=renamed))
    with pytest.raises(FeatkitError, match="size: 96 vs 224"):
        check_compatible(run, meta.replace(size=224))
    with pytest.raises(FeatkitError, match="backbone: "):
        sensitivity(run, {"effnet": other})
    assert not (run.path / "sensitivity.csv").exists()


def test_sensitivity_scores_each_view(run, caches):
    df = sensitivity(run, {"flip": caches.flip, "rot90": caches.rot})
    assert df["view"].tolist() == ["plain", "flip", "rot90"]
    assert list(df.columns[:8]) == ["view", "rotation", "width_shift", "height_shift", "flips", "n", "top1", "top5"]
    assert df["n"].tolist() == [80, 80, 80] and df.loc[2, "rotation"] == 90 and df.loc[1, "flips"] == "horizontal"
    assert df.loc[0, "top1"] == round(run.metrics.top1, 4)
    assert pd.read_csv(run.path / "sensitivity.csv")["view"].tolist() == ["plain", "flip", "rot90"]
    assert "| rot90 | 90 |" in (run.path / "sensitivity.md").read_text()


def test_fit_head_needs_train_and_test_rows(caches, tmp_path):
    fs = read_cache(caches.plain)
    m = fs.split != "test"
    path = tmp_path / "no-test.h5"
    write_cache(path, fs.features[m], fs.labels[m], fs.split[m], fs.image_ids[m], fs.meta)
    with pytest.raises(FeatkitError, match="0 test rows"):
        fit_head(path, "logreg", reports=tmp_path / "reports", quiet=True)
    assert not (tmp_path / "reports" / "runs").exists() or not list((tmp_path / "reports" / "runs").iterdir())


def test_augment_cache_must_come_from_the_same_photos(caches, tmp_path):
    fs = read_cache(caches.augment)
    other = tmp_path / "augment-other.h5"
    write_cache(
        other, fs.features, fs.labels, fs.split, fs.image_ids, fs.meta.replace(fingerprint="0123"), copy=fs.copy
    )
    with pytest.raises(FeatkitError, match="fingerprint: '[0-9a-f]+' vs '0123'"):
        fit_head(caches.plain, "logreg", augment_cache=other, reports=tmp_path / "reports", quiet=True)
    test_ids = read_cache(caches.plain).subset("test").image_ids[:3]
    leaky = tmp_path / "augment-leaky.h5"
    write_cache(leaky, fs.features[:3], fs.labels[:3], fs.split[:3], test_ids, fs.meta, copy=fs.copy[:3])
    with pytest.raises(FeatkitError, match="training rows of valid/test photos"):
        fit_head(caches.plain, "logreg", augment_cache=leaky, reports=tmp_path / "reports", quiet=True)


def test_evaluate_command_prints_scores_as_percentages(run):
    from typer.testing import CliRunner

    from featkit.cli import app

    args = ["evaluate", str(run.path), "--reports", str(run.path.parents[1])]
    quiet = CliRunner().invoke(app, [*args, "--quiet"], catch_exceptions=False)
    m = json.loads((run.path / "metrics.json").read_text())
    assert quiet.exit_code == 0 and quiet.stdout.splitlines() == [
        f"run {run.id} on 80 test photos",
        f"  top-1   {100 * m['top1']:.2f} %",
        f"  top-5   {100 * m['top5']:.2f} %",
        f"  macro F1 {100 * m['macro_f1']:.2f} %   log loss {m['log_loss']:.4f}",
    ]
    full = CliRunner().invoke(app, args, catch_exceptions=False)
    assert full.stdout.startswith(quiet.stdout) and "most confused pairs:" in full.stdout
