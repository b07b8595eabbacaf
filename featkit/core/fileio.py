"""Atomic writes: a half-written file is never taken for a complete one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featkit.core.errors import DamagedFileError


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
    except OSError as e:  # a full disk, a read-only folder...: named by the file being written, not its temp name
        if e.filename in (None, str(tmp), tmp):
            raise OSError(e.errno, e.strerror or " ".join(str(e).split())[:200], str(path)) from e
        raise
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


def read_json(path: str | Path, kind: type | None = None, fix: str | None = None) -> Any:
    """The JSON in `path`; a truncated, garbage or empty file (or, with `kind`, one whose top level is not of that
    type) raises DamagedFileError naming the file and `fix` (what to do), never a traceback."""
    path = Path(path)
    fix = fix or "delete it and run the command that wrote it again"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(path, f"{path} is missing: {fix}.") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DamagedFileError(path, f"{path} is damaged (not valid JSON: {e}): {fix}.") from None
    if kind is not None and not isinstance(obj, kind):
        raise DamagedFileError(
            path,
            f"{path} is damaged (expected a JSON {_JSON_NAMES.get(kind, kind.__name__)}, "
            f"found {type(obj).__name__}): {fix}.",
        )
    return obj


def load_npz(path: str | Path, keys: tuple[str, ...], fix: str) -> dict[str, Any]:
    """The arrays `keys` of an .npz file featkit wrote, read whole; a truncated or garbage file, or one without
    those arrays, raises DamagedFileError naming it and `fix` (what to do)."""
    import zipfile

    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DamagedFileError(path, f"{path} is damaged (no array {', '.join(missing)}): {fix}.")
            return {k: z[k] for k in keys}
    except FileNotFoundError:
        raise DamagedFileError(path, f"{path} is missing: {fix}.") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DamagedFileError(path, f"{path} is damaged ({type(e).__name__}): {fix}.") from None


_JSON_NAMES = {dict: "object", list: "list", float: "number", str: "string"}


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
