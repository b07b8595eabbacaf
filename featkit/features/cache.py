"""Feature caches: one HDF5 file per (dataset, backbone, weights, size, view).

Datasets: features (N, D) float16 or float32, labels (N,) int32, split (N,) str, image_ids (N,) str, and
for augmented views `copy` (N,) int. Attributes: `meta`, a `featkit.core.schema.CacheMeta` as JSON (backbone spec,
size, view, class list, dataset fingerprint, counts, seconds). A file is written under a temporary name and
renamed when complete, so a file at the final path is always whole. The attribute "checksum" holds a SHA-256 of
every array as stored; each read verifies it, so a file damaged on disk is named and never used.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import atomic_path
from featkit.core.schema import CacheMeta, ClassEntry, check_comparable

SPLITS = ("train", "valid", "test")


@dataclass
class FeatureSet:
    features: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    image_ids: np.ndarray
    meta: CacheMeta
    copy: np.ndarray | None = None
    row: np.ndarray | None = None  # position of each vector among the rows the view planned (used by merge)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[ClassEntry]:
        return self.meta.classes

    def subset(self, split: str) -> FeatureSet:
        m = self.split == split
        return FeatureSet(
            self.features[m],
            self.labels[m],
            self.split[m],
            self.image_ids[m],
            self.meta,
            None if self.copy is None else self.copy[m],
            None if self.row is None else self.row[m],
        )


def array_digest(arrays: dict[str, np.ndarray | None]) -> str:
    """SHA-256 over named arrays as stored (name, dtype, shape, bytes; string arrays as UTF-8 joined by NUL)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        if a is None:
            continue
        a = np.asarray(a)
        if a.dtype.kind in "OU":
            data = "\0".join(str(v) for v in a.tolist()).encode("utf-8")
            h.update(f"{name}|str|{a.shape}|".encode())
        else:
            data = np.ascontiguousarray(a).tobytes()
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(data)
    return h.hexdigest()


def write_cache(
    path: str | Path,
    features: np.ndarray,
    labels: np.ndarray,
    split,
    image_ids,
    meta: CacheMeta,
    copy: np.ndarray | None = None,
    dtype: str = "float16",
    row: np.ndarray | None = None,
) -> Path:
    import h5py

    path = Path(path)
    n, d = features.shape
    arrays = {
        "features": features.astype(dtype, copy=False),
        "labels": np.asarray(labels, np.int32),
        "split": np.asarray(split, dtype="S5"),
        "image_ids": np.asarray(image_ids, dtype=object),
        "copy": None if copy is None else np.asarray(copy, np.int16),
        "row": None if row is None else np.asarray(row, np.int64),
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            rows = max(1, min(n, (1 << 20) // max(1, d * np.dtype(dtype).itemsize)))  # ~1 MiB chunks
            f.create_dataset("features", data=arrays["features"], chunks=(rows, d) if n else None)
            f.create_dataset("labels", data=arrays["labels"])
            f.create_dataset("split", data=arrays["split"])
            f.create_dataset("image_ids", data=arrays["image_ids"], dtype=h5py.string_dtype())
            for name in ("copy", "row"):
                if arrays[name] is not None:
                    f.create_dataset(name, data=arrays[name])
            f.attrs["meta"] = json.dumps(meta.to_dict(), sort_keys=True)
            f.attrs["checksum"] = array_digest(arrays)
            f.attrs["complete"] = True
    return path


def _rebuild_hint(meta: CacheMeta | None) -> str:
    cmd = meta.rebuild if meta is not None else None
    return f"run `{cmd}` again to rebuild it" if cmd else "delete it and re-run `featkit extract` with the same options"


@contextmanager
def _open(path: Path):
    """The HDF5 file at `path` for reading; truncated or garbage files (and missing parts) become one line."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            yield f
    except FeatkitError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:  # h5py raises OSError / KeyError on damaged files
        raise DamagedFileError(
            path,
            f"{path} is damaged or not a featkit cache ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120] if str(e) else ''}): {_rebuild_hint(None)}.",
        ) from None


def read_meta(path: str | Path) -> CacheMeta:
    path = _existing(path)
    with _open(path) as f:
        return _meta(f, path)


def _meta(f, path: Path) -> CacheMeta:
    try:
        raw = json.loads(f.attrs["meta"])
    except (KeyError, TypeError, ValueError):
        raise DamagedFileError(path, f"{path} has no featkit metadata: {_rebuild_hint(None)}.") from None
    return CacheMeta.from_dict(raw, where=str(path))


def read_cache(path: str | Path) -> FeatureSet:
    """Read a whole cache into memory, its checksum verified; features come back as float32."""
    path = _existing(path)
    with _open(path) as f:
        meta = _meta(f, path)
        if not f.attrs.get("complete", False):
            raise FeatkitError(f"{path} is incomplete: re-run `featkit extract` to finish it.")
        stored = {
            "features": f["features"][()],
            "labels": f["labels"][()],
            "split": f["split"][()],
            "image_ids": f["image_ids"].asstr()[()].astype(object),
            "copy": f["copy"][()] if "copy" in f else None,
            "row": f["row"][()] if "row" in f else None,
        }
        checksum = f.attrs.get("checksum")  # caches of featkit 0.1 have none: read as they are
    n = len(stored["labels"])
    if any(v is not None and len(v) != n for v in stored.values()) or (
        checksum is not None and array_digest(stored) != str(checksum)
    ):
        raise DamagedFileError(
            path, f"{path} is damaged (its contents do not match the checksum written with it): {_rebuild_hint(meta)}."
        )
    # convert after reading in the stored dtype: h5py's own float16->float32 conversion is ~30x slower
    return FeatureSet(
        features=stored["features"].astype(np.float32, copy=False),
        labels=stored["labels"].astype(np.int64),
        split=stored["split"].astype(str),
        image_ids=stored["image_ids"].astype(str),
        meta=meta,
        copy=None if stored["copy"] is None else stored["copy"].astype(np.int64),
        row=stored["row"],
    )


def verify_cache(path: str | Path) -> CacheMeta:
    """The meta of a whole, undamaged cache (everything read and its checksum checked); DamagedFileError if not."""
    return read_cache(path).meta


def check_same_features(
    meta: CacheMeta,
    other: CacheMeta,
    path: str | Path,
    other_path: str | Path,
    todo: str = "use caches extracted with the same backbone, size and dataset",
) -> None:
    """One line naming every field where two caches' features are not comparable (backbone, size, classes, dataset,
    fingerprint, resize, box crop)."""
    check_comparable(meta.comparable_key(), other.comparable_key(), str(path), str(other_path), todo)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FeatkitError(f"{path} does not exist: run `featkit extract` first, or give the path it printed.")
    if path.is_dir():
        raise FeatkitError(f"{path} is a folder: give a cache file (.h5) that `featkit extract` printed.")
    return path
