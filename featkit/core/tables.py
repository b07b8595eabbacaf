"""Tables as files: CSV written atomically, and GitHub-flavoured markdown (no extra dependency)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from featkit.core.fileio import atomic_path


def write_csv(path: str | Path, df, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


# Accuracies and F1 (fractions): shown as percentages (`pct`) wherever featkit prints them; log loss, ECE: numbers.
SCORE_COLUMNS = ("top1", "top5", "valid_top1", "valid_top5", "macro_f1")


def pct(v: Any, digits: int = 2) -> str:
    """A score (a fraction) as featkit prints it everywhere: 0.53333 -> '53.33 %'; '' when missing."""
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{100 * float(v):.{digits}f} %"


def markdown_table(df, percent: tuple[str, ...] = ()) -> str:
    """A GitHub-flavoured markdown table of a DataFrame; the columns named in `percent` (e.g. SCORE_COLUMNS)
    shown as percentages."""

    def cell(v: Any, as_pct: bool) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if as_pct and isinstance(v, (int, float)) and not isinstance(v, bool):
            return pct(v)
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    shown = [c in percent for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v, p) for v, p in zip(rec, shown, strict=True)) + " |")
    return "\n".join(lines)
