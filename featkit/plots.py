"""Plots of a run's scores, drawn with matplotlib's object API (no pyplot state, safe in threads)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .fileio import atomic_path


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
