"""Rebuild reports/results.md, results.csv and the summary plots from the run folders (head and CNN runs).

Everything is regenerated from reports/runs/*/ each time, so deleting the outputs and rebuilding gives the same
rows. A run folder without a config.json, or without metrics.json / a top-1 in it, is never dropped: it is listed
under "Incomplete runs" with its folder and what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import FeatkitError
from .fileio import atomic_path, write_text
from .outputs import output_dir
from .runs import DEFAULT_REPORTS, Run, list_runs, runs_dir
from .schema import RunConfig, RunMetrics
from .tables import markdown_table, write_csv

COLUMNS = ("run_id", "kind", "backbone", "size", "head", "augment", "top1", "top5", "extract_seconds",
           "fit_seconds", "folder")
MAX_CURVES = 10


def build_report(reports: str | Path = DEFAULT_REPORTS) -> dict[str, Path]:
    """Regenerate the report files; returns {"results_md", "results_csv", "training_curves",
    "accuracy_vs_size", "time_vs_size"} -> path."""
    import pandas as pd

    reports = output_dir(reports, "--reports")
    rows, incomplete = collect_runs(reports)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    paths = {"results_md": reports / "results.md", "results_csv": reports / "results.csv",
             "training_curves": reports / "training_curves.png", "accuracy_vs_size": reports / "accuracy_vs_size.png",
             "time_vs_size": reports / "time_vs_size.png"}
    write_csv(paths["results_csv"], df)

    shown = df.copy()
    for col, digits in (("top1", 4), ("top5", 4), ("extract_seconds", 1), ("fit_seconds", 1)):
        shown[col] = [("" if _missing(v) else f"{v:.{digits}f}") for v in df[col]]
    shown["run_id"] = [f"[{r}](runs/{r}/)" for r in df["run_id"]]
    shown = shown.drop(columns=["folder"])
    lines = ["# Results", "", f"{len(df)} complete run(s), newest first. Top-1 / top-5 on the test split; seconds are "
             "wall-clock (extract: building the feature cache; fit: training the head or network).", ""]
    lines += [markdown_table(shown) if len(df) else "_No complete runs yet._", ""]
    lines += ["## Incomplete runs", ""]
    if incomplete:
        lines += [f"- `{i['folder']}`: {i['reason']}" for i in incomplete]
    else:
        lines += ["None."]
    lines += ["", "## Plots", "", "![training curves](training_curves.png)", "",
              "![accuracy vs image size](accuracy_vs_size.png)", "", "![time vs image size](time_vs_size.png)", ""]
    write_text(paths["results_md"], "\n".join(lines))

    _plot_training_curves(reports, rows, paths["training_curves"])
    _plot_vs_size(df, paths["accuracy_vs_size"], (("top1", "top-1", "o", "-"), ("top5", "top-5", "s", "--")),
                  "test accuracy", "accuracy vs image size")
    _plot_time(df, paths["time_vs_size"])
    return paths


def collect_runs(reports: str | Path = DEFAULT_REPORTS) -> tuple[list[dict], list[dict]]:
    """(rows of complete runs, newest first; [{"folder", "reason"}] of the other run folders, sorted)."""
    reports = Path(reports)
    rows, incomplete, seen = [], [], set()
    for run in list_runs(reports):
        seen.add(run.path.name)
        try:
            cfg, metrics = run.config, run.metrics
        except (OSError, FeatkitError) as e:
            incomplete.append({"folder": _rel(run.path, reports), "reason": f"unreadable config/metrics ({e})"})
            continue
        rows.append(_row(run, cfg, metrics, reports))
    base = runs_dir(reports)
    if base.exists():
        for d in sorted(base.iterdir(), reverse=True):
            if not d.is_dir() or d.name in seen or d.name.startswith("."):
                continue
            reason = "no config.json" if not (d / "config.json").exists() else "no metrics.json (unfinished or failed)"
            incomplete.append({"folder": _rel(d, reports), "reason": reason})
    incomplete.sort(key=lambda i: i["folder"], reverse=True)
    return rows, incomplete


def _row(run: Run, cfg: RunConfig, m: RunMetrics, reports: Path) -> dict[str, Any]:
    return {
        "run_id": run.id, "kind": cfg.kind, "backbone": cfg.backbone_name or "-", "size": cfg.size or "",
        "head": cfg.name, "augment": "yes" if cfg.augment else "no", "top1": _num(m.top1), "top5": _num(m.top5),
        "extract_seconds": _num(m.extract_seconds), "fit_seconds": _num(m.fit_seconds),
        "folder": _rel(run.path, reports),
    }


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _rel(path: Path, reports: Path) -> str:
    try:
        return str(path.relative_to(reports))
    except ValueError:
        return str(path)


def _label(rec: dict) -> str:
    parts = [rec["kind"], rec["backbone"], rec["head"]]
    if rec["augment"] == "yes":
        parts.append("aug")
    return " / ".join(str(p) for p in parts if p != "")


def _extract_label(rec: dict) -> str:
    return f"{rec['backbone']}" + (" + augmented view" if rec["augment"] == "yes" else "")


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _plot_training_curves(reports: Path, rows: list[dict], path: Path) -> None:
    import pandas as pd

    with_history = [r for r in rows if (reports / r["folder"] / "history.csv").exists()]
    fig, (ax_loss, ax_acc) = _figure(13, 5, 2)
    if not with_history:
        _empty(ax_loss, "no run has a history.csv yet")
        _empty(ax_acc, "")
        _save(fig, path)
        return
    shown = with_history[:MAX_CURVES]
    for i, rec in enumerate(shown):
        try:
            h = pd.read_csv(reports / rec["folder"] / "history.csv")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        xcol = next((c for c in ("epoch", "iteration") if c in h.columns), None)
        x = h[xcol] if xcol else pd.Series(range(1, len(h) + 1))
        color = f"C{i % 10}"
        name = f"{rec['run_id']} ({_label(rec)})"
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            if key in h.columns:
                ax.plot(x, h[key], color=color, ls="-", label=f"{name} train")
            if f"val_{key}" in h.columns:
                ax.plot(x, h[f"val_{key}"], color=color, ls="--", label=f"{name} valid")
    ax_loss.set(xlabel="epoch / boosting round", ylabel="loss", title="loss (solid: train, dashed: valid)")
    ax_acc.set(xlabel="epoch / boosting round", ylabel="accuracy", title="accuracy")
    extra = "" if len(with_history) <= MAX_CURVES else f": newest {MAX_CURVES} of {len(with_history)} runs with a history"
    fig.suptitle("training curves" + extra)
    if ax_acc.lines:
        ax_acc.legend(fontsize=6, loc="lower right")
    _save(fig, path)


def _numeric_sizes(df):
    import pandas as pd

    sizes = pd.to_numeric(df["size"], errors="coerce")
    return df.assign(size_num=sizes)[sizes.notna()]


def _plot_vs_size(df, path: Path, series, ylabel: str, title: str) -> None:
    fig, (ax,) = _figure(9, 6)
    d = _numeric_sizes(df)
    if d.empty:
        _empty(ax, "no complete run with a numeric image size yet")
        _save(fig, path)
        return
    labels = sorted({_label(r) for r in d.to_dict("records")})
    for i, label in enumerate(labels):
        g = d[[(_label(r) == label) for r in d.to_dict("records")]]
        for col, name, marker, ls in series:
            g2 = g[g[col].notna()]
            if g2.empty:
                continue
            mean = g2.groupby("size_num")[col].mean()
            ax.plot(mean.index, mean.values, color=f"C{i % 10}", ls=ls, label=f"{label} {name}")
            ax.scatter(g2["size_num"], g2[col], color=f"C{i % 10}", marker=marker, s=18)
    ax.set(xlabel="image size (px)", ylabel=ylabel, title=title + " (lines: mean over runs; points: runs)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    _save(fig, path)


def _plot_time(df, path: Path) -> None:
    fig, axes = _figure(13, 5, 2)
    d = _numeric_sizes(df)
    for ax, col, title in ((axes[0], "extract_seconds", "feature extraction"), (axes[1], "fit_seconds", "fit / training")):
        g0 = d[d[col].notna()] if not d.empty else d
        if g0.empty:
            _empty(ax, f"no run with {col} and a numeric image size yet")
            continue
        keyf = _extract_label if col == "extract_seconds" else _label
        labels = sorted({keyf(r) for r in g0.to_dict("records")})
        for i, label in enumerate(labels):
            g = g0[[keyf(r) == label for r in g0.to_dict("records")]]
            mean = g.groupby("size_num")[col].mean()
            ax.plot(mean.index, mean.values, color=f"C{i % 10}", marker="o", label=label)
        ax.set(xlabel="image size (px)", ylabel="seconds (log scale)", title=title)
        if (g0[col] > 0).all():
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("wall-clock time vs image size (mean over runs)")
    _save(fig, path)


__all__ = ["build_report", "collect_runs", "COLUMNS"]
