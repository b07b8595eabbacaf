"""Where a dataset's files live: a folder, a .zip read in place, or a .tar(.gz) unpacked once into the cache.

Every file is addressed by its POSIX path relative to the folder or archive root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tarfile
import threading
import zipfile
from pathlib import Path

from featkit.core.errors import FeatkitError
from featkit.core.outputs import MARKER, check_output_dir, is_output_dir, output_dir, warn_if_inside
from featkit.data.images import max_file_bytes

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
UNPACKED_MARKER = ".featkit-unpacked"


class Source:
    path: Path  # where the files are read from
    origin: Path  # what the user gave (the archive for an unpacked .tar), named in messages
    skipped: list[tuple[str, str]]  # (path, why) of entries never read: symlink loops, unsafe zip members, ...

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
    """A folder of photos. Symlinks are followed once (a loop or a dangling link is skipped and named); featkit's
    own output folders (--cache, --reports: see featkit.core.outputs) are never read as part of the dataset."""

    def __init__(self, path: Path, origin: Path | None = None, exclude: tuple[Path, ...] = ()):
        self.path = path
        self.origin = origin or path
        self.exclude = {p.resolve() for p in exclude}  # made later or not at all, still never read as photos
        self._files: list[str] | None = None
        self._dirs: list[str] = []
        self._stat: dict[str, tuple[int, ...]] = {}
        self.skipped: list[tuple[str, str]] = []

    def list_dirs(self) -> list[str]:
        self.list_files()
        return self._dirs

    def _rel(self, full: str) -> str:
        return os.path.relpath(full, self.path).replace(os.sep, "/")

    def _keep_dir(self, full: str, seen: set) -> bool:
        rel = self._rel(full)
        try:
            st = os.stat(full)
        except OSError as e:
            self.skipped.append((rel + "/", f"unreadable folder or broken symlink ({e.strerror or e})"))
            return False
        if (st.st_dev, st.st_ino) in seen:
            self.skipped.append((rel + "/", "symlink loop (a folder already read): skipped"))
            return False
        if Path(full).resolve() in self.exclude or is_output_dir(full):
            self.skipped.append((rel + "/", "featkit's own output folder (cache or reports), not part of the dataset"))
            return False
        seen.add((st.st_dev, st.st_ino))
        return True

    def list_files(self) -> list[str]:
        if self._files is None:
            files: list[str] = []
            dirs: list[str] = []
            root = os.stat(self.path)
            seen = {(root.st_dev, root.st_ino)}
            for dirpath, dirnames, filenames in os.walk(self.path, followlinks=True):
                dirnames[:] = [d for d in sorted(dirnames) if self._keep_dir(os.path.join(dirpath, d), seen)]
                dirs.extend(self._rel(os.path.join(dirpath, d)) for d in dirnames)
                for name in filenames:
                    if name in (UNPACKED_MARKER, MARKER):
                        continue
                    full = os.path.join(dirpath, name)
                    rel = self._rel(full)
                    try:
                        st = os.stat(full)
                    except OSError as e:  # a dangling symlink, a symlink loop, a file gone meanwhile
                        why = (
                            "symlink loop"
                            if e.errno == errno.ELOOP
                            else "dangling symlink"
                            if os.path.islink(full)
                            else "unreadable"
                        )
                        self.skipped.append((rel, f"{why} ({e.strerror or e}): skipped"))
                        continue
                    # what a scan is keyed by: a photo replaced in place with the same size and mtime still
                    # changes its inode (new file) or its ctime (rewritten), which no one sets by hand
                    self._stat[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                    files.append(rel)
            self._files = sorted(files)
            self._dirs = sorted(dirs)
        return self._files

    def read(self, rel: str) -> bytes:
        path = self.path / rel
        try:
            _check_size(os.stat(path).st_size)
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise KeyError(rel) from None

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for rel in self.list_files():
            h.update((rel + "".join(f"\0{v}" for v in self._stat[rel]) + "\n").encode())
        return h.hexdigest()


def _check_size(size: int) -> None:
    """Refuse, before reading it, a file no photo within --max-pixels could need (a 1 GiB 'photo')."""
    limit = max_file_bytes()
    if size > limit:
        raise OSError(
            f"{size / 2**20:,.0f} MiB, over the {limit / 2**20:,.0f} MiB read limit per photo file "
            f"(4 bytes x --max-pixels): not read"
        )


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
        self.skipped: list[tuple[str, str]] = []
        for i in self._zip.infolist():
            name = _member_name(i.filename)
            if not name:
                continue
            if (
                i.filename.replace("\\", "/").startswith("/")
                or ".." in i.filename.replace("\\", "/").split("/")
                or (len(i.filename) > 1 and i.filename[1] == ":")
            ):
                self.skipped.append((i.filename, "absolute path or '..' in a zip member: not read"))
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
        _check_size(info.file_size)  # the size the central directory declares; the read stops there too
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


def open_source(path: str | Path, cache_dir: str | Path = "cache", exclude: tuple[str | Path, ...] = ()) -> Source:
    """The dataset at `path`. `cache_dir` (and the folders in `exclude`, e.g. --reports) are featkit's outputs:
    never read as photos, with a warning when they sit inside the dataset folder."""
    path = Path(path)
    if not path.exists():
        raise FeatkitError(f"{path} does not exist: give a dataset folder, a .zip or a .tar(.gz) of one.")
    cache_dir = check_output_dir(cache_dir, "--cache")  # opening writes nothing; a .tar is unpacked there
    if path.is_dir():
        warn_if_inside(cache_dir, path, "--cache")
        for other in exclude:
            warn_if_inside(other, path, "--reports")
        return FolderSource(path, exclude=(cache_dir, *(Path(p) for p in exclude)))
    name = path.name.lower()
    if name.endswith(".zip"):
        return ZipSource(path)
    if name.endswith(TAR_SUFFIXES):
        return FolderSource(_unpack_tar(path, output_dir(cache_dir, "--cache")), origin=path)
    raise FeatkitError(
        f"{path} is neither a folder nor a .zip / .tar / .tar.gz archive: give the dataset folder or its archive."
    )


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
            safe_extractall(tar, tmp)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FeatkitError(f"{path} could not be unpacked ({e}): download it again.") from None
    (tmp / UNPACKED_MARKER).write_text("ok\n")
    if dest.exists():
        import shutil

        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def safe_extractall(tar: tarfile.TarFile, dest: Path) -> None:
    """Unpack into `dest` only: the 'data' filter where Python has it (3.11.4+); else every member is checked
    first (no absolute path, no '..', no link pointing outside, no device) and the archive refused otherwise."""
    name = os.fsdecode(tar.name) if tar.name else "the archive"
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, filter="data")
        except tarfile.FilterError as e:
            raise FeatkitError(
                f"{name} tries to write outside the folder it is unpacked in ({e}): refused; "
                "unpack it yourself if you trust it."
            ) from None
        return
    root = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        link = (
            (target.parent / m.linkname).resolve()
            if m.issym()
            else (dest / m.linkname).resolve()
            if m.islnk()
            else root
        )
        if (
            m.name.startswith("/")
            or root not in (target, *target.parents)
            or root not in (link, *link.parents)
            or m.isdev()
        ):
            raise FeatkitError(
                f"{name}: member {m.name!r} would be written outside the folder it is unpacked in: "
                "refused; unpack it yourself if you trust it."
            )
    tar.extractall(dest)
