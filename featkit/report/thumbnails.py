"""Small JPEG thumbnails of a run's test photos, made once under <run>/thumbs/ and reused by every report.

A run knows where its photos are from two fields of its config: the dataset path (`data`) and the split manifest
(`manifest`; for runs of featkit 0.1, the manifest of the feature cache the head was fitted on), which maps each
image_id to its path inside the dataset. Photos are read through the dataset's Source (folder, zip or
unpacked tar) and decoded by `featkit.data.images.decode_image`, the one image path. A photo that cannot be read,
or whose bytes differ from the manifest's sha1 (the dataset changed since the run), gets no thumbnail and a reason
naming the file; `thumbs/index.json` records every photo asked for, so a rebuilt report opens the dataset only
when a thumbnail is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featkit.core.errors import FeatkitError
from featkit.core.fileio import atomic_path, read_json, write_json
from featkit.core.schema import RunConfig
from featkit.runs.store import Run

if TYPE_CHECKING:
    from featkit.data.source import Source

THUMB_SIZE = 96
THUMBS_DIR = "thumbs"
INDEX_NAME = "index.json"


@dataclass(frozen=True)
class Thumb:
    image_id: str
    label: int
    src: str | None  # relative to the run folder; None when there is no thumbnail
    file: str  # the photo as a user finds it (dataset path and member), or the image id when unknown
    problem: str = ""  # why there is no thumbnail


def thumb_name(image_id: str, label: int) -> str:
    return hashlib.sha1(f"{image_id}\0{int(label)}".encode()).hexdigest()[:16] + ".jpg"


class RunPhotos:
    """Thumbnails of one run's photos; the dataset is opened at most once, and only when a thumbnail is missing."""

    def __init__(self, run: Run, size: int = THUMB_SIZE):
        self.run = run
        self.size = size
        self.dir = run.path / THUMBS_DIR
        self._index: dict[str, dict] | None = None
        self._lookup: dict[tuple[str, int], dict] | None = None
        self._source: Source | None = None
        self._cfg: RunConfig | None = None
        self.unavailable = ""  # why the run's photos cannot be read at all ("" when they can, or were never needed)

    def thumbs(self, items: Iterable[tuple[str, int]]) -> list[Thumb]:
        """A Thumb per (image_id, label), in order; makes the missing JPEGs and records them in thumbs/index.json."""
        items = [(str(i), int(lab)) for i, lab in items]
        index = self._read_index()
        todo = [(i, lab) for i, lab in items if not self._usable(index.get(thumb_name(i, lab)))]
        if todo:
            for image_id, label in dict.fromkeys(todo):
                index[thumb_name(image_id, label)] = self._make(image_id, label)
            write_json(self.dir / INDEX_NAME, index)
        out = []
        for image_id, label in items:
            rec = index[thumb_name(image_id, label)]
            problem = rec.get("problem", "")
            out.append(
                Thumb(
                    image_id,
                    label,
                    None if problem else f"{THUMBS_DIR}/{thumb_name(image_id, label)}",
                    rec.get("file", image_id),
                    problem,
                )
            )
        return out

    def _usable(self, rec: dict | None) -> bool:
        """A recorded thumbnail whose JPEG is still there; failures are tried again (the photo may be back)."""
        return (
            isinstance(rec, dict)
            and isinstance(rec.get("name"), str)
            and not rec.get("problem")
            and (self.dir / rec["name"]).exists()
        )

    def _read_index(self) -> dict[str, dict]:
        if self._index is None:
            f = self.dir / INDEX_NAME
            try:
                self._index = read_json(f) if f.exists() else {}
            except (OSError, ValueError, FeatkitError):
                self._index = {}  # a damaged index only costs re-making the thumbnails
            if not isinstance(self._index, dict):
                self._index = {}
        return self._index

    def _make(self, image_id: str, label: int) -> dict[str, Any]:
        from PIL import Image

        from featkit.data.images import ImageDecodeError, decode_image

        name = thumb_name(image_id, label)
        rec: dict[str, Any] = {"name": name, "image_id": image_id, "label": label, "file": image_id, "problem": ""}
        if not self._open() or self._source is None or self._lookup is None:
            return {**rec, "problem": self.unavailable}
        row = self._lookup.get((image_id, label)) or self._lookup.get((image_id, -1))
        if row is None:
            return {**rec, "problem": f"image id {image_id!r} is not in the run's manifest"}
        rec["file"] = self._source.display(row["path"])
        try:
            data = self._source.read(row["path"])
        except (KeyError, OSError) as e:
            return {**rec, "problem": f"cannot read {rec['file']} ({_short(e)})"}
        if row["sha1"] and hashlib.sha1(data).hexdigest() != row["sha1"]:
            return {**rec, "problem": f"{rec['file']} has changed since the run (its sha1 differs from the manifest)"}
        try:
            cfg = self._config()
            box = row["box"] if cfg and cfg.crop_box else None
            pixels = decode_image(data, self.size, self._resize(), box)
        except ImageDecodeError as e:
            return {**rec, "problem": f"cannot decode {rec['file']} ({_short(e)})"}
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / name) as tmp:
            Image.fromarray(pixels).save(tmp, format="JPEG", quality=85)
        return rec

    def _resize(self) -> str:
        cfg = self._config()
        return cfg.resize if cfg and cfg.resize else "stretch"

    def _config(self) -> RunConfig | None:
        if self._cfg is None:
            try:
                self._cfg = self.run.config
            except (OSError, ValueError, FeatkitError) as e:
                self.unavailable = f"the run's config.json cannot be read ({_short(e)})"
        return self._cfg

    def _open(self) -> bool:
        """Open the dataset source and the manifest once; False (with self.unavailable set) when impossible."""
        if self._source is not None:
            return True
        if self.unavailable:
            return False
        from featkit.data import open_run_photos

        cfg = self._config()
        if cfg is None:
            return False
        data, manifest = photo_location(cfg)
        if not data or not manifest:
            missing = " and ".join(
                k for k, v in (("the dataset path", data), ("the split manifest", manifest)) if not v
            )
            self.unavailable = (
                f"run {self.run.id} does not record {missing}: fit it again with --data DATASET to see its photos"
            )
            return False
        if not Path(manifest).exists():
            self.unavailable = (
                f"the run's manifest {manifest} is gone (a relative path is read from the current folder)"
            )
            return False
        try:
            source, frame = open_run_photos(data, manifest)
        except FeatkitError as e:
            self.unavailable = f"the run's photos cannot be read: {_short(e)}"
            return False
        except (OSError, ValueError) as e:
            self.unavailable = f"the run's manifest {manifest} cannot be read ({_short(e)})"
            return False
        self._lookup = _manifest_lookup(frame)
        self._source = source
        return True


