"""One writer per output: an advisory lock file (fcntl.flock) that a second identical command waits on."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: str | Path, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock on `lock_path` for the block; if another process holds it, say so (naming `what` and that
    process) and wait for it. The lock goes with the process, so a killed holder never leaves it stuck."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            log(f"another featkit command ({holder}) is writing {what}: waiting for it to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def discard_lock_folder(folder: str | Path, stop: str | Path) -> None:
    """Remove `folder` when it holds nothing but lock files (`.*.lock`), then its parents that are left empty, up
    to `stop` (kept): what a command that failed before writing anything leaves behind."""
    folder, stop = Path(folder), Path(stop)
    try:
        if not folder.is_dir() or any(not (p.name.startswith(".") and p.suffix == ".lock") for p in folder.iterdir()):
            return
        for p in folder.iterdir():
            p.unlink()
        while folder != stop and stop in folder.parents and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    except OSError:  # another command is using it: leave it
        return
