"""The run folder shared by head, CNN and ensemble runs: reports/runs/<run-id>/, and the one way to finish a run.

Files in a run folder:
  config.json            what was run: a `featkit.core.schema.RunConfig`
  classes.json           the ordered class list [{"index", "id", "name"}, ...]
  test_predictions.npz   probs (N, C) float32, labels (N,) int, image_ids (N,) str: what every score is computed from
  history.csv            per-epoch / per-iteration history, where there is one
  per_class.csv, confusion.csv, confusion.png, confused_pairs.csv   the scoring files
  valid_predictions.npz  the same on the validation split, held out (head and ensemble runs): what sweeps select on
  metrics.json           a `featkit.core.schema.RunMetrics`; written last, so its presence marks the run complete
  model.joblib | model.keras, head.json   the fitted model

`finish(run, probs, labels, ids, history, extra)` writes everything from the predictions on, for heads and CNNs
alike; `write_scores` re-scores a run's saved predictions (what `featkit evaluate` does).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import atomic_path, load_npz, read_json, write_json
from featkit.core.outputs import output_dir
from featkit.core.schema import ClassEntry, RunConfig, RunMetrics, classes_to_list, read_classes
from featkit.core.tables import write_csv
from featkit.runs.metrics import class_names, confusion_matrix, most_confused_pairs, per_class_accuracy, score

DEFAULT_REPORTS = Path("reports")
SCORE_FILES = ("per_class.csv", "confusion.csv", "confusion.png", "confused_pairs.csv")
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
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.read_json("config.json"), where=str(self.path / "config.json"))

    def write_config(self, config: RunConfig) -> None:
        self.write_json("config.json", config.to_dict())

    @property
    def classes(self) -> list[ClassEntry]:
        f = self.path / "classes.json"
        classes = self.read_json("classes.json", list)
        damaged = f'{f} is damaged (expected a list of {{"index", "id", "name"}} objects): {REDO}.'
        if not classes or not all(isinstance(c, dict) and "id" in c and "name" in c for c in classes):
            raise DamagedFileError(f, damaged)
        try:
            return read_classes(classes, str(f))
        except FeatkitError:
            raise DamagedFileError(f, damaged) from None

    def write_classes(self, classes: Sequence[ClassEntry | Mapping[str, Any]]) -> None:
        """classes.json: the ordered class list."""
        self.write_json("classes.json", classes_to_list(classes))

    @property
    def metrics(self) -> RunMetrics:
        return RunMetrics.from_dict(self.read_json("metrics.json"), where=str(self.path / "metrics.json"))

    def check_n_classes(self, n: int, what: str) -> None:
        """Refuse a model or predictions whose class count differs from classes.json (a file from another run)."""
        m = len(self.classes)
        if n != m:
            raise FeatkitError(
                f"{what} in run {self.id} gives {n} classes but {self.path / 'classes.json'} lists {m}: "
                f"a file of another run was put in {self.path}; {REDO}."
            )

    def save_predictions(self, probs: np.ndarray, labels: np.ndarray, image_ids, name: str = "test") -> None:
        with atomic_path(self.path / f"{name}_predictions.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    probs=np.asarray(probs, np.float32),
                    labels=np.asarray(labels),
                    image_ids=np.asarray(image_ids, dtype=str),
                )

    def load_predictions(self, name: str = "test") -> dict[str, np.ndarray]:
        f = self.path / f"{name}_predictions.npz"
        if not f.exists():
            raise FeatkitError(f"{f} is missing: the run did not finish; re-run the command that made it.")
        pred = load_npz(f, ("probs", "labels", "image_ids"), fix=REDO)
        probs, labels = pred["probs"], pred["labels"]
        if (
            probs.ndim != 2
            or labels.ndim != 1
            or len(labels) != len(probs)
            or len(pred["image_ids"]) != len(probs)
            or not np.issubdtype(labels.dtype, np.integer)
            or not np.issubdtype(probs.dtype, np.floating)
        ):
            raise DamagedFileError(
                f, f"{f} is damaged (probs {probs.dtype} {probs.shape}, labels {labels.dtype} {labels.shape}): {REDO}."
            )
        self.check_n_classes(probs.shape[1], f.name)
        if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
            raise DamagedFileError(f, f"{f} is damaged (labels outside 0..{probs.shape[1] - 1}): {REDO}.")
        return pred

    @property
    def complete(self) -> bool:
        return (self.path / "metrics.json").exists()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()[:60]


def new_run(name: str, reports: str | Path = DEFAULT_REPORTS, under: str = "runs") -> Run:
    """Create reports/runs/<YYYYmmdd-HHMMSS>-<name>/ (a numeric suffix keeps ids unique); `under` names another
    folder of reports/ (e.g. "sweeps")."""
    output_dir(reports, "--reports")
    base = Path(reports) / under
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


def load_run(ref: str | Path | Run, reports: str | Path = DEFAULT_REPORTS, kinds: Sequence[str] | None = None) -> Run:
    """A run by folder path, by id (or a unique part of one) under reports/runs/, or "latest": the newest finished
    run whose kind is among `kinds` (None: any kind), i.e. the newest run the calling command can use."""
    if isinstance(ref, Run):
        return ref
    if str(ref) == "latest":
        for run in list_runs(reports):
            if kinds is None:
                return run
            try:
                kind = run.config.kind
            except (OSError, FeatkitError):  # deleted or damaged meanwhile: not a run anyone can use
                continue
            if kind in kinds:
                return run
        what = "finished" if kinds is None else " or ".join(kinds)
        raise FeatkitError(
            f"no {what} run in {runs_dir(reports)}: fit a head or train a CNN first "
            "(`featkit runs` lists the runs there)."
        )
    p = Path(ref)
    if p.is_dir() and (p / "config.json").exists():
        return Run(p)
    base = runs_dir(reports)
    candidates = [d for d in base.glob("*") if d.is_dir() and (d.name == str(ref) or str(ref) in d.name)]
    exact = [d for d in candidates if d.name == str(ref)]
    if exact:
        return Run(exact[0])
    if len(candidates) == 1:
        return Run(candidates[0])
    if not candidates:
        raise FeatkitError(f"no run {ref!r}: give a run folder or an id from `featkit report` (runs live in {base}).")
    names = ", ".join(sorted(d.name for d in candidates)[:5])
    raise FeatkitError(f"run {ref!r} is ambiguous ({names}, ...): give the full id.")


def list_runs(reports: str | Path = DEFAULT_REPORTS) -> list[Run]:
    """Finished runs, newest first."""
    base = runs_dir(reports)
    if not base.exists():
        return []
    runs = [Run(d) for d in base.iterdir() if d.is_dir() and (d / "config.json").exists()]
    return sorted((r for r in runs if r.complete), key=lambda r: r.id, reverse=True)


# ---- finishing a run -----------------------------------------------------------------------------------


def finish(
    run: Run,
    probs: np.ndarray,
    labels: np.ndarray,
    image_ids: Sequence[str] | np.ndarray,
    history: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    ks: Iterable[int] = (1, 5),
    temperature: float | None = None,
    raw_probs: np.ndarray | None = None,
) -> RunMetrics:
    """The one way a run ends, for head, CNN and ensemble runs alike: save the test predictions, the history
    (when given), the calibration report (with `temperature`: the probabilities before it, `raw_probs`, against
    `probs` after it: reliability.csv/.png and metrics `temperature`, `brier`, `ece`, `calibration`), the scoring
    files, then metrics.json (scores + `extra`: RunMetrics fields such as fit_seconds, valid_top1, best_epoch, and
    any other fact), which marks the run complete; then, when tracking is on, the finished folder is logged to
    MLflow (featkit.runs.tracking). config.json, classes.json and the model file must already be in the folder."""
    extra = dict(extra or {})
    if temperature is not None:
        from featkit.runs.calibration import calibration_report

        before = probs if raw_probs is None else raw_probs
        cal = calibration_report(before, probs, labels, temperature, run.path, title=run.id)
        extra.update(temperature=temperature, brier=cal["after"]["brier"], ece=cal["after"]["ece"], calibration=cal)
    run.save_predictions(probs, labels, image_ids)
    if history:
        import pandas as pd

        write_csv(run.path / "history.csv", pd.DataFrame(list(history)))
    metrics = write_scores(run, ks=ks, extra=extra)
    from featkit.runs.tracking import track_finished

    track_finished(run)  # with --track or MLFLOW_TRACKING_URI: a copy of the finished folder in MLflow
    return metrics


def write_scores(
    run: Run, ks: Iterable[int] = (1, 5), extra: Mapping[str, Any] | None = None, plot: bool = True
) -> RunMetrics:
    """Score the run's test_predictions.npz: per_class.csv, confusion.csv (+ .png), confused_pairs.csv, then
    metrics.json last (what is there already, plus `extra`, plus the scores)."""
    import pandas as pd

    from featkit.core.plots import plot_confusion

    pred = run.load_predictions("test")
    classes = run.classes
    probs, labels = pred["probs"], pred["labels"].astype(np.int64)
    ks = sorted(set(int(k) for k in ks) | {1, 5})
    scores = score(probs, labels, classes, ks)

    n_classes = len(classes)
    names = class_names(classes, n_classes)
    preds = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    n, _ = per_class_accuracy(probs, labels, 1)
    table = pd.DataFrame(
        {
            "index": [c.index for c in classes],
            "id": [c.id for c in classes],
            "name": names,
            "n": n,
        }
    )
    for k in ks:
        table[f"top{k}"] = np.round(per_class_accuracy(probs, labels, k)[1], 6)
    write_csv(run.path / "per_class.csv", table)
    cm = confusion_matrix(labels, preds, n_classes)
    write_csv(
        run.path / "confusion.csv",
        pd.DataFrame(cm, index=pd.Index(names, name="true \\ predicted"), columns=names),
        index=True,
    )
    write_csv(run.path / "confused_pairs.csv", most_confused_pairs(cm, classes, top=20))
    if plot:
        plot_confusion(cm, names, run.path / "confusion.png", title=f"{run.id}: top-1 {scores.top1:.3f}")

    before = run.read_json("metrics.json") if run.complete else {}
    before = {k: v for k, v in before.items() if k != "schema"} if isinstance(before, dict) else {}
    metrics = RunMetrics.from_dict(
        {**before, **(extra or {}), **scores.to_dict()}, where=str(run.path / "metrics.json")
    )
    run.write_json("metrics.json", metrics.to_dict())
    return metrics


__all__ = [
    "Run",
    "RunConfig",
    "RunMetrics",
    "DEFAULT_REPORTS",
    "SCORE_FILES",
    "runs_dir",
    "new_run",
    "load_run",
    "list_runs",
    "finish",
    "write_scores",
]
