"""Feature caches: one HDF5 file per (dataset, backbone, weights, size, view).

Datasets: features (N, D) float16 or float32, labels (N,) int32, split (N,) str, image_ids (N,) str, and
for augmented views `copy` (N,) int. Attributes: `meta`, a `featkit.schema.CacheMeta` as JSON (backbone spec,
size, view, class list, dataset fingerprint, counts, seconds). A file is written under a temporary name and
renamed when complete, so a file at the final path is always whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FeatkitError
from .fileio import atomic_path
from .schema import CacheMeta, check_comparable

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
    def classes(self) -> list[dict]:
        return self.meta.classes

    def subset(self, split: str) -> "FeatureSet":
        m = self.split == split
        return FeatureSet(self.features[m], self.labels[m], self.split[m], self.image_ids[m], self.meta,
                          None if self.copy is None else self.copy[m], None if self.row is None else self.row[m])


def write_cache(path: str | Path, features: np.ndarray, labels: np.ndarray, split, image_ids,
                meta: CacheMeta, copy: np.ndarray | None = None, dtype: str = "float16",
                row: np.ndarray | None = None) -> Path:
    import h5py

    path = Path(path)
    n, d = features.shape
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            rows = max(1, min(n, (1 << 20) // max(1, d * np.dtype(dtype).itemsize)))  # ~1 MiB chunks
            f.create_dataset("features", data=features.astype(dtype, copy=False), chunks=(rows, d) if n else None)
            f.create_dataset("labels", data=np.asarray(labels, np.int32))
            f.create_dataset("split", data=np.asarray(split, dtype="S5"))
            f.create_dataset("image_ids", data=np.asarray(image_ids, dtype=object), dtype=h5py.string_dtype())
            if copy is not None:
                f.create_dataset("copy", data=np.asarray(copy, np.int16))
            if row is not None:
                f.create_dataset("row", data=np.asarray(row, np.int64))
            f.attrs["meta"] = json.dumps(meta.to_dict(), sort_keys=True)
            f.attrs["complete"] = True
    return path


def read_meta(path: str | Path) -> CacheMeta:
    import h5py

    path = _existing(path)
    try:
        with h5py.File(path, "r") as f:
            return _meta(f, path)
    except OSError as e:
        raise FeatkitError(f"{path} is not a readable featkit cache ({e}); delete it and re-run `featkit extract`.") from e


def _meta(f, path: Path) -> CacheMeta:
    try:
        raw = json.loads(f.attrs["meta"])
    except (KeyError, TypeError, ValueError):
        raise FeatkitError(f"{path} has no featkit metadata: delete it and re-run `featkit extract`.") from None
    return CacheMeta.from_dict(raw, where=str(path))


def read_cache(path: str | Path) -> FeatureSet:
    """Read a whole cache into memory; features come back as float32."""
    import h5py

    path = _existing(path)
    try:
        with h5py.File(path, "r") as f:
            if not f.attrs.get("complete", False):
                raise FeatkitError(f"{path} is incomplete: re-run `featkit extract` to finish it.")
            # read in the stored dtype, then convert: h5py's own float16->float32 conversion is ~30x slower
            feats = f["features"][()].astype(np.float32, copy=False)
            return FeatureSet(
                features=feats,
                labels=f["labels"][()].astype(np.int64),
                split=f["split"][()].astype(str),
                image_ids=f["image_ids"].asstr()[()].astype(str),
                meta=_meta(f, path),
                copy=f["copy"][()].astype(np.int64) if "copy" in f else None,
                row=f["row"][()] if "row" in f else None,
            )
    except OSError as e:
        raise FeatkitError(f"{path} is not a readable featkit cache ({e}); delete it and re-run `featkit extract`.") from e


def check_same_features(meta: CacheMeta, other: CacheMeta, path: str | Path, other_path: str | Path,
                        todo: str = "use caches extracted with the same backbone, size and dataset") -> None:
    """One line naming every field where two caches' features are not comparable (backbone, size, classes, dataset,
    fingerprint, resize, box crop)."""
    check_comparable(meta.comparable_key(), other.comparable_key(), str(path), str(other_path), todo)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FeatkitError(f"{path} does not exist: run `featkit extract` first, or give the path it printed.")
    return path
