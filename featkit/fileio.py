"""Atomic writes: a half-written file is never taken for a complete one."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    The temporary name keeps the suffix (Keras' model.save insists on `.keras`) and starts with a dot, so
    globs for finished files (`plain.h5`, `chunk-*.npz`, `augment-*.h5`) never see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_json(obj: Any, indent: int | None = None) -> str:
    """JSON text of `obj`, with NumPy arrays and scalars and Paths converted; keys sorted."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=_jsonable)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, to_json(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
