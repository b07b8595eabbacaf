"""User-facing errors: one line that names the file and says what to do."""

from __future__ import annotations

import errno


class FeatkitError(Exception):
    """An error caused by the user's input or environment, printed as one line without a traceback."""


class DamagedFileError(FeatkitError):
    """A file featkit wrote (or expects) is truncated, garbage or not what it should be. `path` names it, so a
    caller that can rebuild the file (a cache chunk, a state file) may catch this and start that part again."""

    def __init__(self, path, message: str):
        super().__init__(message)
        self.path = path


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space there, or point --cache / --reports at another disk",
    errno.EDQUOT: "the disk quota is used up: free space there, or point --cache / --reports at another disk",
    errno.EFBIG: "the file grew too large for that file system: point --cache / --reports at another disk",
    errno.EACCES: "featkit may not write there: give a folder you may write to",
    errno.EPERM: "featkit may not write there: give a folder you may write to",
    errno.EROFS: "that file system is read-only: give a folder on a writable disk",
    errno.ENOTDIR: "a part of that path is a file, not a folder: give another path",
    errno.EEXIST: "a file is where featkit needs a folder: give another path, or move the file",
    errno.EISDIR: "that is a folder, not a file: give a file's path",
    errno.ENOENT: "it does not exist",
}


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error that escaped to the command line: the path, the system's reason and
    what to do. Files are written under a temporary name and renamed, so nothing half-written is left behind."""
    reason = e.strerror or " ".join(str(e).split())[:200] or type(e).__name__
    where = f"{e.filename}: " if e.filename else ""
    if e.filename2:
        where = f"{e.filename} -> {e.filename2}: "
    hint = _OS_HINTS.get(e.errno or -1, "check that path and the disk it is on")
    return f"{where}{reason} ({hint}); run the same command again once that is fixed: finished work is kept."
