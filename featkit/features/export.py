"""`featkit export features`: a feature cache as files other tools read, Parquet or NumPy.

    export_features("cache/.../plain.h5", "features.parquet")          # one row per cached photo
    export_features("cache/.../plain.h5", "features-npy", fmt="npy")   # features.npy + index.csv + meta.json

Columns (both formats): image_id, path (inside the dataset, from the split manifest the cache was made from),
label, class_id, class_name, split (and copy, for an augmented view), then `feature`: a fixed-size list of the
cache's dtype (float16 or float32) in Parquet, the rows of features.npy (same dtype, same order as index.csv).
The values are the cache's exactly (no conversion). The cache's metadata goes in the Parquet file's key-value
metadata (keys `featkit.backbone`, `featkit.size`, `featkit.classes`, `featkit.fingerprint`, `featkit.cache_meta`,
each JSON) or in meta.json beside features.npy.

Writing is atomic: everything goes to a hidden temporary name beside --out, renamed when complete, so nothing
partial is ever at --out. An existing --out is refused unless `force`, and even then only when it is the same
kind of thing (a file for parquet; for npy a folder holding exactly an earlier export's files): featkit never
deletes a folder it did not write. pyarrow is imported only for Parquet (the `export` extra).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.fileio import atomic_path, to_json
from featkit.core.schema import CacheMeta, classes_to_list
from featkit.features.cache import FeatureSet, read_cache

FORMATS = ("parquet", "npy")
NPY_FILES = ("features.npy", "index.csv", "meta.json")
INDEX_COLUMNS = ("image_id", "path", "label", "class_id", "class_name", "split")
EXTRA = 'pip install "featkit[export]"'


def index_table(fs: FeatureSet, manifest: str | Path | None = None):
    """The per-row columns (INDEX_COLUMNS, plus `copy` for an augmented view) as a DataFrame, in the cache's row
    order. `manifest`: the split manifest to take paths from (default: the one the cache records)."""
    import pandas as pd

    from featkit.data.splits import read_manifest

    meta = fs.meta
    manifest = manifest or meta.manifest
    if not manifest or not Path(manifest).is_file():
        raise FeatkitError(
            f"the split manifest {manifest or '(none recorded)'} of this cache is gone: the photos' paths come from "
            "it; re-run the same `featkit extract` (it writes the manifest again)."
        )
    m = read_manifest(manifest)
    where = dict(zip(m["image_id"].astype(str), m["path"].astype(str), strict=True))
    ids = np.asarray(fs.image_ids, dtype=str)
    missing = [i for i in ids.tolist() if i not in where]
    if missing:
        raise FeatkitError(
            f"{manifest} lacks {len(missing)} photos of the cache (e.g. {missing[0]}): the cache was made from another "
            "split; re-run `featkit extract`."
        )
    classes = meta.classes or []
    n = len(classes)
    labels = np.asarray(fs.labels, dtype=np.int64)
    if len(labels) and n and (labels.min() < 0 or labels.max() >= n):
        raise FeatkitError(f"the cache has label {int(labels.max())} for {n} classes: re-run `featkit extract`.")
    ids_of = [c.id for c in classes] if n else [str(v) for v in range(labels.max() + 1)]
    names_of = [c.name for c in classes] if n else ids_of
    table = pd.DataFrame(
        {
            "image_id": ids,
            "path": [where[i] for i in ids.tolist()],
            "label": labels,
            "class_id": np.asarray(ids_of, dtype=object)[labels],
            "class_name": np.asarray(names_of, dtype=object)[labels],
            "split": np.asarray(fs.split, dtype=str),
        }
    )
    if fs.copy is not None:
        table["copy"] = np.asarray(fs.copy, dtype=np.int64)
    return table


def metadata(meta: CacheMeta, cache: str | Path) -> dict[str, str]:
    """The key-value metadata written with the features (values are JSON text)."""
    return {
        "featkit.backbone": to_json(meta.backbone.to_dict()),
        "featkit.size": to_json(meta.size),
        "featkit.classes": to_json(classes_to_list(meta.classes)),
        "featkit.fingerprint": to_json(meta.fingerprint),
        "featkit.view": to_json(meta.view),
        "featkit.source_cache": to_json(str(Path(cache).resolve())),
        "featkit.cache_meta": to_json(meta.to_dict()),
    }


def export_features(
    cache: str | Path, out: str | Path, fmt: str = "parquet", force: bool = False, manifest: str | Path | None = None
) -> dict[str, Any]:
    """Write the cache to `out` as `fmt` (parquet: one file; npy: a folder). Returns a summary
    {out, format, rows, feature_dim, dtype, files, cache}."""
    if fmt not in FORMATS:
        raise FeatkitError(f"--format {fmt!r}: use {' or '.join(FORMATS)}.")
    out = Path(out)
    _check_out(out, fmt, force)
    if fmt == "parquet":  # before reading a big cache: a missing extra is said at once
        _pyarrow()
    fs = read_cache(cache)
    features = _stored_features(cache, fs)
    index = index_table(fs, manifest)
    meta = {**metadata(fs.meta, cache), "featkit.dtype": to_json(str(features.dtype))}
    if fmt == "parquet":
        pa, pq = _pyarrow()
        n, d = features.shape
        values = pa.array(features.reshape(-1), type=pa.from_numpy_dtype(features.dtype))
        columns = {c: pa.array(index[c].to_numpy()) for c in index.columns}
        columns["feature"] = pa.FixedSizeListArray.from_arrays(values, d)
        table = pa.table(columns).replace_schema_metadata(meta)
        try:
            with atomic_path(out) as tmp:
                pq.write_table(table, tmp)
        except OSError as e:
            raise FeatkitError(
                f"--out {out} cannot be written ({e.strerror or e}): give a path you can write."
            ) from None
        files = [str(out)]
    else:
        files = [str(out / f) for f in NPY_FILES]
        _write_npy_folder(out, features, index, meta, force)
    return {
        "out": str(out),
        "format": fmt,
        "rows": int(features.shape[0]),
        "feature_dim": int(features.shape[1]),
        "dtype": str(features.dtype),
        "files": files,
        "cache": str(cache),
    }


def _pyarrow():
    """(pyarrow, pyarrow.parquet), or one line naming the extra that brings them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise FeatkitError(f"Parquet export needs pyarrow: {EXTRA}.") from None
    return pa, pq


