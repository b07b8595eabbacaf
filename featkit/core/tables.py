"""Tables as files: CSV written atomically, and GitHub-flavoured markdown (no extra dependency)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from featkit.core.fileio import atomic_path


def write_csv(path: str | Path, df, index: bool = False) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=index)


def markdown_table(df) -> str:
    """A GitHub-flavoured markdown table of a DataFrame."""

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in rec) + " |")
    return "\n".join(lines)
