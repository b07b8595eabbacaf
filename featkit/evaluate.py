"""Scoring: one top-k rule used everywhere, per-class tables, confusion matrix, sensitivity to perturbations.

Top-k rule (pessimistic and deterministic on ties): a row counts as correct at k only if FEWER than k OTHER
classes have a score >= the true class's score. So a tie never helps: a constant / uniform prediction scores
0 top-1 (not a lucky 1/C), and a tie between the true class and one other class is a miss at k=1 and a hit at
k=2. The argmax used for the confusion matrix and F1 breaks ties towards the lowest class index.

No TensorFlow here: scoring works on the saved test_predictions.npz of any run (head or CNN).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import FeatkitError
from .fileio import atomic_path, write_text
from .runs import DEFAULT_REPORTS, Run, load_run

LOG_LOSS_EPS = 1e-7  # float32 probabilities: clip the true class's probability to [eps, 1]


# ---- the one top-k rule ------------------------------------------------------------------------------

def topk_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Bool (N,): True where fewer than k other classes score >= the true class (ties count against).

    k larger than the number of classes is clamped to it (every row is then correct).
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


def most_confused_pairs(cm: np.ndarray, classes: Sequence[Mapping] | int, top: int = 20):
    """The `top` largest off-diagonal cells as a DataFrame: true / predicted index and name, count, and the
    share of the true class's rows that went to that prediction. Ties: lower true index, then predicted index."""
    import pandas as pd

    cm = np.asarray(cm)
    names = _class_names(classes, len(cm))
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[:top]
    rows = cm.sum(axis=1)
    return pd.DataFrame({
        "true_index": t[order], "true_name": [names[i] for i in t[order]],
        "predicted_index": p[order], "predicted_name": [names[i] for i in p[order]],
        "count": counts[order], "share_of_true": np.round(counts[order] / np.maximum(rows[t[order]], 1), 4),
    })


