"""Probability scores and temperature scaling: arrays in, arrays out (no runs, heads or files).

    T = fit_temperature(valid_probs, valid_labels)       # on held-out predictions
    test_probs = apply_temperature(raw_test_probs, T)
    summary(test_probs, test_labels)                     # {"log_loss", "brier", "ece"}

Temperature scaling divides the log-probabilities by T and renormalises: T > 1 softens an over-confident model,
T < 1 sharpens an under-confident one; the ranking of classes (top-k accuracy) never changes.
"""

from __future__ import annotations

import numpy as np

from featkit.runs.metrics import log_loss

PROB_FLOOR = 1e-30  # log of an exact 0 (a class absent from training) stays finite under a temperature
ECE_BINS = 15
RELIABILITY_COLUMNS = ("bin_lower", "bin_upper", "confidence", "accuracy", "count")
T_RANGE = (0.05, 20.0)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of sum_k (p_k - [k == label])^2; 0 is perfect, 2 the worst."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)
    sq = (p**2).sum(axis=1) - 2 * p[np.arange(len(labels)), labels] + 1.0
    return float(sq.mean())


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Top-1 confidence in `bins` equal-width bins (lower, upper]: columns bin_lower, bin_upper, confidence
    (mean top-1 probability), accuracy (share of rows whose top-1 is right), count. Empty bins: NaN, count 0."""
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    right = (p.argmax(axis=1) == labels) if len(p) else np.zeros(0, bool)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lower, upper]; 0 goes to bin 0
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=bins) / count
        accuracy = np.bincount(which, weights=right.astype(np.float64), minlength=bins) / count
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": confidence,
        "accuracy": accuracy,
        "count": count,
    }


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over confidence bins of (rows in bin / rows) * |accuracy - confidence|."""
    t = reliability_table(probs, labels, bins)
    n = t["count"].sum()
    if n == 0:
        return float("nan")
    used = t["count"] > 0
    return float((t["count"][used] / n * np.abs(t["accuracy"][used] - t["confidence"][used])).sum())


def summary(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """{"log_loss", "brier", "ece"} of one set of predictions."""
    return {"log_loss": log_loss(probs, labels), "brier": brier(probs, labels), "ece": ece(probs, labels)}


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T), row by row, as float32; T = 1 returns the probabilities unchanged."""
    probs = np.asarray(probs)
    if float(temperature) == 1.0:
        return probs.astype(np.float32, copy=False)
    out = _softmax(_log(probs) / float(temperature))
    return out.astype(np.float32)


def fit_temperature(probs: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = T_RANGE) -> float:
    """The T in `bounds` that minimises the log loss of apply_temperature(probs, T) on these (held-out) rows.

    The loss is convex in 1/T, so a bounded scalar search on log T finds the minimum; no rows: T = 1."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    z = _log(probs)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s -= s.max(axis=1, keepdims=True)
        return float((np.log(np.exp(s).sum(axis=1)) - s[rows, labels]).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded", options={"xatol": 1e-4})
    return round(float(np.exp(res.x)), 4)


def calibration_report(
    raw_probs: np.ndarray, probs: np.ndarray, labels: np.ndarray, temperature: float, directory=None, title: str = ""
) -> dict:
    """metrics.json's "calibration" entry {"temperature", "before": summary(raw), "after": summary(calibrated)};
    with `directory`, also writes reliability.csv and reliability.png (calibrated probabilities) there."""
    if directory is not None:
        from pathlib import Path

        from featkit.core.plots import plot_reliability

        table = reliability_table(probs, labels)
        write_reliability_csv(table, Path(directory) / "reliability.csv")
        plot_reliability(table, Path(directory) / "reliability.png", title=f"{title}  T = {temperature:.3g}".strip())
    return {"temperature": float(temperature), "before": summary(raw_probs, labels), "after": summary(probs, labels)}


def write_reliability_csv(table: dict[str, np.ndarray], path) -> None:
    """Columns bin_lower, bin_upper, confidence, accuracy, count; empty bins leave confidence / accuracy blank."""
    from featkit.core.fileio import write_text

    def cell(v: float) -> str:
        return f"{v:.6f}" if np.isfinite(v) else ""

    lines = [",".join(RELIABILITY_COLUMNS)]
    for lower, upper, conf, acc, count in zip(*(table[c] for c in RELIABILITY_COLUMNS), strict=True):
        lines.append(f"{cell(lower)},{cell(upper)},{cell(conf)},{cell(acc)},{int(count)}")
    write_text(path, "\n".join(lines) + "\n")


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROB_FLOOR))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


__all__ = [
    "ECE_BINS",
    "RELIABILITY_COLUMNS",
    "brier",
    "ece",
    "summary",
    "reliability_table",
    "apply_temperature",
    "fit_temperature",
    "calibration_report",
    "write_reliability_csv",
]
