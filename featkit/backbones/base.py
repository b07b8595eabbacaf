"""The Backbone interface shared by the Keras and ONNX implementations, plus cached file hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec

POOLINGS = ("avg", "max")


class Backbone:
    """uint8 RGB photos (N, size, size, 3) -> float32 features (N, feature_dim).

    Subclasses set `kind`, `name`, `size`, `feature_dim`, `pooling`, `preprocessing`, `batch_size` and
    implement `_run(chunk)` for one chunk of at most `batch_size` photos, and `spec`.
    """

    kind: str
    name: str
    size: int
    feature_dim: int
    pooling: str
    preprocessing: str
    batch_size: int

    @property
    def spec(self) -> BackboneSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, chunk: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (self.size, self.size, 3):
            raise ValueError(
                f"{self.name} expects uint8 RGB photos of shape (N, {self.size}, {self.size}, 3); "
                f"got {batch.dtype} {batch.shape}"
            )
        n = len(batch)
        if n <= self.batch_size:
            return self._run(batch) if n else np.zeros((0, self.feature_dim), np.float32)
        out = np.empty((n, self.feature_dim), np.float32)
        for start in range(0, n, self.batch_size):
            stop = min(n, start + self.batch_size)
            out[start:stop] = self._run(batch[start:stop])
        return out

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} size={self.size} dim={self.feature_dim} "
            f"pooling={self.pooling} batch_size={self.batch_size}>"
        )


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, computed once per (path, mtime, size) in this process."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size)
    digest = _SHA_CACHE.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = _SHA_CACHE[key] = h.hexdigest()
    return digest


def file_identity(path: str | os.PathLike) -> dict[str, str]:
    p = Path(path).resolve()
    return {"path": str(p), "sha256": file_sha256(p)}


def check_file_identity(ident: dict, what: str) -> Path:
    """The file a spec names, after checking it still exists and has the same sha256."""
    try:
        path, sha = Path(ident["path"]), ident["sha256"]
    except (KeyError, TypeError):
        raise FeatkitError(f"the saved backbone spec has a malformed {what} entry: {ident!r}") from None
    if not path.is_file():
        raise FeatkitError(
            f"{path} ({what} the features were made with) is missing: restore it, or re-run "
            f"`featkit extract` with the weights you have now."
        )
    now = file_sha256(path)
    if now != sha:
        raise FeatkitError(
            f"{path} has changed since the features were made (sha256 {now[:12]}... != "
            f"{sha[:12]}...): restore the original file, or re-run `featkit extract`."
        )
    return path


def check_size(size: Any, minimum: int, name: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise FeatkitError(f"size should be a whole number of pixels; got {size!r} for {name}.")
    size = int(size)
    if size < minimum:
        raise FeatkitError(
            f"{name} needs photos of at least {minimum}x{minimum} pixels; got size={size}. "
            f"Use --size {minimum} or more."
        )
    return size


def check_pooling(pooling: Any, name: str) -> str:
    if pooling not in POOLINGS:
        raise FeatkitError(f"pooling should be one of {', '.join(POOLINGS)}; got {pooling!r} for {name}.")
    return pooling
