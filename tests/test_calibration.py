"""Temperature scaling, Brier score, ECE and the reliability table, on hand-made and real predictions."""

from __future__ import annotations

import numpy as np
import pytest
from cachefixtures import CLASSES, one_blas_thread

from featkit.features.cache import read_cache
from featkit.heads import get_head
from featkit.runs.calibration import (
    apply_temperature,
    brier,
    calibration_report,
    ece,
    fit_temperature,
    log_loss,
    reliability_table,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_brier_and_ece_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.95, 0.05, 0.0], [0.05, 0.95, 0.0], [0.55, 0.45, 0.0], [0.45, 0.55, 0.0]])
    labels = np.array([0, 0, 0, 0, 1])
    # Brier: sum_k (p_k - onehot_k)^2 per row
    rows = [0.09 + 0.04 + 0.01, 0.0025 + 0.0025, 0.9025 + 0.9025, 0.2025 + 0.2025, 0.2025 + 0.2025]
    assert brier(probs, labels) == pytest.approx(np.mean(rows))
    # top-1 confidences 0.7 (right), 0.95 (right), 0.95 (wrong), 0.55 (right), 0.55 (right)
    # bins of width 1/15: 0.7 -> (0.667, 0.733]; 0.95 -> (0.933, 1]; 0.55 -> (0.533, 0.6]
    expected = (1 * abs(1 - 0.7) + 2 * abs(0.5 - 0.95) + 2 * abs(1 - 0.55)) / 5
    assert ece(probs, labels) == pytest.approx(expected)
    t = reliability_table(probs, labels)
    assert len(t["count"]) == 15 and t["count"].sum() == 5
    assert t["count"][14] == 2 and t["accuracy"][14] == 0.5 and t["confidence"][14] == pytest.approx(0.95)
    assert t["bin_lower"][8] == pytest.approx(8 / 15) and t["count"][8] == 2 and t["accuracy"][8] == 1.0
    assert np.isnan(t["accuracy"][0]) and t["count"][0] == 0


def test_temperature_recovers_a_known_over_confidence():
    # labels drawn from softmax(z); the model reports softmax(3 z): three times too sharp, so T should be ~3
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(6000, 10))
    labels = np.array([rng.choice(10, p=p) for p in _softmax(z)])
    sharp = _softmax(3 * z)
    t = fit_temperature(sharp, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(apply_temperature(sharp, t), _softmax(3 * z / t), rtol=1e-4, atol=1e-7)
    grid = np.linspace(0.5, 6, 551)
    by_grid = grid[np.argmin([log_loss(apply_temperature(sharp, g), labels) for g in grid])]
    assert t == pytest.approx(by_grid, abs=0.011)  # the bounded search finds the grid's minimum
    assert log_loss(apply_temperature(sharp, t), labels) < log_loss(sharp, labels) - 0.3
    # ranking never changes, T = 1 changes nothing, and no rows means no evidence: T = 1
    assert np.array_equal(apply_temperature(sharp, t).argmax(axis=1), sharp.argmax(axis=1))
    assert np.array_equal(apply_temperature(sharp, 1.0), sharp.astype(np.float32))
    assert fit_temperature(sharp[:0], labels[:0]) == 1.0


def test_temperature_lowers_log_loss_of_an_over_confident_head(caches):
    fs = read_cache(caches.plain)
    train, valid, test = fs.subset("train"), fs.subset("valid"), fs.subset("test")
    with one_blas_thread():  # nearly no regularisation on 192 photos: a deliberately over-confident head
        head = get_head("logreg", C=1000.0).fit(train.features, train.labels, n_classes=CLASSES)
    t = fit_temperature(head.predict_proba(valid.features), valid.labels)
    assert t > 1.5
    raw = head.predict_proba(test.features)
    head.temperature_ = t
    calibrated = head.predict_proba(test.features)
    report = calibration_report(raw, calibrated, test.labels, t)
    assert report["temperature"] == t
    assert report["after"]["log_loss"] < report["before"]["log_loss"] - 0.2
    assert report["after"]["log_loss"] == pytest.approx(log_loss(calibrated, test.labels))
    assert report["after"]["ece"] < report["before"]["ece"]


def test_exact_zeros_stay_zero_under_a_temperature():
    probs = np.array([[0.6, 0.4, 0.0]])
    out = apply_temperature(probs, 2.0)
    assert out[0, 2] < 1e-14 and out[0, :2] == pytest.approx(
        [np.sqrt(0.6), np.sqrt(0.4)] / (np.sqrt(0.6) + np.sqrt(0.4))
    )