def score(probs: np.ndarray, labels: np.ndarray, classes: Sequence[Mapping] | int, ks: Iterable[int] = (1, 5)) -> dict[str, Any]:
    """Metrics of one set of predictions: n, top1, top5, top<k> for each k, topk {"k": acc}, macro_f1, log_loss."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = classes if isinstance(classes, int) else len(classes)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise FeatkitError(f"predictions have {probs.shape[1] if probs.ndim == 2 else '?'} columns but there are "
                           f"{n_classes} classes: the predictions and class list come from different runs.")
    ks = sorted(set(int(k) for k in ks) | {1, 5})
    acc = topk_accuracy(probs, labels, ks)
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    out: dict[str, Any] = {"n": int(len(labels))}
    out.update({f"top{k}": acc[k] for k in ks})
    out["topk"] = {str(k): acc[k] for k in ks}
    out["macro_f1"] = macro_f1(labels, preds)
    out["log_loss"] = log_loss(probs, labels)
    return out


def _class_names(classes: Sequence[Mapping] | int, n: int) -> list[str]:
    if isinstance(classes, int):
        return [str(i) for i in range(n)]
    return [str(c.get("name", c.get("id", i))) for i, c in enumerate(classes)]


def _as_run(run: Run | str | Path, reports: str | Path) -> Run:
    return run if isinstance(run, Run) else load_run(run, reports)


# ---- a run's scoring files ---------------------------------------------------------------------------

def evaluate_run(run: Run | str | Path, ks: Iterable[int] = (1, 5), reports: str | Path = DEFAULT_REPORTS,
                 extra: Mapping[str, Any] | None = None, plot: bool = True) -> dict[str, Any]:
    """Score a run's test_predictions.npz and write its scoring files; returns the metrics dict.

    Writes per_class.csv, confusion.csv, confused_pairs.csv, confusion.png (plot=True), then metrics.json last
    (merged into what is there, e.g. fit_seconds, plus `extra`), since metrics.json marks the run complete.
    """
    bad_k = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad_k:
        raise FeatkitError(f"--k {bad_k[0]} should be 1 or more (top-k accuracy counts the k best classes).")
    run = _as_run(run, reports)
    pred = run.load_predictions("test")
    classes = run.classes
    probs, labels = pred["probs"], pred["labels"].astype(np.int64)
    ks = sorted(set(int(k) for k in ks) | {1, 5})
    metrics = score(probs, labels, classes, ks)

    import pandas as pd

    n_classes = len(classes)
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    n, _ = per_class_accuracy(probs, labels, 1)
    table = pd.DataFrame({"index": [c.get("index", i) for i, c in enumerate(classes)],
                          "id": [c.get("id", "") for c in classes], "name": _class_names(classes, n_classes), "n": n})
    for k in ks:
        table[f"top{k}"] = np.round(per_class_accuracy(probs, labels, k)[1], 6)
    _write_csv(run.path / "per_class.csv", table)
    cm = confusion_matrix(labels, preds, n_classes)
    names = _class_names(classes, n_classes)
    _write_csv(run.path / "confusion.csv", pd.DataFrame(cm, index=pd.Index(names, name="true \\ predicted"), columns=names),
               index=True)
    _write_csv(run.path / "confused_pairs.csv", most_confused_pairs(cm, classes, top=20))
    if plot:
        plot_confusion(cm, names, run.path / "confusion.png", title=f"{run.id}: top-1 {metrics['top1']:.3f}")

    merged = {**run.metrics, **(extra or {}), **metrics}
    run.write_json("metrics.json", merged)
    return merged


def _write_csv(path: Path, df, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion heatmap; readable at 256 classes (no cell text above 30 classes, thinned
    small tick labels, big figure)."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    n = len(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = float(min(28.0, max(6.0, 3.0 + 0.1 * n)))
    fig = Figure(figsize=(side + 1.5, side), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    # square-root colour scale: the small off-diagonal shares stay visible next to the diagonal
    im = ax.imshow(norm, cmap="viridis", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.6, label="share of the true class's photos (sqrt scale)")
    step = max(1, math.ceil(n / 128))
    ticks = np.arange(0, n, step)
    font = float(min(8.0, max(3.0, 0.7 * side * 72.0 * step / max(n, 1))))
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=font)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title + ("" if step == 1 else f"  (every {step}th class labelled)"))
    if n <= 30:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="black" if norm[i, j] > 0.5 else "white")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


# ---- cache / run compatibility, sensitivity ----------------------------------------------------------

def _spec_key(spec: Any) -> Any:
    """A backbone spec without where its weights file happens to live (the sha256 stays) and without the library
    versions that extracted it: those do not make features incomparable."""
    if not isinstance(spec, dict):
        return spec
    spec = {k: v for k, v in spec.items() if k != "versions"}
    if isinstance(spec.get("weights"), dict):
        spec["weights"] = {k: v for k, v in spec["weights"].items() if k != "path"}
    return spec


def _class_key(classes: Sequence[Mapping]) -> list[tuple]:
    return [(c.get("index", i), c.get("id", c.get("name"))) for i, c in enumerate(classes)]


def _describe(spec: Any, size: Any, classes: Sequence) -> str:
    name = spec.get("name", "?") if isinstance(spec, dict) else spec
    return f"backbone {name} at {size} px, {len(classes)} classes"


def check_compatible(run: Run | str | Path, cache_meta: Mapping[str, Any] | str | Path, cache_name: str | None = None,
                     reports: str | Path = DEFAULT_REPORTS) -> None:
    """Refuse (FeatkitError, one line naming both) a cache whose backbone spec (weights compared by sha256, not
    path), image size or class list differs from the run's. `cache_meta` is a cache's meta dict or its path."""
    run = _as_run(run, reports)
    if isinstance(cache_meta, (str, Path)):
        from .cache import read_meta

        cache_name = cache_name or str(cache_meta)
        cache_meta = read_meta(cache_meta)
    cache_name = cache_name or "the cache"
    cfg, run_classes = run.config, run.classes
    diffs = []
    if _spec_key(cfg.get("backbone")) != _spec_key(cache_meta.get("backbone")):
        diffs.append("backbone")
    if cfg.get("size") != cache_meta.get("size"):
        diffs.append("size")
    if _class_key(run_classes) != _class_key(cache_meta.get("classes", [])):
        diffs.append("class list")
    if diffs:
        raise FeatkitError(
            f"{cache_name} ({_describe(cache_meta.get('backbone'), cache_meta.get('size'), cache_meta.get('classes', []))}) "
            f"does not match run {run.id} ({_describe(cfg.get('backbone'), cfg.get('size'), run_classes)}): "
            f"different {' and '.join(diffs)}; score it with a run fitted on a cache of the same backbone, size and classes.")


SENSITIVITY_COLUMNS = ("view", "rotation", "width_shift", "height_shift", "flips", "n", "top1", "top5")
_PARAM_ALIASES = {"rotation": ("rotation", "rotation_range", "degrees"),
                  "width_shift": ("width_shift", "width_shift_range"),
                  "height_shift": ("height_shift", "height_shift_range"),
                  "flips": ("flips", "flip")}


def sensitivity(run: Run | str | Path, view_caches: Mapping[str, str | Path], reports: str | Path = DEFAULT_REPORTS):
    """Score the run's fitted head on each cached sensitivity view of the test photos (and the plain test set,
    from the run's own test predictions). Returns a DataFrame with SENSITIVITY_COLUMNS (plus macro_f1) and writes
    sensitivity.csv and sensitivity.md into the run folder. Each cache must pass `check_compatible`."""
    import pandas as pd

    from .cache import read_cache
    from .fit import load_run_head

    run = _as_run(run, reports)
    classes = run.classes
    pred = run.load_predictions("test")
    rows = [_sens_row("plain", {}, score(pred["probs"], pred["labels"], classes))]
    caches = {}
    for view, path in view_caches.items():  # check every cache before the (slow) scoring
        check_compatible(run, path, cache_name=str(path))
        caches[view] = path
    head = load_run_head(run) if caches else None
    for view, path in caches.items():
        fs = read_cache(path)
        if (fs.split == "test").any():
            fs = fs.subset("test")
        m = score(head.predict_proba(fs.features), fs.labels, classes)
        rows.append(_sens_row(view or fs.meta.get("view", "?"), fs.meta.get("view_params") or {}, m))
    df = pd.DataFrame(rows, columns=[*SENSITIVITY_COLUMNS, "macro_f1"])
    _write_csv(run.path / "sensitivity.csv", df)
    write_text(run.path / "sensitivity.md", f"# Sensitivity of run {run.id}\n\n" + markdown_table(df) + "\n")
    return df


def _sens_row(view: str, params: Mapping[str, Any], m: Mapping[str, Any]) -> dict:
    row: dict[str, Any] = {"view": view}
    for col, aliases in _PARAM_ALIASES.items():
        row[col] = next((params[a] for a in aliases if a in params), 0 if view == "plain" and col != "flips" else None)
        if isinstance(row[col], (list, tuple, dict)):
            row[col] = str(row[col])
    if row["flips"] is None and ("horizontal_flip" in params or "vertical_flip" in params):
        both = [d for d in ("horizontal", "vertical") if params.get(f"{d}_flip")]
        row["flips"] = "+".join(both) or "none"
    if view == "plain" and row["flips"] is None:
        row["flips"] = "none"
    row.update(n=m["n"], top1=round(m["top1"], 4), top5=round(m["top5"], 4), macro_f1=round(m["macro_f1"], 4))
    return row


def markdown_table(df) -> str:
    """A GitHub-flavoured markdown table of a DataFrame (no extra dependency)."""
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in rec) + " |")
    return "\n".join(lines)
