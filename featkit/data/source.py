"""Where a dataset's files live: a folder, a .zip read in place, or a .tar(.gz) unpacked once into the cache.

Every file is addressed by its POSIX path relative to the folder or archive root.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
import zipfile
from pathlib import Path

from ..errors import FeatkitError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
UNPACKED_MARKER = ".featkit-unpacked"


class Source:
    path: Path  # where the files are read from
    origin: Path  # what the user gave (the archive for an unpacked .tar), named in messages

    def list_files(self) -> list[str]:
        raise NotImplementedError

    def list_dirs(self) -> list[str]:
        """Every folder, empty ones included (an empty class folder is worth a warning)."""
        return []

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def display(self, rel: str) -> str:
        return str(self.path / rel)


class FolderSource(Source):
    def __init__(self, path: Path, origin: Path | None = None):
        self.path = path
        self.origin = origin or path
        self._files: list[str] | None = None
        self._dirs: list[str] = []
        self._stat: dict[str, tuple[int, int]] = {}

    def list_dirs(self) -> list[str]:
        self.list_files()
        return self._dirs

    def list_files(self) -> list[str]:
        if self._files is None:
            files, dirs = [], []
            for dirpath, dirnames, filenames in os.walk(self.path):
                dirnames.sort()
                for name in dirnames:
                    dirs.append(os.path.relpath(os.path.join(dirpath, name), self.path).replace(os.sep, "/"))
                for name in filenames:
                    if name == UNPACKED_MARKER:
                        continue
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                    st = os.stat(full)
                    self._stat[rel] = (st.st_size, st.st_mtime_ns)
                    files.append(rel)
            self._files = sorted(files)
            self._dirs = sorted(dirs)
        return self._files

    def read(self, rel: str) -> bytes:
        try:
            with open(self.path / rel, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise KeyError(rel) from None

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for rel in self.list_files():
            size, mtime = self._stat[rel]
            h.update(f"{rel}\0{size}\0{mtime}\n".encode())
        return h.hexdigest()


class ZipSource(Source):
    """Reads members in place; each thread gets its own handle so parallel reads do not serialise on one lock."""

    def __init__(self, path: Path):
        self.path = self.origin = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise FeatkitError(f"{path} is not a readable zip ({e}): download it again.") from None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._dirs: set[str] = set()
        for i in self._zip.infolist():
            name = _member_name(i.filename)
            if not name:
                continue
            if i.is_dir() or i.filename.endswith("\\"):
                self._dirs.add(name)
            else:
                self._infos[name] = i
        self._local = threading.local()
        self._owner = threading.get_ident()

    def _handle(self) -> zipfile.ZipFile:
        z = getattr(self._local, "zip", None)
        if z is None:
            # the opening thread reuses the handle it has; others open their own (parsing the central directory)
            z = self._local.zip = self._zip if threading.get_ident() == self._owner else zipfile.ZipFile(self.path)
        return z

    def list_files(self) -> list[str]:
        return sorted(self._infos)

    def list_dirs(self) -> list[str]:
        return sorted(self._dirs)

    def read(self, rel: str) -> bytes:
        info = self._infos[rel]  # KeyError for a missing member, like a missing file
        try:
            return self._handle().read(info)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise OSError(f"corrupt zip member: {e}") from None

    def fingerprint(self) -> str:
        # The central directory holds each member's CRC-32: a content fingerprint that costs no reading.
        h = hashlib.sha1()
        for name in sorted(self._infos):
            i = self._infos[name]
            h.update(f"{name}\0{i.file_size}\0{i.CRC}\n".encode())
        return h.hexdigest()

    def display(self, rel: str) -> str:
        return f"{self.path}:{rel}"


def _member_name(name: str) -> str:
    """A zip member's POSIX path: zips made on Windows may use backslashes; './' prefixes are dropped."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    return "/".join(parts)


def open_source(path: str | Path, cache_dir: str | Path = "cache") -> Source:
    path = Path(path)
    if not path.exists():
        raise FeatkitError(f"{path} does not exist: give a dataset folder, a .zip or a .tar(.gz) of one.")
    if path.is_dir():
        return FolderSource(path)
    name = path.name.lower()
    if name.endswith(".zip"):
        return ZipSource(path)
    if name.endswith(TAR_SUFFIXES):
        return FolderSource(_unpack_tar(path, Path(cache_dir)), origin=path)
    raise FeatkitError(f"{path} is neither a folder nor a .zip / .tar / .tar.gz archive: give the dataset folder or its archive.")


def _unpack_tar(path: Path, cache_dir: Path) -> Path:
    """Unpack once into cache/unpacked/<name>-<key>/; a marker written last says the unpacking finished."""
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = path.name.split(".")[0]
    dest = cache_dir / "unpacked" / f"{stem}-{key}"
    marker = dest / UNPACKED_MARKER
    if marker.exists():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FeatkitError(f"{path} could not be unpacked ({e}): download it again.") from None
    (tmp / UNPACKED_MARKER).write_text("ok\n")
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest
