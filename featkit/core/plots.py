"""Plots of a run's scores, drawn with matplotlib's object API (no pyplot state, safe in threads): the confusion
matrix, and the report's helpers and charts: figures, atomic saves, axes that never collapse around one point,
training curves and robustness.

Every plot function returns the path it wrote, or None when it had no data (a plot is then left out, never drawn
empty).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from featkit.core.fileio import atomic_path


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
    ax.set_xticks(ticks, [names[int(i)] for i in ticks], rotation=90, fontsize=font)
    ax.set_yticks(ticks, [names[int(i)] for i in ticks], fontsize=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title + ("" if step == 1 else f"  (every {step}th class labelled)"))
    if n <= 30:
        for i, j in zip(*np.nonzero(cm), strict=True):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="black" if norm[i, j] > 0.5 else "white",
            )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def new_figure(width: float, height: float, ncols: int = 1, dpi: int = 120):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def save_png(fig, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def keep_span(
    values: Iterable[float | None], min_span: float, floor: float | None = None, ceiling: float | None = None
) -> tuple[float, float]:
    """Axis limits covering `values` with at least `min_span` between them and a 5 % margin, clipped to
    [floor, ceiling]: one point (or one repeated value) sits in the middle of a sensible range instead of on an
    axis from 122 to 134."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        lo, hi = (floor if floor is not None else 0.0), (ceiling if ceiling is not None else 1.0)
        return lo, hi
    lo, hi = float(v.min()), float(v.max())
    margin = 0.05 * (hi - lo)
    lo, hi = lo - margin, hi + margin
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if floor is not None and lo < floor:
        lo, hi = floor, max(hi, floor + min_span)
    if ceiling is not None and hi > ceiling:
        lo, hi = min(lo, ceiling - min_span), ceiling
        if floor is not None:
            lo = max(lo, floor)
    return lo, hi


def percent_axis(ax, axis: str = "y") -> None:
    from matplotlib.ticker import PercentFormatter

    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=0))


def history_x(history) -> tuple[np.ndarray, str]:
    """(x values, axis label) of a history.csv: its epoch or boosting-round column, else the row number."""
    for col, label in (("epoch", "epoch"), ("iteration", "boosting round")):
        if col in history.columns:
            return history[col].to_numpy(float), label
    return np.arange(1, len(history) + 1, dtype=float), "epoch"


def plot_history(history, path: str | Path, title: str = "") -> Path | None:
    """Loss and accuracy per epoch / boosting round of one run (train solid, valid dashed), from history.csv's
    columns; None (nothing written) when the history has no row or no loss / accuracy column."""
    from matplotlib.ticker import MaxNLocator

    panels = [
        (key, label)
        for key, label in (("loss", "loss"), ("accuracy", "accuracy"))
        if key in history.columns or f"val_{key}" in history.columns
    ]
    if len(history) == 0 or not panels:
        return None
    x, xlabel = history_x(history)
    fig, axes = new_figure(4.2 * len(panels), 3.0, len(panels), dpi=100)
    marker = "o" if len(history) <= 30 else None
    for ax, (key, label) in zip(axes, panels, strict=True):
        ys = []
        for col, name, ls in ((key, "train", "-"), (f"val_{key}", "valid", "--")):
            if col in history.columns and history[col].notna().any():
                y = history[col].to_numpy(float)
                ax.plot(x, y, ls=ls, marker=marker, ms=3, label=name)
                ys.extend(y.tolist())
        ax.set_xlim(*keep_span(x, 2.0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "accuracy":
            ax.set_ylim(*keep_span(ys, 0.1, floor=0.0, ceiling=1.02))
            percent_axis(ax)
        else:
            ax.set_ylim(*keep_span(ys, 0.1, floor=0.0))
        ax.set(xlabel=xlabel, ylabel=label, title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


def plot_sensitivity(table, path: str | Path) -> Path | None:
    """Horizontal bars of top-1 and top-5 per view of sensitivity.csv; None when the table is empty."""
    if len(table) == 0 or "top1" not in table.columns:
        return None
    views = [str(v) for v in table["view"]]
    y = np.arange(len(views))
    fig, (ax,) = new_figure(6.0, 0.45 * len(views) + 1.1, dpi=100)
    ax.barh(y - 0.18, table["top1"].to_numpy(float), height=0.36, label="top-1")
    if "top5" in table.columns:
        ax.barh(y + 0.18, table["top5"].to_numpy(float), height=0.36, label="top-5")
    ax.set_yticks(y, views, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.0)
    percent_axis(ax, "x")
    ax.set(xlabel="test accuracy", title="accuracy under each perturbation")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    return save_png(fig, path)


def plot_reliability(table: dict[str, np.ndarray], path, title: str = ""):
    """Reliability diagram (accuracy against confidence per bin, the diagonal is perfect calibration) as PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    lower, upper = np.asarray(table["bin_lower"]), np.asarray(table["bin_upper"])
    used = np.asarray(table["count"]) > 0
    ax.bar(
        lower[used],
        np.asarray(table["accuracy"])[used],
        width=(upper - lower)[used],
        align="edge",
        edgecolor="black",
        color="#4c72b0",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(
        np.asarray(table["confidence"])[used],
        np.asarray(table["accuracy"])[used],
        "o",
        color="#dd8452",
        label="mean confidence",
    )
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="top-1 confidence", ylabel="top-1 accuracy", title=title)
    ax.legend(loc="upper left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    return path


__all__ = [
    "plot_confusion",
    "new_figure",
    "save_png",
    "keep_span",
    "percent_axis",
    "history_x",
    "plot_history",
    "plot_sensitivity",
    "plot_reliability",
]
