"""The report's "Label-efficiency curves" section (results.md and index.html): each `featkit curve` under
reports/curves/<id>/ (featkit.apps.curve.list_curves) with its points, spread, the 90 % point and its plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from featkit.report.html import Column, esc, num, pct, table

INTRO = (
    "Each `featkit curve`: the head refitted on stratified, seeded subsets of the training photos (validation and "
    "test unchanged), test top-1 / top-5 mean ± spread (std over repeats) per point."
)


def _title(c: Mapping[str, Any]) -> str:
    return f"{c.get('head')} on {c.get('backbone')}-{c.get('size')}, {c.get('dataset')} ({c.get('n_classes')} classes)"


def _reach(c: Mapping[str, Any]) -> str:
    if c.get("full_top1") is None:
        return "no `all` point"
    if c.get("reach90"):
        return f"90 % of the full-data top-1 ({100 * c['full_top1']:.2f} %) at {c['reach90']} photos per class"
    return f"90 % of the full-data top-1 ({100 * c['full_top1']:.2f} %) not reached below all the photos"


def curves_section(curves: Sequence[Mapping[str, Any]]) -> list[str]:
    """results.md lines (none without curves)."""
    if not curves:
        return []
    lines = ["## Label-efficiency curves", "", INTRO, ""]
    for c in curves:
        lines += [f"### {c['id']}", "", f"{_title(c)}; {_reach(c)}.", ""]
        lines += ["| photos per class | train rows | repeats | top-1 | top-5 |", "|---|---|---|---|---|"]
        for p in c["points"]:
            lines.append(
                f"| {p['label']} | {p['n_train']} | {len(p['top1'])} | {100 * p['top1_mean']:.2f} ± "
                f"{100 * p['top1_std']:.2f} % | {100 * p['top5_mean']:.2f} ± {100 * p['top5_std']:.2f} % |"
            )
        lines += ["", f"![curve {c['id']}]({c['folder']}/curve.png)", ""]
        if c.get("by_class"):
            lines += [
                f"Hardest dishes: {', '.join(c['by_class'])} ([per-class curves]({c['folder']}/curve_by_class.png)).",
                "",
            ]
    return lines


def render_curves(curves: Sequence[Mapping[str, Any]]) -> str:
    """index.html's section: a table and the plot per curve."""

    def spread(v: Any) -> str:
        mean, std = v
        return f"{pct(mean)} ± {num(100 * std, 2)}"

    columns = [
        Column("photos per class"),
        Column("train rows", numeric=True),
        Column("repeats", numeric=True),
        Column("top-1", spread, key=lambda v: v[0], numeric=True),
        Column("top-5", spread, key=lambda v: v[0], numeric=True),
    ]
    parts = [f'<h2>Label-efficiency curves</h2><p class="note">{esc(INTRO)}</p>']
    for i, c in enumerate(curves):
        rows = [
            [p["label"], p["n_train"], len(p["top1"]), (p["top1_mean"], p["top1_std"]), (p["top5_mean"], p["top5_std"])]
            for p in c["points"]
        ]
        png = f"{c['folder']}/curve.png"
        parts.append(
            f"<h3>{esc(c['id'])}</h3><p>{esc(_title(c))}; {esc(_reach(c))}.</p>"
            + table(columns, rows, table_id=f"curve-{i}")
            + f'<a href="{esc(png)}"><img class="plot" src="{esc(png)}" alt="curve {esc(c["id"])}" width="560"></a>'
        )
        if c.get("by_class"):
            by = f"{c['folder']}/curve_by_class.png"
            parts.append(
                f'<p>Hardest dishes: {esc(", ".join(c["by_class"]))} (<a href="{esc(by)}">per-class curves</a>).</p>'
            )
    return "\n".join(parts)


__all__ = ["curves_section", "render_curves"]
