"""Datasets: layouts, one scan of every photo, and the split manifest every later command reuses.

prep = prepare("../shared/data/food101-64.zip")
prep.manifest      # DataFrame: path, label, class_id, split, image_id, group, sha1, pixel_hash, x1..y2
prep.classes       # [ClassEntry(index, id, name), ...]
prep.read(path)    # bytes of one photo
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from featkit.core.fileio import read_json, write_json
from featkit.core.outputs import output_dir
from featkit.core.schema import ClassEntry
from featkit.data.layouts import Dataset, detect
from featkit.data.scan import scan_dataset
from featkit.data.source import Source, open_source
from featkit.data.splits import MANIFEST_FORMAT, SplitConfig, make_manifest, read_manifest, write_manifest

__all__ = ["Prepared", "prepare", "open_run_photos", "check_dataset", "dataset_dir", "SplitConfig", "Dataset"]


@dataclass
class Prepared:
    dataset: Dataset
    fingerprint: str
    dir: Path
    scan: pd.DataFrame
    manifest: pd.DataFrame
    manifest_path: Path
    split: SplitConfig
    warnings: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[ClassEntry]:
        return list(self.dataset.classes)

    @property
    def manifest_sha1(self) -> str:
        return hashlib.sha1(self.manifest_path.read_bytes()).hexdigest()

    def read(self, path: str) -> bytes:
        return self.dataset.source.read(path)

    @property
    def key(self) -> str:
        """Identifies the dataset content and its split: what a feature cache depends on."""
        return f"{self.dir.name}-{self.split.key}"


def dataset_dir(ds: Dataset, fingerprint: str, cache_dir: str | Path) -> Path:
    stem = Path(ds.source.path).name.split(".")[0] or "dataset"
    return Path(cache_dir) / "datasets" / f"{stem}-{fingerprint[:12]}"


def prepare(
    path: str | Path,
    cache_dir: str | Path = "cache",
    split: SplitConfig | None = None,
    quiet: bool = False,
    rescan: bool = False,
    exclude: tuple[str | Path, ...] = (),
) -> Prepared:
    """Detect the layout, scan every photo once, and write (or reuse) the split manifest.

    `rescan`: decode every photo again even if a scan of the same files is cached; the manifests are rebuilt when
    what the scan found changed. `exclude`: more featkit output folders (--reports) never read as photos.
    """
    split = split or SplitConfig()
    source = open_source(path, cache_dir, exclude=exclude)
    cache_dir = output_dir(cache_dir, "--cache")  # once the dataset is found: a refused command leaves no folder
    ds = detect(source)
    fp = source.fingerprint()
    d = dataset_dir(ds, fp, cache_dir)
    scan = scan_dataset(ds, d, quiet=quiet, rescan=rescan)
    stem = f"manifest-v{MANIFEST_FORMAT}-{split.key}"
    manifest_path, warnings_path = d / f"{stem}.csv", d / f"{stem}.warnings.json"
    if manifest_path.exists() and warnings_path.exists():
        manifest = read_manifest(manifest_path, ds, scan)
        warnings = read_json(warnings_path, list, fix="delete it and run the command again (featkit writes it anew)")
    else:
        manifest, warnings = make_manifest(ds, scan, split)
        write_json(warnings_path, warnings)
        write_manifest(manifest, manifest_path)  # written last: its presence means both are complete
    return Prepared(ds, fp, d, scan, manifest, manifest_path, split, list(ds.warnings) + list(warnings))


def open_run_photos(data: str | Path, manifest: str | Path) -> tuple[Source, pd.DataFrame]:
    """(dataset source, split manifest) of the photos a run recorded, without scanning the dataset again. A .tar
    dataset is unpacked under the cache folder that holds the manifest (<cache>/datasets/<name>/manifest...)."""
    manifest = Path(manifest)
    return open_source(data, manifest.parents[2]), read_manifest(manifest)


def check_dataset(path: str | Path, cache_dir: str | Path = "cache", quiet: bool = False) -> dict:
    """Decode every photo of the dataset afresh (never trusting the cached scan, which it then updates) and list
    those that fail: {"path", "photos", "unreadable": [{"path" (inside the dataset), "file" (as the user finds it),
    "error"}]}."""
    source = open_source(path, cache_dir, exclude=(Path("reports"),))
    cache_dir = output_dir(cache_dir, "--cache")
    ds = detect(source)
    scan = scan_dataset(ds, dataset_dir(ds, source.fingerprint(), cache_dir), quiet=quiet, rescan=True)
    bad = scan[scan["error"] != ""]
    # files that could not even be opened while listing the folder (a dangling symlink, a symlink loop): photos
    # that fail too, counted and listed with the decoded ones
    skipped = [(p, why) for p, why in getattr(source, "skipped", []) if not str(p).endswith("/")]
    return {
        "path": str(path),
        "photos": len(scan) + len(skipped),
        "unreadable": [{"path": r.path, "file": source.display(r.path), "error": r.error} for r in bad.itertuples()]
        + [{"path": p, "file": source.display(p), "error": why} for p, why in skipped],
    }