def _stored_features(cache: str | Path, fs: FeatureSet) -> np.ndarray:
    """The features in the dtype the cache stores them in (read_cache gives float32; float16 -> float32 -> float16
    is exact, so this is the stored array bit for bit)."""
    import h5py

    with h5py.File(cache, "r") as f:
        dtype = np.dtype(f["features"].dtype)
    if dtype not in (np.float16, np.float32):
        raise FeatkitError(f"{cache} stores features as {dtype}: featkit caches hold float16 or float32.")
    return np.ascontiguousarray(fs.features.astype(dtype, copy=False))


def _check_out(out: Path, fmt: str, force: bool) -> None:
    if not out.exists():
        parent = out.parent if str(out.parent) else Path(".")
        if parent.exists() and not parent.is_dir():
            raise FeatkitError(f"--out {out}: {parent} is a file, not a folder.")
        return
    same_kind = out.is_file() if fmt == "parquet" else _is_npy_export(out)
    if not force:
        what = "file" if out.is_file() else "folder"
        raise FeatkitError(
            f"--out {out} exists (a {what}): give a new path"
            + (", or --force to replace this earlier export." if same_kind else ".")
        )
    if not same_kind:
        want = "a file" if fmt == "parquet" else "a folder holding only features.npy, index.csv and meta.json"
        raise FeatkitError(
            f"--out {out} exists and is not {want}: --force replaces only an earlier export; give a new path."
        )


def _is_npy_export(path: Path) -> bool:
    return path.is_dir() and {p.name for p in path.iterdir()} == set(NPY_FILES)


def _write_npy_folder(out: Path, features: np.ndarray, index, meta: dict[str, str], force: bool) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.save(tmp / "features.npy", features, allow_pickle=False)
        index.to_csv(tmp / "index.csv", index=False)
        (tmp / "meta.json").write_text(
            json.dumps({k: json.loads(v) for k, v in meta.items()}, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if out.exists() and force:  # only an earlier export (checked): swap it out, then delete it
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as e:
        if old.exists() and not out.exists():
            os.replace(old, out)  # put the earlier export back
        raise FeatkitError(f"--out {out} cannot be written ({e.strerror or e}): give a path you can write.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["export_features", "index_table", "metadata", "FORMATS", "INDEX_COLUMNS", "NPY_FILES"]
