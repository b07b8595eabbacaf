"""reports/index.html: every run in one sortable, filterable table with a "best so far" line, the summary plots,
the study-vs-featkit table, and a link to each run's own page (featkit.report.run_page). Self-contained: inline CSS,
a few lines of plain JS, images as files beside the pages; it opens from file:// without a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featkit.core.fileio import write_text
from featkit.core.progress import Progress
from featkit.report.html import Column, esc, missing, num, page, pct, table
from featkit.report.run_page import PAGE_NAME, build_run_page
from featkit.runs.store import Run

INDEX_NAME = "index.html"


def build_html_report(
    reports: str | Path,
    rows: Sequence[dict],
    incomplete: Sequence[dict] = (),
    plots: Sequence[Path] = (),
    study_rows: Sequence[dict] | None = None,
    sweeps: Sequence[Any] = (),
    quiet: bool = True,
    curves: Sequence[Any] = (),
) -> Path:
    """Write a page per complete run and reports/index.html; returns the index path. `rows` and `incomplete`
    come from featkit.report.build.collect_runs; `plots` are PNGs in `reports` shown on the index; `sweeps` are
    featkit.apps.sweep.list_sweeps results, one table each."""
    reports = Path(reports)
    with Progress(len(rows), "report pages", unit="runs", quiet=quiet) as bar:
        for row in rows:
            build_run_page(Run(reports / row["folder"]), row)
            bar.update()
    path = reports / INDEX_NAME
    write_text(path, render_index(rows, incomplete, [Path(p).name for p in plots], study_rows or [], sweeps, curves))
    return path


def render_index(
    rows: Sequence[dict],
    incomplete: Sequence[dict] = (),
    plots: Sequence[str] = (),
    study_rows: Sequence[dict] = (),
    sweeps: Sequence[Any] = (),
    curves: Sequence[Any] = (),
) -> str:
    kinds = sorted({str(r.get("kind") or "") for r in rows} - {""})
    folded = [r for r in rows if _folded(r)]
    body = [
        "<h1>featkit report</h1>",
        f'<p class="muted">{len(rows)} complete run{"s" if len(rows) != 1 else ""}, newest first. Runs are compared '
        "by their validation top-1 (valid columns); test scores are shown, never used to choose. Click a column to "
        "sort, a run for its page (photos of its mistakes, per-class accuracy, robustness). For scripts: "
        '<a href="results.csv">results.csv</a>, <a href="results.md">results.md</a>, <code>featkit runs --json</code>.'
        "</p>",
        best_so_far(rows),
    ]
    if rows:
        options = "".join(f'<option value="{esc(k)}">{esc(k)}</option>' for k in kinds)
        controls = (
            f'<div class="controls"><label>kind <select id="kind-filter"><option value="">all</option>'
            f"{options}</select></label>"
        )
        sweep_ids = list(dict.fromkeys(str(r["sweep"]) for r in folded))
        if sweep_ids:
            sweep_options = "".join(f'<option value="{esc(i)}">candidates of {esc(i)}</option>' for i in sweep_ids)
            controls += (
                ' <label>sweep candidates <select id="sweep-filter"><option value="">folded (each sweep\'s '
                f'selected run only)</option><option value="*">all shown</option>{sweep_options}</select></label>'
                f' <span class="note">{len(folded)} sweep candidate{"s" if len(folded) != 1 else ""} folded under '
                'their sweep (see <a href="#sweeps">Sweeps</a>).</span>'
            )
        body.append(controls + "</div>")
        body.append(runs_table(rows))
    if study_rows:
        body.append(render_study_vs_featkit(study_rows))
    if sweeps:
        body.append(render_sweeps(sweeps, {r["run_id"]: r for r in rows}))
    if curves:  # `featkit curve` results (featkit.apps.curve.list_curves)
        from featkit.report.curves import render_curves

        body.append(render_curves(curves))
    if plots:
        body.append(
            '<h2>Plots</h2><div class="plots">'
            + "".join(
                f'<a href="{esc(p)}"><img class="plot" src="{esc(p)}" alt="{esc(p)}" width="560"></a>' for p in plots
            )
            + "</div>"
        )
    body.append("<h2>Incomplete runs</h2>")
    body.append(
        "<ul>" + "".join(f"<li><code>{esc(i['folder'])}</code>: {esc(i['reason'])}</li>" for i in incomplete) + "</ul>"
        if incomplete
        else "<p>None.</p>"
    )
    return page("featkit report", "\n".join(body), sortable=True)


def _folded(row: dict) -> bool:
    """A run a sweep fitted or built that the sweep did not select: hidden under its sweep until the filter shows it."""
    return bool(row.get("sweep")) and not row.get("sweep_selected")


def dataset_label(row: dict) -> str:
    classes = row.get("classes")
    return f"{row.get('dataset') or '?'} ({classes} classes)" if classes not in (None, "") else str(row.get("dataset"))


def best_so_far(rows: Sequence[dict]) -> str:
    """One line per dataset (its content and split): the run with the best validation top-1 (ties: validation
    top-5, then the newest), with its test scores beside. Test scores never choose: a dataset whose runs have no
    validation score says so instead of crowning one."""
    if not rows:
        return (
            '<div class="best" id="best">No complete run yet: fit a head or train a CNN, then run `featkit report`.'
            "</div>"
        )
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("dataset_key") or r.get("dataset") or "?"), []).append(r)
    labels = [dataset_label(g[0]) for g in groups.values()]
    lines = []
    for (key, group), label in zip(groups.items(), labels, strict=True):
        if labels.count(label) > 1:
            label = f"{label}, {key}"
        scored = [r for r in group if not missing(r.get("valid_top1"))]
        if not scored:
            lines.append(
                f'<li data-dataset="{esc(key)}">{esc(label)}: no run with a validation score yet '
                f"({len(group)} run{'s' if len(group) != 1 else ''}; best so far is chosen by validation top-1 "
                "only).</li>"
            )
            continue
        best = max(
            scored,
            key=lambda r: (r["valid_top1"], -1 if missing(r.get("valid_top5")) else r["valid_top5"], r["run_id"]),
        )
        what = ", ".join(
            str(x)
            for x in (
                best.get("kind"),
                best.get("backbone"),
                f"{best.get('size')} px" if best.get("size") else "",
                best.get("head"),
                best.get("views"),
            )
            if x not in (None, "", "-")
        )
        test = f"; test top-1 {pct(best.get('top1'))}" if not missing(best.get("top1")) else ""
        test += f", top-5 {pct(best.get('top5'))}" if not missing(best.get("top5")) else ""
        lines.append(
            f'<li data-dataset="{esc(key)}">{esc(label)}: <b>{pct(best["valid_top1"])}</b> validation top-1'
            f"{esc(test)} &mdash; "
            f'<a href="{esc(_page_href(best))}">{esc(best["run_id"])}</a> ({esc(what)}).</li>'
        )
    return (
        '<div class="best" id="best">Best so far, by validation top-1 (one line per dataset):<ul>'
        + "".join(lines)
        + "</ul></div>"
    )


def runs_table(rows: Sequence[dict]) -> str:
    with_ece = any(not missing(r.get("ece")) for r in rows)
    columns = [
        (
            "run",
            Column(
                "run",
                lambda r: f'<a href="{esc(_page_href(r))}">{esc(r["run_id"])}</a>',
                key=lambda r: r["run_id"],
                raw_html=True,
            ),
        ),
        ("kind", Column("kind")),
        ("dataset", Column("dataset", lambda r: dataset_label(r), key=lambda r: dataset_label(r))),
        ("backbone", Column("backbone")),
        ("size", Column("size", numeric=True, key=lambda v: v if isinstance(v, (int, float)) else "")),
        ("head", Column("head / preset")),
        ("views", Column("views")),
        ("valid_top1", Column("valid top-1", pct, numeric=True)),
        ("valid_top5", Column("valid top-5", pct, numeric=True)),
        ("top1", Column("test top-1", pct, numeric=True)),
        ("top5", Column("test top-5", pct, numeric=True)),
        ("log_loss", Column("log loss", num, numeric=True, better="low")),
        ("ece", Column("ECE", num, numeric=True, better="low")),
        ("fit_seconds", Column("fit s", lambda v: num(v, 1), numeric=True, better="low")),
        ("extract_seconds", Column("extract s", lambda v: num(v, 1), numeric=True, better="low")),
        ("sweep", Column("sweep")),
        ("date", Column("date")),
    ]
    if not with_ece:
        columns = [c for c in columns if c[0] != "ece"]
    if not any(r.get("sweep") for r in rows):
        columns = [c for c in columns if c[0] != "sweep"]
    values = [[r if key in ("run", "dataset") else r.get(key) for key, _ in columns] for r in rows]
    attrs = [
        f' data-kind="{esc(r.get("kind", ""))}"'
        + (f' data-sweep="{esc(r["sweep"])}"' if r.get("sweep") else "")
        + (" data-folded hidden" if _folded(r) else "")
        for r in rows
    ]
    return table([c for _, c in columns], values, table_id="runs", sortable=True, row_attrs=attrs)


def render_study_vs_featkit(rows: Sequence[dict[str, Any]]) -> str:
    """The study-vs-featkit section of the index: one table row per dict, columns in the order the keys first
    appear (underscores shown as spaces; numbers with up to 4 significant digits; None as a dash).

    `featkit.report.build.build_report` passes the rows of `featkit.cnn.study.study_comparison`; an empty list leaves
    the section out.
    """
    if not rows:
        return ""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def show(v: Any) -> str:
        if missing(v):
            return "\u2014"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = [
        Column(
            k.replace("_", " "),
            show,
            numeric=any(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool) for r in rows),
        )
        for k in keys
    ]
    return (
        '<h2>The study vs featkit</h2><p class="note">Each CNN preset of the study beside the featkit run of '
        "the same preset.</p>" + table(cols, [[r.get(k) for k in keys] for r in rows], table_id="study", sortable=True)
    )


def render_sweeps(sweeps: Sequence[Any], runs: dict[str, dict]) -> str:
    """One sortable table per sweep (featkit.apps.sweep.list_sweeps), best validation top-1 first; the selected row is
    marked, and each row links to its run's page when that run is in the report."""

    def run_link(run_id: Any) -> str:
        if missing(run_id) or run_id == "":
            return ""
        row = runs.get(str(run_id))
        return f'<a href="{esc(_page_href(row))}">{esc(run_id)}</a>' if row else esc(run_id)

    columns = [
        Column(""),
        Column("candidate"),
        Column("valid top-1", pct, numeric=True),
        Column("valid top-5", pct, numeric=True),
        Column("test top-1", pct, numeric=True),
        Column("test top-5", pct, numeric=True),
        Column("log loss", num, numeric=True, better="low"),
        Column("ECE", num, numeric=True, better="low"),
        Column("fit s", lambda v: num(v, 1), numeric=True, better="low"),
        Column("run", run_link, key=lambda v: "" if missing(v) else str(v), raw_html=True),
        Column("error"),
    ]
    parts = [
        '<h2 id="sweeps">Sweeps</h2><p class="note">Each <code>featkit sweep</code>, chosen by validation top-1 only: '
        "test scores are shown, never used to choose (&#9733; the selected row).</p>"
    ]
    for i, sw in enumerate(sweeps):
        ranked = sorted(sw.rows, key=lambda r: -1.0 if missing(r.valid_top1) else r.valid_top1, reverse=True)
        values = [
            [
                "\u2605" if r.selected else "",
                r.candidate,
                r.valid_top1,
                r.valid_top5,
                r.top1,
                r.top5,
                r.log_loss,
                r.ece,
                r.fit_seconds,
                r.run,
                r.error,
            ]
            for r in ranked
        ]
        parts.append(f"<h3>{esc(sw.id)}</h3>" + table(columns, values, table_id=f"sweep-{i}", sortable=True))
    return "\n".join(parts)


def _page_href(row: dict) -> str:
    return f"{Path(row['folder']).as_posix()}/{PAGE_NAME}"


__all__ = [
    "build_html_report",
    "render_index",
    "render_study_vs_featkit",
    "render_sweeps",
    "best_so_far",
    "dataset_label",
    "runs_table",
    "INDEX_NAME",
]
