"""Read and decode every photo once: content hashes (bytes and decoded pixels), size, and whether it decodes.

The result is cached per dataset fingerprint in cache/datasets/<name>-<fp>/scan.csv, so later commands pay
nothing for it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_path
from ..progress import Progress
from .images import ImageDecodeError, default_threads, open_image
from .layouts import Dataset

SCAN_COLUMNS = ["path", "sha1", "pixel_hash", "width", "height", "error"]


def _scan_one(ds: Dataset, path: str) -> tuple:
    try:
        data = ds.source.read(path)
    except (KeyError, OSError) as e:
        return (path, "", "", 0, 0, f"cannot read: {e}")
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        img = open_image(data)
        arr = np.asarray(img)
    except ImageDecodeError as e:
        return (path, sha1, "", 0, 0, str(e) or "cannot decode")
    h = hashlib.sha1(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return (path, sha1, h.hexdigest(), img.width, img.height, "")


def scan_dataset(ds: Dataset, dataset_dir: Path, quiet: bool = False) -> pd.DataFrame:
    out = dataset_dir / "scan.csv"
    paths = sorted({it.path for it in ds.items})
    old = None
    if out.exists():
        old = pd.read_csv(out, dtype={"path": str, "sha1": str, "pixel_hash": str, "error": str}, keep_default_na=False)
        missing = sorted(set(paths) - set(old["path"]))
        if not missing:
            return old
        paths = missing  # same files, but a newer featkit takes more of them as photos: scan only those
    rows: list[tuple] = []
    with Progress(len(paths), "scan", quiet=quiet) as bar, ThreadPoolExecutor(default_threads()) as pool:
        chunk = 512
        for start in range(0, len(paths), chunk):
            part = paths[start:start + chunk]
            rows.extend(pool.map(lambda p: _scan_one(ds, p), part))
            bar.update(len(part))
    df = pd.DataFrame(rows, columns=SCAN_COLUMNS)
    if old is not None:
        df = pd.concat([old, df], ignore_index=True).sort_values("path", kind="stable").reset_index(drop=True)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return df
