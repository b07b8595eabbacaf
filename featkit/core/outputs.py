"""featkit's own output folders (--cache, --reports): made and marked here, so a dataset scan never takes them for
photos, wherever they sit.

A marker file `.featkit-output` is written in each output folder when featkit first uses it. Scanning a dataset
folder skips any folder that holds the marker (or looks like a featkit cache / reports folder written before the
marker existed) and names it in a warning.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from featkit.core.errors import FeatkitError

MARKER = ".featkit-output"


def check_output_dir(path: str | Path, option: str) -> Path:
    """`path` as a folder featkit may write in later, left as it is: a file there is refused (one line)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FeatkitError(
            f"{option} {path} is a file, not a folder: give a folder for featkit's {option[2:]} "
            f"(it is created if missing)."
        )
    return path


def output_dir(path: str | Path, option: str) -> Path:
    """`path` as a folder featkit may write in: created and marked. A file there is refused (one line)."""
    path = check_output_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / MARKER
        if not marker.exists():
            marker.write_text(f"featkit writes here ({option}); a dataset scan never reads this folder.\n")
    except OSError as e:
        raise FeatkitError(
            f"{option} {path} cannot be written ({e.strerror or e}): give a folder you can write in."
        ) from None
    return path


def is_output_dir(path: str | Path) -> bool:
    """A folder featkit writes in: it holds the marker, or the layout of a cache (datasets/*/scan.csv) or of a
    reports folder (runs/*/config.json) made before the marker existed."""
    path = Path(path)
    if (path / MARKER).exists():
        return True
    for child, inner in (("datasets", "scan.csv"), ("runs", "config.json")):
        sub = path / child
        if sub.is_dir():
            try:
                with os.scandir(sub) as it:
                    if any(e.is_dir() and (Path(e.path) / inner).exists() for e in it):
                        return True
            except OSError:
                return False
    return False


def warn_if_inside(output: str | Path, dataset: str | Path, option: str) -> None:
    """Say so when an output folder sits inside the dataset folder (featkit leaves it out of the dataset)."""
    try:
        out, data = Path(output).resolve(), Path(dataset).resolve()
    except OSError:
        return
    if data.is_dir() and (out == data or data in out.parents):
        sys.stderr.write(
            f"warning: {option} {output} is inside the dataset {dataset}: featkit leaves it out of the "
            f"photos, but a folder outside the dataset is safer (e.g. {option} {data.parent / out.name}).\n"
        )