def photo_location(config: RunConfig) -> tuple[str | None, str | None]:
    """(dataset path, manifest path) of a run's photos from its config; None where the run does not say."""
    data, manifest = config.data, config.manifest
    if not manifest and config.cache:
        try:
            from featkit.features.cache import read_meta

            manifest = read_meta(config.cache).manifest
        except (FeatkitError, OSError, ValueError):  # a moved or damaged cache: the photos are not located
            manifest = None
    return (str(data) if data else None), (str(manifest) if manifest else None)


def _manifest_lookup(frame) -> dict[tuple[str, int], dict]:
    """(image_id, label) -> {"path", "sha1", "box"}; (image_id, -1) for the first row of each image id."""
    out: dict[tuple[str, int], dict] = {}
    boxes = frame[["x1", "y1", "x2", "y2"]].to_numpy() if {"x1", "y1", "x2", "y2"} <= set(frame.columns) else None
    sha1s = frame["sha1"].astype(str).tolist() if "sha1" in frame else [""] * len(frame)
    for i, (path, label, image_id) in enumerate(zip(frame["path"], frame["label"], frame["image_id"], strict=True)):
        box = _box(boxes[i]) if boxes is not None else None
        rec = {"path": str(path), "sha1": sha1s[i], "box": box}
        out.setdefault((str(image_id), int(label)), rec)
        out.setdefault((str(image_id), -1), rec)
    return out


def _short(e: Exception, limit: int = 160) -> str:
    text = f"{type(e).__name__}: {e}" if not isinstance(e, FeatkitError) else str(e)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _box(values) -> tuple[int, int, int, int] | None:
    try:
        box = tuple(int(float(v)) for v in values)
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 else None


__all__ = ["RunPhotos", "Thumb", "photo_location", "thumb_name", "THUMB_SIZE"]
