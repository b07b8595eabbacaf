"""Building blocks of the HTML report: one inline stylesheet, a few lines of plain JS (sorting and the kind
filter), escaping, number formats, tables and thumbnails. No framework, no CDN: pages open from file://."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from featkit.core.tables import pct  # noqa: F401  (re-exported: the one score format, for the report pages)
from featkit.report.thumbnails import THUMB_SIZE, Thumb

CSS = """
:root { --fg: #1f2328; --muted: #636c76; --line: #d8dee4; --bg: #ffffff; --soft: #f6f8fa; --accent: #0969da;
        --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; padding-top: 8px;
border-top: 1px solid var(--line); } h3 { font-size: 14px; margin: 16px 0 6px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.muted, .note { color: var(--muted); } .note { font-size: 13px; }
.best { background: #dafbe1; border: 1px solid #aceebb; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.best ul { margin: 4px 0 0; padding-left: 20px; }
.warn { background: #fff8c5; border: 1px solid #eedd8b; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: middle; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fbfcfd; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #b0b8c1; font-weight: 400; }
table.sortable th.asc::after { content: " \\2191"; color: var(--fg); }
table.sortable th.desc::after { content: " \\2193"; color: var(--fg); }
.controls { margin: 8px 0; } select { font: inherit; padding: 2px 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; min-width: 120px; }
.card b { display: block; font-size: 18px; } .card span { color: var(--muted); font-size: 12px; }
.thumbs { display: flex; gap: 6px; flex-wrap: wrap; }
figure.thumb { margin: 0; width: %(size)dpx; font-size: 11px; line-height: 1.25; }
figure.thumb img, figure.thumb .ph { width: %(size)dpx; height: %(size)dpx; border-radius: 4px; display: block;
  object-fit: cover; background: var(--soft); }
figure.thumb .ph { border: 1px dashed var(--bad); color: var(--bad); display: flex; align-items: center;
  justify-content: center; text-align: center; padding: 4px; }
figure.thumb figcaption { margin-top: 2px; overflow-wrap: anywhere; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(%(size)dpx, 1fr)); gap: 12px 10px; }
.ok { color: var(--good); } .bad { color: var(--bad); }
img.plot { max-width: 100%%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
details { margin: 8px 0; } pre { background: var(--soft); padding: 8px; overflow-x: auto; font-size: 12px; }
""" % {"size": THUMB_SIZE}  # noqa: UP031 (CSS is full of braces: %-format keeps them plain)

# Sorting: click a header (numbers first by what is better: data-better="low" sorts ascending first, other
# numbers descending, text ascending; empty cells always last). Filters: rows whose data-kind matches the kind
# select; sweep candidates (data-folded) hidden unless the sweep select shows all, or their sweep's (data-sweep).
JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var numeric = th.dataset.type === 'num';
      var asc = th.dataset.dir ? th.dataset.dir === 'desc' : (numeric ? th.dataset.better === 'low' : true);
      var rows = Array.from(table.tBodies[0].rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === '' || y === '') return (x === '') - (y === '');
        var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
      table.querySelectorAll('thead th').forEach(function (h) {
        delete h.dataset.dir; h.className = h.className.replace(/ ?(asc|desc)/g, '');
      });
      th.dataset.dir = asc ? 'asc' : 'desc';
      th.className += ' ' + th.dataset.dir;
    });
  });
});
var kindFilter = document.getElementById('kind-filter'), sweepFilter = document.getElementById('sweep-filter');
function filterRuns() {
  var kind = kindFilter ? kindFilter.value : '', sweep = sweepFilter ? sweepFilter.value : '';
  document.querySelectorAll('#runs tbody tr').forEach(function (r) {
    var shown = kind === '' || r.dataset.kind === kind;
    if (sweep === '') shown = shown && !('folded' in r.dataset);
    else if (sweep !== '*') shown = shown && r.dataset.sweep === sweep;
    r.hidden = !shown;
  });
}
if (kindFilter) kindFilter.addEventListener('change', filterRuns);
if (sweepFilter) sweepFilter.addEventListener('change', filterRuns);
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == ""


def num(v: Any, digits: int = 4) -> str:
    if missing(v):
        return ""
    return f"{v:,.{digits}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def page(title: str, body: str, sortable: bool = False) -> str:
    script = f"<script>{JS}</script>" if sortable else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>\n'
        f"<body><main>\n{body}\n</main>{script}</body></html>\n"
    )


class Column:
    """A table column: header, how cells show (`show`), how they sort (`key`), numeric or not."""

    def __init__(
        self, header: str, show=None, key=None, numeric: bool = False, better: str = "high", raw_html: bool = False
    ):
        self.header, self.numeric, self.better, self.raw_html = header, numeric, better, raw_html
        self.show = show or (lambda v: "" if missing(v) else str(v))
        self.key = key or (lambda v: "" if missing(v) else v)

    def th(self) -> str:
        attrs = ' class="n" data-type="num"' if self.numeric else ""
        attrs += ' data-better="low"' if self.numeric and self.better == "low" else ""
        return f"<th{attrs}>{esc(self.header)}</th>"

    def td(self, value: Any) -> str:
        shown = self.show(value)
        cls = ' class="n"' if self.numeric else ""
        return f'<td{cls} data-v="{esc(self.key(value))}">{shown if self.raw_html else esc(shown)}</td>'


def table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Any]],
    table_id: str = "",
    sortable: bool = False,
    row_attrs: Iterable[str] | None = None,
) -> str:
    """An HTML table; each row gives one value per column; `row_attrs` adds attributes to each <tr>."""
    rows = list(rows)
    attrs = list(row_attrs) if row_attrs is not None else [""] * len(rows)
    head = "".join(c.th() for c in columns)
    body = "\n".join(
        f"<tr{a}>" + "".join(c.td(v) for c, v in zip(columns, r, strict=True)) + "</tr>"
        for r, a in zip(rows, attrs, strict=True)
    )
    tid = f' id="{esc(table_id)}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    return f"<table{tid}{cls}><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"


def thumb_html(t: Thumb, caption: str = "") -> str:
    """A thumbnail figure; a photo without a thumbnail shows a placeholder that names the file and why."""
    if t.src:
        return (
            f'<figure class="thumb"><img src="{esc(t.src)}" width="{THUMB_SIZE}" height="{THUMB_SIZE}" '
            f'alt="{esc(t.image_id)}" title="{esc(t.file)}">'
            + (f"<figcaption>{caption}</figcaption>" if caption else "")
            + "</figure>"
        )
    return (
        f'<figure class="thumb missing" title="{esc(t.problem)}"><div class="ph">photo unavailable</div>'
        f'<figcaption>{caption + "<br>" if caption else ""}<span class="bad">{esc(t.problem)}</span>'
        "</figcaption></figure>"
    )


def cards(items: Iterable[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in items if v != "")
        + "</div>"
    )


__all__ = ["CSS", "JS", "Column", "cards", "esc", "missing", "num", "page", "pct", "table", "thumb_html"]
