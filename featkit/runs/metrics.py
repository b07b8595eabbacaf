"""Pure metrics of predictions (no files, no TensorFlow): one top-k rule used everywhere, confusion, F1, log loss.

Top-k rule (pessimistic and deterministic on ties): a row counts as correct at k only if FEWER than k OTHER
classes have a score >= the true class's score. So a tie never helps: a constant / uniform prediction scores
0 top-1 (not a lucky 1/C), and a tie between the true class and one other class is a miss at k=1 and a hit at
k=2. The argmax used for the confusion matrix and F1 breaks ties towards the lowest class index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import ClassEntry, Scores, read_classes

LOG_LOSS_EPS = 1e-7  # float32 probabilities: clip the true class's probability to [eps, 1]


# ---- finite probabilities --------------------------------------------------------------------------------


class NonFiniteError(FeatkitError, ValueError):
    """Probabilities holding NaN or infinity: never scored (a NaN row would count as a hit under `>=`)."""


def non_finite_rows(probs: np.ndarray) -> int:
    """How many rows of `probs` hold a NaN or an infinity."""
    probs = np.atleast_1d(np.asarray(probs, dtype=np.float64))
    if probs.size == 0:
        return 0
    return int((~np.isfinite(probs)).reshape(len(probs), -1).any(axis=1).sum())


def check_finite(probs: np.ndarray, what: str, todo: str) -> None:
    """Raise NonFiniteError "<what> holds NaN or infinite probabilities in N of M rows: <todo>." unless every
    value of `probs` is finite."""
    n = non_finite_rows(probs)
    if n:
        raise NonFiniteError(f"{what} holds NaN or infinite probabilities in {n} of {len(probs)} rows: {todo}.")


# ---- the one top-k rule ------------------------------------------------------------------------------


def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool (N,): True where fewer than k other classes score >= the true class (ties count against).

    k larger than the number of classes is clamped to it (every row is then correct). Probabilities holding NaN
    or infinity are refused (NonFiniteError): they are never scored.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs should be (N, C) with one row per label: probs {probs.shape}, labels {labels.shape}")
    if int(k) < 1:
        raise ValueError(f"k should be >= 1. Received k={k}")
    if len(labels) == 0:
        return np.zeros(0, bool)
    n_classes = probs.shape[1]
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels should be class indices in [0, {n_classes}). Received {labels.min()}..{labels.max()}")
    check_finite(probs, "the predictions", "they cannot be scored; fix what produced them")
    k = min(int(k), n_classes)
    true_score = probs[np.arange(len(labels)), labels][:, None]
    others_at_least = (probs >= true_score).sum(axis=1) - 1  # the true class always ties with itself
    return others_at_least < k


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """{k: fraction of rows correct at k} under the pessimistic tie rule of `topk_correct`.

    Keys are the ks asked for; a k above the number of classes is clamped to it (accuracy 1.0).
    No rows -> NaN.
    """
    out = {}
    for k in ks:
        c = topk_correct(probs, labels, k)
        out[int(k)] = float(c.mean()) if len(c) else float("nan")
    return out


# ---- other metrics -----------------------------------------------------------------------------------


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (n_classes, n_classes) int64: rows are the true class, columns the predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} should have the same shape")
    return np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(n per class, top-k accuracy per class (NaN for a class with no rows)), indexed by class."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = np.asarray(probs).shape[1]
    n = np.bincount(labels, minlength=n_classes)
    hits = np.bincount(labels, weights=topk_correct(probs, labels, k), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, hits / np.maximum(n, 1), np.nan)
    return n, acc


def macro_f1(labels: np.ndarray, preds: np.ndarray) -> float:
    """Unweighted mean F1 over the classes that occur in labels or preds (scikit-learn's default set)."""
    from sklearn.metrics import f1_score

    if len(labels) == 0:
        return float("nan")
    return float(f1_score(labels, preds, average="macro", zero_division=0))


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p(true class), with p clipped to [1e-7, 1] (a class absent from training has p = 0)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(p, LOG_LOSS_EPS, 1.0)).mean())


def most_confused_pairs(cm: np.ndarray, classes: Sequence[ClassEntry | Mapping[str, Any]] | int, top: int = 20):
    """The `top` largest off-diagonal cells as a DataFrame: true / predicted index and name, count, and the
    share of the true class's rows that went to that prediction. Ties: lower true index, then predicted index."""
    import pandas as pd

    cm = np.asarray(cm)
    names = class_names(classes, len(cm))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[:top]
    rows = cm.sum(axis=1)
    return pd.DataFrame(
        {
            "true_index": t[order],
            "true_name": [names[i] for i in t[order]],
            "predicted_index": p[order],
            "predicted_name": [names[i] for i in p[order]],
            "count": counts[order],
            "share_of_true": np.round(counts[order] / np.maximum(rows[t[order]], 1), 4),
        }
    )


def score(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[ClassEntry | Mapping[str, Any]] | int,
    ks: Iterable[int] = (1, 5),
) -> Scores:
    """Metrics of one set of predictions: n, top1, top5, topk {"k": acc} for each k, macro_f1, log_loss."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = classes if isinstance(classes, int) else len(classes)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise FeatkitError(
            f"predictions have {probs.shape[1] if probs.ndim == 2 else '?'} columns but there are "
            f"{n_classes} classes: the predictions and class list come from different runs."
        )
    ks = sorted(set(int(k) for k in ks) | {1, 5})
    acc = topk_accuracy(probs, labels, ks)
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    return Scores(
        n=int(len(labels)),
        top1=acc[1],
        top5=acc[5],
        topk={str(k): acc[k] for k in ks},
        macro_f1=macro_f1(labels, preds),
        log_loss=log_loss(probs, labels),
    )


def class_names(classes: Sequence[ClassEntry | Mapping[str, Any]] | int, n: int) -> list[str]:
    """Display names of the classes (a class list as records or as classes.json dicts), or "0".."n-1"."""
    if isinstance(classes, int):
        return [str(i) for i in range(n)]
    return [c.name for c in read_classes(classes)]
