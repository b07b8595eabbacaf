"""Decoded, resized uint8 arrays of manifest photos, decoded once and kept in a .npy file under the cache.

End-to-end training reads these every epoch instead of re-reading JPEGs (the study's ImageDataGenerator
re-decoded every photo every epoch).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.progress import Progress
from featkit.data import Prepared
from featkit.data.images import ImageFailure, default_threads, load_images


def subset_rows(prep: Prepared, per_class: int | None = None) -> np.ndarray:
    """Manifest rows to use: all, or the first `per_class` of each class in each split (manifest order)."""
    m = prep.manifest
    if per_class is not None and (isinstance(per_class, bool) or per_class < 1):
        raise FeatkitError(f"--per-class {per_class} should be 1 or more photos per class (leave it out for all).")
    if not per_class:
        return np.arange(len(m))
    keep = m.groupby(["split", "label"], sort=False).cumcount().to_numpy() < per_class
    return np.flatnonzero(keep)


def load_rows(
    prep: Prepared,
    rows,
    size: int,
    resize: str = "stretch",
    crop_box: bool = False,
    decode: str = "draft",
    transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
    pool: ThreadPoolExecutor | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[ImageFailure]]:
    """Photos of manifest `rows` through the one image loader (`featkit.data.images.load_images`), with their
    bounding boxes when `crop_box` (UECFOOD). Failures are indexed by position in `rows`."""
    m = prep.manifest
    rows = [int(r) for r in rows]
    paths = m["path"].to_numpy()
    boxes = None
    if crop_box:
        table = m[["x1", "y1", "x2", "y2"]].to_numpy()
        boxes = [None if table[r][0] in ("", None) else tuple(int(v) for v in table[r]) for r in rows]
    return load_images(
        prep.read, [paths[r] for r in rows], size, resize, boxes, transform, pool, out=out, decode=decode
    )


def decoded_arrays(
    prep: Prepared, rows: np.ndarray, size: int, resize: str = "stretch", crop_box: bool = False, quiet: bool = False
) -> np.ndarray:
    """uint8 (len(rows), size, size, 3) for the given manifest rows, memory-mapped from a cached .npy file."""
    key = hashlib.sha1(np.asarray(rows, np.int64).tobytes() + prep.manifest_sha1.encode()).hexdigest()[:12]
    path = prep.dir / f"decoded-{size}px-{resize}{'-box' if crop_box else ''}-{key}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    need = len(rows) * size * size * 3
    free = _free_disk(prep.dir)
    if free is not None and need > free:
        raise FeatkitError(
            f"decoded photos need {need / 2**30:.1f} GiB in {prep.dir} but only {free / 2**30:.1f} GiB "
            "are free: use a smaller --size or --per-class, or free disk space."
        )
    tmp = path.with_name(path.name + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), size, size, 3))
    failures: list[ImageFailure] = []
    with ThreadPoolExecutor(default_threads()) as pool, Progress(len(rows), "decode", quiet=quiet) as bar:
        for start in range(0, len(rows), 512):
            stop = min(len(rows), start + 512)
            _, failed = load_rows(prep, rows[start:stop], size, resize, crop_box, pool=pool, out=out[start:stop])
            failures += failed
            bar.update(stop - start)
    if failures:
        tmp.unlink()
        raise FeatkitError(
            f"{len(failures)} photos could not be decoded (first: {failures[0]}); "
            f"run `featkit data check` on the dataset and fix or remove them."
        )
    out.flush()
    del out  # drop the memmap so its file is closed before the rename
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"rows": len(rows), "size": size, "resize": resize}) + "\n")
    return np.load(path, mmap_mode="r")


def _free_disk(path) -> int | None:
    try:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None
