"""The run folder shared by head runs and CNN runs: reports/runs/<run-id>/.

Files in a run folder:
  config.json            what was run: {"kind": "head" | "cnn", "name", "backbone" (spec dict or null), "size",
                         "augment", "dataset" (fingerprint), "seed", ...}; free-form beyond these keys
  classes.json           the ordered class list [{"index", "id", "name"}, ...]
  metrics.json           {"top1", "top5", "fit_seconds", "extract_seconds", ...} on the test split
  history.csv            per-epoch / per-iteration history, where there is one
  test_predictions.npz   probs (N, C) float32, labels (N,) int, image_ids (N,) str: what `evaluate` scores
  model.joblib | model.keras   the fitted model
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DamagedFileError, FeatkitError
from .fileio import atomic_path, load_npz, read_json, write_json
from .outputs import output_dir

DEFAULT_REPORTS = Path("reports")
REDO = "re-run the command that made the run (or delete the run folder)"


def runs_dir(reports: str | Path = DEFAULT_REPORTS) -> Path:
    return Path(reports) / "runs"


@dataclass
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    def write_json(self, name: str, obj: Any) -> None:
        write_json(self.path / name, obj)

    def read_json(self, name: str, kind: type | None = None) -> Any:
        f = self.path / name
        if not f.exists():
            raise FeatkitError(f"{f} is missing: the run did not finish; re-run the command that made it.")
        return read_json(f, kind, fix=REDO)

    @property
    def config(self) -> dict:
        return self.read_json("config.json", dict)

    @property
    def classes(self) -> list[dict]:
        classes = self.read_json("classes.json", list)
        if not classes or not all(isinstance(c, dict) and "id" in c and "name" in c for c in classes):
            raise DamagedFileError(self.path / "classes.json", f"{self.path / 'classes.json'} is damaged (expected a "
                                   f"list of {{\"index\", \"id\", \"name\"}} objects): {REDO}.")
        return classes

    @property
    def metrics(self) -> dict:
        f = self.path / "metrics.json"
        return read_json(f, dict, fix=REDO) if f.exists() else {}

    def check_n_classes(self, n: int, what: str) -> None:
        """Refuse a model or predictions whose class count differs from classes.json (a file from another run)."""
        m = len(self.classes)
        if n != m:
            raise FeatkitError(f"{what} in run {self.id} gives {n} classes but {self.path / 'classes.json'} lists {m}: "
                               f"a file of another run was put in {self.path}; {REDO}.")

    def save_predictions(self, probs: np.ndarray, labels: np.ndarray, image_ids, name: str = "test") -> None:
        with atomic_path(self.path / f"{name}_predictions.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, probs=np.asarray(probs, np.float32), labels=np.asarray(labels),
                                    image_ids=np.asarray(image_ids, dtype=str))

    def load_predictions(self, name: str = "test") -> dict[str, np.ndarray]:
        f = self.path / f"{name}_predictions.npz"
        if not f.exists():
            raise FeatkitError(f"{f} is missing: the run did not finish; re-run the command that made it.")
        pred = load_npz(f, ("probs", "labels", "image_ids"), fix=REDO)
        probs, labels = pred["probs"], pred["labels"]
        if probs.ndim != 2 or labels.ndim != 1 or len(labels) != len(probs) or len(pred["image_ids"]) != len(probs) \
                or not np.issubdtype(labels.dtype, np.integer) or not np.issubdtype(probs.dtype, np.floating):
            raise DamagedFileError(f, f"{f} is damaged (probs {probs.dtype} {probs.shape}, labels {labels.dtype} "
                                      f"{labels.shape}): {REDO}.")
        self.check_n_classes(probs.shape[1], f.name)
        if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
            raise DamagedFileError(f, f"{f} is damaged (labels outside 0..{probs.shape[1] - 1}): {REDO}.")
        return pred

    @property
    def complete(self) -> bool:
        return (self.path / "metrics.json").exists()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:60]


def new_run(name: str, reports: str | Path = DEFAULT_REPORTS) -> Run:
    """Create reports/runs/<YYYYmmdd-HHMMSS>-<name>/ (a numeric suffix keeps ids unique)."""
    output_dir(reports, "--reports")
    base = runs_dir(reports)
    base.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%d-%H%M%S") + "-" + _slug(name)
    for i in range(1000):
        path = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            path.mkdir()
            return Run(path)
        except FileExistsError:
            continue
    raise FeatkitError(f"could not create a run folder under {base}: too many runs named {stem}")


def load_run(ref: str | Path, reports: str | Path = DEFAULT_REPORTS) -> Run:
    """A run by folder path, by id (or a unique part of one) under reports/runs/, or "latest"."""
    if str(ref) == "latest":
        runs = list_runs(reports)
        if not runs:
            raise FeatkitError(f"no finished runs in {runs_dir(reports)}: fit a head or train a CNN first.")
        return runs[0]
    p = Path(ref)
    if p.is_dir() and (p / "config.json").exists():
        return Run(p)
    candidates = [d for d in runs_dir(reports).glob("*") if d.is_dir() and (d.name == str(ref) or str(ref) in d.name)]
    exact = [d for d in candidates if d.name == str(ref)]
    if exact:
        return Run(exact[0])
    if len(candidates) == 1:
        return Run(candidates[0])
    if not candidates:
        raise FeatkitError(f"no run {ref!r}: give a run folder or an id from `featkit report` (runs live in {runs_dir(reports)}).")
    names = ", ".join(sorted(d.name for d in candidates)[:5])
    raise FeatkitError(f"run {ref!r} is ambiguous ({names}, ...): give the full id.")


def list_runs(reports: str | Path = DEFAULT_REPORTS) -> list[Run]:
    """Finished runs, newest first."""
    base = runs_dir(reports)
    if not base.exists():
        return []
    runs = [Run(d) for d in base.iterdir() if d.is_dir() and (d / "config.json").exists()]
    return sorted((r for r in runs if r.complete), key=lambda r: r.id, reverse=True)
