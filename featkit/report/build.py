"""Rebuild reports/index.html (with a page per run, see featkit.report.index), results.md, results.csv and the
summary plots from the run folders (head and CNN runs).

Everything is regenerated from reports/runs/*/ each time, so deleting the outputs and rebuilding gives the same
rows. A run folder without a config.json, or without metrics.json / a top-1 in it, is never dropped: it is listed
under "Incomplete runs" with its folder and what is missing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.fileio import write_text
from featkit.core.outputs import output_dir
from featkit.core.schema import ReportRow, RunConfig, RunMetrics
from featkit.core.tables import SCORE_COLUMNS, markdown_table, pct, write_csv
from featkit.report.figures import plot_time, plot_training_curves, plot_vs_size
from featkit.runs.store import DEFAULT_REPORTS, Run, list_runs, runs_dir
from featkit.runs.summary import summarize

COLUMNS = tuple(f.name for f in dataclasses.fields(ReportRow))  # run_id, kind, backbone, size, ..., folder
PLOTS = ("training_curves", "accuracy_vs_size", "time_vs_size")


def build_report(reports: str | Path = DEFAULT_REPORTS, quiet: bool = True) -> dict[str, Path]:
    """Regenerate the report files; returns {"index_html", "results_md", "results_csv"} -> path, plus
    "training_curves", "accuracy_vs_size", "time_vs_size" for the plots that have data (a plot without data is
    not written, and an old copy of it is removed). Runs of the study's CNN presets also get the study-vs-featkit
    table (featkit.cnn.study), and each finished `featkit sweep` its table (reports/sweeps/), in results.md and in
    index.html."""
    import pandas as pd

    from featkit.apps.curve import list_curves
    from featkit.apps.sweep import list_sweeps
    from featkit.cnn.study import study_comparison, study_section
    from featkit.report.curves import curves_section
    from featkit.report.index import build_html_report

    reports = output_dir(reports, "--reports")
    sweeps, unfinished_sweeps = list_sweeps(reports)
    records, incomplete = collect_runs(reports, sweeps)
    selected = {str(r.run) for sw in sweeps for r in sw.rows if r.selected and r.run}
    # the table's columns, as results.csv and the pages show them, plus what the index folds by
    rows = [{**r.to_dict(), "sweep_selected": r.run_id in selected} for r in records]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    paths = {"results_md": reports / "results.md", "results_csv": reports / "results.csv"}
    write_csv(paths["results_csv"], df)

    plots = {
        "training_curves": plot_training_curves(reports, rows, reports / "training_curves.png"),
        "accuracy_vs_size": plot_vs_size(
            df,
            reports / "accuracy_vs_size.png",
            (("top1", "top-1", "o", "-"), ("top5", "top-5", "s", "--")),
            "test accuracy",
            "accuracy vs image size",
        ),
        "time_vs_size": plot_time(df, reports / "time_vs_size.png"),
    }
    for name, path in plots.items():
        if path is None:
            (reports / f"{name}.png").unlink(missing_ok=True)  # an old plot of data that is gone
        else:
            paths[name] = path

    shown = df.copy()
    for col, digits in (("log_loss", 4), ("ece", 4), ("extract_seconds", 1), ("fit_seconds", 1)):
        shown[col] = [("" if _missing(v) else f"{v:.{digits}f}") for v in df[col]]
    for col in ("valid_top1", "valid_top5", "top1", "top5"):
        shown[col] = [pct(v) for v in df[col]]
    shown["run_id"] = [f"[{r}](runs/{r}/)" for r in df["run_id"]]
    shown = shown.drop(columns=["folder"])
    lines = [
        "# Results",
        "",
        f"{len(df)} complete run(s), newest first. valid_top1 / valid_top5: on the validation split, what runs "
        "are compared and chosen by; top-1 / top-5 / log loss on the test split (shown, never used to choose); "
        "seconds are wall-clock (extract: building the feature cache; fit: training the head or network). "
        "The same with photos, per-run pages and sortable columns: [index.html](index.html).",
        "",
    ]
    lines += [markdown_table(shown) if len(df) else "_No complete runs yet._", ""]
    section = study_section(reports)  # the study's figures beside featkit's CNN runs, with their robustness
    lines += [section, ""] if section else []
    lines += sweeps_section(sweeps)
    curves = list_curves(reports)  # `featkit curve` results (reports/curves/)
    lines += curves_section(curves)
    incomplete = incomplete + unfinished_sweeps
    lines += ["## Incomplete runs", ""]
    if incomplete:
        lines += [f"- `{i['folder']}`: {i['reason']}" for i in incomplete]
    else:
        lines += ["None."]
    drawn = [name for name in PLOTS if name in paths]
    lines += ["", "## Plots", ""]
    lines += [f"![{name.replace('_', ' ')}]({name}.png)\n" for name in drawn] or [
        "_No plot yet: no run has data to plot._",
        "",
    ]
    write_text(paths["results_md"], "\n".join(lines))

    paths["index_html"] = build_html_report(
        reports,
        rows,
        incomplete,
        plots=[paths[n] for n in drawn],
        study_rows=study_comparison(reports).to_dict("records"),
        sweeps=sweeps,
        quiet=quiet,
        curves=curves,
    )
    return {"index_html": paths.pop("index_html"), **paths}


def sweeps_section(sweeps) -> list[str]:
    """results.md's "Sweeps" section: each sweep's table (featkit.apps.sweep.table), best validation top-1 first."""
    from featkit.apps.sweep import table

    if not sweeps:
        return []
    lines = [
        "## Sweeps",
        "",
        "Each `featkit sweep`: its candidates and ensembles, chosen by validation top-1 only "
        "(test scores are shown, never used to choose).",
        "",
    ]
    for sw in sweeps:
        sel = sw.selected.candidate if sw.selected else "none (no candidate had a validation score)"
        lines += [
            f"### {sw.id}",
            "",
            f"Selected: {sel}.",
            "",
            markdown_table(table(sw.rows, compact=True), SCORE_COLUMNS),
            "",
        ]
    return lines


def collect_runs(
    reports: str | Path = DEFAULT_REPORTS, sweeps: Sequence[Any] = ()
) -> tuple[list[ReportRow], list[dict]]:
    """(rows of complete runs, newest first; [{"folder", "reason"}] of the other run folders, sorted). `sweeps`
    (featkit.apps.sweep.list_sweeps) name the sweep that fitted or built each run (column "sweep")."""
    reports = Path(reports)
    members: dict[str, str] = {}
    for sw in reversed(list(sweeps)):  # oldest first: a run a newer sweep reused names the newer one
        for r in sw.rows:
            if r.run:
                members[str(r.run)] = sw.id
    rows: list[ReportRow] = []
    incomplete: list[dict] = []
    seen = set()
    for run in list_runs(reports):
        seen.add(run.path.name)
        try:
            cfg, metrics = run.config, run.metrics
        except (OSError, FeatkitError) as e:
            if run.path.exists():
                incomplete.append({"folder": _rel(run.path, reports), "reason": f"unreadable config/metrics ({e})"})
            continue  # deleted while the report was built
        rows.append(_row(run, cfg, metrics, reports, sweep=members.get(run.id, "")))
    base = runs_dir(reports)
    if base.exists():
        for d in sorted(base.iterdir(), reverse=True):
            if not d.is_dir() or d.name in seen or d.name.startswith("."):
                continue
            reason = "no config.json" if not (d / "config.json").exists() else "no metrics.json (unfinished or failed)"
            incomplete.append({"folder": _rel(d, reports), "reason": reason})
    incomplete.sort(key=lambda i: i["folder"], reverse=True)
    return rows, incomplete


def _row(run: Run, cfg: RunConfig, m: RunMetrics, reports: Path, sweep: str = "") -> ReportRow:
    s = summarize(run, cfg, m)
    return ReportRow(
        run_id=run.id,
        kind=cfg.kind,
        dataset=s.dataset,
        classes=s.n_classes,
        backbone=" + ".join(s.backbones) or "-",
        size=cfg.size or None,
        head=cfg.name,
        augment=bool(cfg.augment),
        views=s.views,
        valid_top1=s.valid_top1,
        valid_top5=s.valid_top5,
        top1=_num(m.top1),
        top5=_num(m.top5),
        log_loss=_num(m.log_loss),
        ece=_num(m.ece),
        extract_seconds=_num(m.extract_seconds),
        fit_seconds=_num(m.fit_seconds),
        sweep=sweep,
        date=s.date,
        folder=_rel(run.path, reports),
        dataset_key=s.dataset_key,
    )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _rel(path: Path, reports: Path) -> str:
    try:
        return str(path.relative_to(reports))
    except ValueError:
        return str(path)


__all__ = ["build_report", "collect_runs", "sweeps_section", "COLUMNS", "PLOTS"]
