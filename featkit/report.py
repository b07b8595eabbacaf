"""Rebuild reports/index.html (with a page per run, see featkit.html_report), results.md, results.csv and the
summary plots from the run folders (head and CNN runs).

Everything is regenerated from reports/runs/*/ each time, so deleting the outputs and rebuilding gives the same
rows. A run folder without a config.json, or without metrics.json / a top-1 in it, is never dropped: it is listed
under "Incomplete runs" with its folder and what is missing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .errors import FeatkitError
from .fileio import write_text
from .outputs import output_dir
from .plots import history_x, keep_span, new_figure, percent_axis, save_png
from .runs import DEFAULT_REPORTS, Run, list_runs, runs_dir
from .schema import RunConfig, RunMetrics
from .tables import markdown_table, write_csv

COLUMNS = ("run_id", "kind", "backbone", "size", "head", "augment", "views", "top1", "top5", "log_loss", "ece",
           "extract_seconds", "fit_seconds", "date", "folder")
MAX_CURVES = 10
PLOTS = ("training_curves", "accuracy_vs_size", "time_vs_size")


def build_report(reports: str | Path = DEFAULT_REPORTS, quiet: bool = True) -> dict[str, Path]:
    """Regenerate the report files; returns {"index_html", "results_md", "results_csv"} -> path, plus
    "training_curves", "accuracy_vs_size", "time_vs_size" for the plots that have data (a plot without data is
    not written, and an old copy of it is removed). Runs of the study's CNN presets also get the study-vs-featkit
    table (featkit.cnn.study), and each finished `featkit sweep` its table (reports/sweeps/), in results.md and in
    index.html."""
    import pandas as pd

    from .cnn.study import study_comparison, study_section
    from .html_report import build_html_report
    from .sweep import list_sweeps

    reports = output_dir(reports, "--reports")
    rows, incomplete = collect_runs(reports)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    paths = {"results_md": reports / "results.md", "results_csv": reports / "results.csv"}
    write_csv(paths["results_csv"], df)

    plots = {"training_curves": _plot_training_curves(reports, rows, reports / "training_curves.png"),
             "accuracy_vs_size": _plot_vs_size(df, reports / "accuracy_vs_size.png",
                                               (("top1", "top-1", "o", "-"), ("top5", "top-5", "s", "--")),
                                               "test accuracy", "accuracy vs image size"),
             "time_vs_size": _plot_time(df, reports / "time_vs_size.png")}
    for name, path in plots.items():
        if path is None:
            (reports / f"{name}.png").unlink(missing_ok=True)  # an old plot of data that is gone
        else:
            paths[name] = path

    shown = df.copy()
    for col, digits in (("top1", 4), ("top5", 4), ("log_loss", 4), ("ece", 4), ("extract_seconds", 1),
                        ("fit_seconds", 1)):
        shown[col] = [("" if _missing(v) else f"{v:.{digits}f}") for v in df[col]]
    shown["run_id"] = [f"[{r}](runs/{r}/)" for r in df["run_id"]]
    shown = shown.drop(columns=["folder"])
    lines = ["# Results", "", f"{len(df)} complete run(s), newest first. Top-1 / top-5 / log loss on the test split; "
             "seconds are wall-clock (extract: building the feature cache; fit: training the head or network). "
             "The same with photos, per-run pages and sortable columns: [index.html](index.html).", ""]
    lines += [markdown_table(shown) if len(df) else "_No complete runs yet._", ""]
    section = study_section(reports)  # the study's figures beside featkit's CNN runs, with their robustness
    lines += [section, ""] if section else []
    sweeps, unfinished_sweeps = list_sweeps(reports)
    lines += sweeps_section(sweeps)
    incomplete = incomplete + unfinished_sweeps
    lines += ["## Incomplete runs", ""]
    if incomplete:
        lines += [f"- `{i['folder']}`: {i['reason']}" for i in incomplete]
    else:
        lines += ["None."]
    drawn = [name for name in PLOTS if name in paths]
    lines += ["", "## Plots", ""]
    lines += [f"![{name.replace('_', ' ')}]({name}.png)\n" for name in drawn] or ["_No plot yet: no run has data to plot._", ""]
    write_text(paths["results_md"], "\n".join(lines))

    paths["index_html"] = build_html_report(reports, rows, incomplete, plots=[paths[n] for n in drawn],
                                            study_rows=study_comparison(reports).to_dict("records"), sweeps=sweeps,
                                            quiet=quiet)
    return {"index_html": paths.pop("index_html"), **paths}


def sweeps_section(sweeps) -> list[str]:
    """results.md's "Sweeps" section: each sweep's table (featkit.sweep.table), best validation top-1 first."""
    from .sweep import table

    if not sweeps:
        return []
    lines = ["## Sweeps", "", "Each `featkit sweep`: its candidates and ensembles, chosen by validation top-1 only "
             "(test scores are shown, never used to choose).", ""]
    for sw in sweeps:
        sel = sw.selected["candidate"] if sw.selected else "none (no candidate had a validation score)"
        lines += [f"### {sw.id}", "", f"Selected: {sel}.", "", markdown_table(table(sw.rows, compact=True)), ""]
    return lines


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
        "head": cfg.name, "augment": "yes" if cfg.augment else "no", "views": _views(cfg), "top1": _num(m.top1),
        "top5": _num(m.top5), "log_loss": _num(m.log_loss), "ece": _num(m.get("ece")),
        "extract_seconds": _num(m.extract_seconds), "fit_seconds": _num(m.fit_seconds), "date": _date(run.id),
        "folder": _rel(run.path, reports),
    }


def _views(cfg: RunConfig) -> str:
    """What the model was trained on: the cached views of a head run, the photos (+ augmentation) of a CNN run."""
    if cfg.views:
        return " + ".join(str(v) for v in cfg.views)
    if cfg.kind == "cnn":
        return "photos" + (" + augmentation" if cfg.augment else "")
    return ""


def _date(run_id: str) -> str:
    """'2026-11-30 10:15' from a run id made by runs.new_run (YYYYmmdd-HHMMSS-name); '' for other names."""
    m = re.match(r"(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})", run_id)
    return f"{m[1]}-{m[2]}-{m[3]} {m[4]}:{m[5]}" if m else ""


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


def _plot_training_curves(reports: Path, rows: list[dict], path: Path) -> Path | None:
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
    xs, losses, accs = [], [], []
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


def _plot_vs_size(df, path: Path, series, ylabel: str, title: str) -> Path | None:
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


def _plot_time(df, path: Path) -> Path | None:
    """Extraction and fit seconds per image size; panels without data are left out, and so is the file."""
    d = _numeric_sizes(df)
    panels = [(col, title) for col, title in (("extract_seconds", "feature extraction"), ("fit_seconds", "fit / training"))
              if not d.empty and d[col].notna().any()]
    if not panels:
        return None
    fig, axes = new_figure(6.5 * len(panels), 5, len(panels))
    for ax, (col, title) in zip(axes, panels):
        g0 = d[d[col].notna()]
        keyf = _extract_label if col == "extract_seconds" else _label
        labels = sorted({keyf(r) for r in g0.to_dict("records")})
        for i, label in enumerate(labels):
            g = g0[[keyf(r) == label for r in g0.to_dict("records")]]
            mean = g.groupby("size_num")[col].mean()
            ax.plot(mean.index, mean.values, color=f"C{i % 10}", marker="o", ls="-" if len(mean) > 1 else "none",
                    label=label)
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


__all__ = ["build_report", "collect_runs", "sweeps_section", "COLUMNS", "PLOTS"]
