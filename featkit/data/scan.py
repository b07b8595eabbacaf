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

from featkit.core.errors import DamagedFileError
from featkit.core.fileio import atomic_path
from featkit.core.progress import Progress
from featkit.data.images import ImageDecodeError, default_threads, open_image
from featkit.data.layouts import Dataset

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


def scan_dataset(ds: Dataset, dataset_dir: Path, quiet: bool = False, rescan: bool = False) -> pd.DataFrame:
    """The scan of every photo, cached in scan.csv. `rescan` decodes every photo again; if what it finds differs
    from the cached scan (a photo replaced in place with the same size and times), the manifests and decoded
    arrays made from the old scan are removed, so every later command rebuilds them from the new one."""
    out = dataset_dir / "scan.csv"
    paths = sorted({it.path for it in ds.items})
    old, damaged = None, False
    if out.exists():
        try:
            old = _read_scan(out)
        except DamagedFileError:
            if not rescan:
                raise
            damaged = True
    if old is not None:
        missing = sorted(set(paths) - set(old["path"]))
        if not missing and not rescan:
            return old
        if not rescan:
            paths = missing  # same files, but a newer featkit takes more of them as photos: scan only those
    rows: list[tuple] = []
    with Progress(len(paths), "scan", quiet=quiet) as bar, ThreadPoolExecutor(default_threads()) as pool:
        chunk = 512
        for start in range(0, len(paths), chunk):
            part = paths[start : start + chunk]
            rows.extend(pool.map(lambda p: _scan_one(ds, p), part))
            bar.update(len(part))
    df = pd.DataFrame(rows, columns=SCAN_COLUMNS)
    if old is not None and not rescan:
        df = pd.concat([old, df], ignore_index=True).sort_values("path", kind="stable").reset_index(drop=True)
    if damaged or (rescan and old is not None and not _same_scan(old, df)):
        for derived in [*dataset_dir.glob("manifest-*"), *dataset_dir.glob("decoded-*")]:
            derived.unlink()
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return df


def _same_scan(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    cols = ["path", "sha1", "pixel_hash", "error"]
    a = a[cols].astype(str).sort_values("path").reset_index(drop=True)
    b = b[cols].astype(str).sort_values("path").reset_index(drop=True)
    return a.equals(b)


def _read_scan(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"path": str, "sha1": str, "pixel_hash": str, "error": str}, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DamagedFileError(
            path, f"{path} is damaged ({type(e).__name__}): delete it, or run `featkit data check` (which scans again)."
        ) from None
    if list(df.columns) != SCAN_COLUMNS:
        raise DamagedFileError(
            path,
            f"{path} is damaged (columns {list(df.columns)[:6]}): delete it, or run "
            "`featkit data check` (which scans again).",
        )
    return df
