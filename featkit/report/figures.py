"""The report's summary plots (training curves, accuracy and time against image size), drawn from the rows of
featkit.report.build with the helpers of featkit.core.plots. A plot with no data returns None and writes nothing."""

from __future__ import annotations

from pathlib import Path

from featkit.core.plots import history_x, keep_span, new_figure, percent_axis, save_png

MAX_CURVES = 10


def _label(rec: dict) -> str:
    parts = [rec["kind"], rec["backbone"], rec["head"]]
    if rec["augment"] == "yes":
        parts.append("aug")
    return " / ".join(str(p) for p in parts if p != "")


def _extract_label(rec: dict) -> str:
    return f"{rec['backbone']}" + (" + augmented view" if rec["augment"] == "yes" else "")


def plot_training_curves(reports: Path, rows: list[dict], path: Path) -> Path | None:
    """Loss and accuracy curves of the newest runs with a history.csv; None (and no file) when no run has one."""
    import pandas as pd

    histories = []
    for rec in rows:
        f = reports / rec["folder"] / "history.csv"
        if not f.exists():
            continue
        try:
            h = pd.read_csv(f)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        if len(h) and ({"loss", "val_loss", "accuracy", "val_accuracy"} & set(h.columns)):
            histories.append((rec, h))
    if not histories:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = new_figure(13, 5, 2)
    xs: list[float] = []
    losses: list[float] = []
    accs: list[float] = []
    for i, (rec, h) in enumerate(histories[:MAX_CURVES]):
        x = history_x(h)[0]
        xs.extend(x.tolist())
        color = f"C{i % 10}"
        name = f"{rec['run_id']} ({_label(rec)})"
        marker = "o" if len(h) <= 30 else None
        for ax, key, ys in ((ax_loss, "loss", losses), (ax_acc, "accuracy", accs)):
            if key in h.columns:
                ax.plot(x, h[key], color=color, ls="-", marker=marker, ms=3, label=f"{name} train")
                ys.extend(h[key].tolist())
            if f"val_{key}" in h.columns:
                ax.plot(x, h[f"val_{key}"], color=color, ls="--", marker=marker, ms=3, label=f"{name} valid")
                ys.extend(h[f"val_{key}"].tolist())
    for ax in (ax_loss, ax_acc):
        ax.set_xlim(*keep_span(xs, 2.0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_loss.set_ylim(*keep_span(losses, 0.1, floor=0.0))
    ax_acc.set_ylim(*keep_span(accs, 0.1, floor=0.0, ceiling=1.02))
    percent_axis(ax_acc)
    ax_loss.set(xlabel="epoch / boosting round", ylabel="loss", title="loss (solid: train, dashed: valid)")
    ax_acc.set(xlabel="epoch / boosting round", ylabel="accuracy", title="accuracy")
    extra = "" if len(histories) <= MAX_CURVES else f": newest {MAX_CURVES} of {len(histories)} runs with a history"
    fig.suptitle("training curves" + extra)
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend(fontsize=6, loc="best")
    return save_png(fig, path)


def _numeric_sizes(df):
    import pandas as pd

    sizes = pd.to_numeric(df["size"], errors="coerce")
    return df.assign(size_num=sizes)[sizes.notna()]


def _size_axis(ax, sizes) -> None:
    """x axis of image sizes: ticks at the sizes run, at least 64 px wide, never 122..134 around one size."""
    sizes = sorted(set(float(s) for s in sizes))
    ax.set_xlim(*keep_span(sizes, 64.0, floor=0.0))
    ax.set_xticks(sizes, [f"{s:g}" for s in sizes])


def plot_vs_size(df, path: Path, series, ylabel: str, title: str) -> Path | None:
    """Accuracy per image size, one colour per kind of run; a line joins the means only where a kind was run at
    two sizes or more. None (no file) when no run has a numeric size."""
    d = _numeric_sizes(df)
    if d.empty:
        return None
    fig, (ax,) = new_figure(9, 6)
    labels = sorted({_label(r) for r in d.to_dict("records")})
    values = []
    for i, label in enumerate(labels):
        g = d[[(_label(r) == label) for r in d.to_dict("records")]]
        for col, name, marker, ls in series:
            g2 = g[g[col].notna()]
            if g2.empty:
                continue
            mean = g2.groupby("size_num")[col].mean()
            joined = len(mean) > 1
            if joined:
                ax.plot(mean.index, mean.values, color=f"C{i % 10}", ls=ls)
            ax.scatter(g2["size_num"], g2[col], color=f"C{i % 10}", marker=marker, s=30, label=f"{label} {name}")
            values.extend(g2[col].tolist())
    _size_axis(ax, d["size_num"])
    ax.set_ylim(*keep_span(values, 0.1, floor=0.0, ceiling=1.02))  # room for a point at 100 %
    percent_axis(ax)
    ax.set(xlabel="image size (px)", ylabel=ylabel, title=title + " (points: runs; lines: mean over runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def plot_time(df, path: Path) -> Path | None:
    """Extraction and fit seconds per image size; panels without data are left out, and so is the file."""
    d = _numeric_sizes(df)
    panels = [
        (col, title)
        for col, title in (("extract_seconds", "feature extraction"), ("fit_seconds", "fit / training"))
        if not d.empty and d[col].notna().any()
    ]
    if not panels:
        return None
    fig, axes = new_figure(6.5 * len(panels), 5, len(panels))
    for ax, (col, title) in zip(axes, panels, strict=True):
        g0 = d[d[col].notna()]
        keyf = _extract_label if col == "extract_seconds" else _label
        labels = sorted({keyf(r) for r in g0.to_dict("records")})
        for i, label in enumerate(labels):
            g = g0[[keyf(r) == label for r in g0.to_dict("records")]]
            mean = g.groupby("size_num")[col].mean()
            ax.plot(
                mean.index,
                mean.values,
                color=f"C{i % 10}",
                marker="o",
                ls="-" if len(mean) > 1 else "none",
                label=label,
            )
        _size_axis(ax, g0["size_num"])
        if (g0[col] > 0).all():
            ax.set_yscale("log")
            lo, hi = float(g0[col].min()), float(g0[col].max())
            ax.set_ylim(min(lo / 2, hi / 10), max(hi * 2, lo * 10))  # at least a decade, never one collapsed point
        ax.set(xlabel="image size (px)", ylabel="seconds (log scale)", title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("wall-clock time vs image size (mean over runs)")
    return save_png(fig, path)


__all__ = ["plot_training_curves", "plot_vs_size", "plot_time"]
