"""`featkit curve`: how many photos a dish needs. The head refitted on stratified, seeded subsets of the training
photos (k per class), validation and test unchanged, top-1/top-5 per point (mean and spread over repeats).

    result = learning_curve("cache/.../mobilenet-v2-128-plain.h5", head="logreg", per_class=[1, 2, 5, 10, None])
    result.points[-1].top1_mean      # the `all` point: every training photo, the same fit as `featkit fit-head`
    result.reach90                   # photos per class at which the curve first reaches 90 % of that score

Every fit goes through `featkit.heads.search.fit_selected`, as `fit-head` does: the head's settings searched on
the validation split (the default grid, or the values given), then by default NOT refitted on train + valid
(`refit=False`), so a point's photos per class are all the photos its head saw; with `refit=True` each point is
refitted on its subset + the validation photos, and the `all` point equals a plain `fit-head` run.

Written to reports/curves/<id>/: curve.csv (one row per point), curve.json (every repeat's scores, the settings
chosen, the 90 % point; written last, so its presence marks the curve complete), curve.png (log x axis), and with
`by_class` curve_by_class.csv / .png (per-class top-1 of the 10 hardest dishes at every point).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.runs.store import DEFAULT_REPORTS

DEFAULT_PER_CLASS = "1,2,5,10,20,50,all"
HARDEST = 10  # dishes shown by --by class
REACH = 0.9  # the curve's summary: photos per class at 90 % of the full-data top-1
# columns of curve_table that are scores (printed as percentages)
CURVE_SCORES = ("top1_mean", "top1_std", "top1_min", "top1_max", "top5_mean", "top5_std")


@dataclass
class CurvePoint:
    """One point of the curve: `per_class` photos per class (None: all of them), over `repeats` seeded draws."""

    per_class: int | None
    n_train: int  # training rows of each draw (capped classes give all theirs)
    top1: list[float]
    top5: list[float]
    capped: list[str] = field(default_factory=list)  # classes with fewer training photos than per_class
    chosen: list[dict] = field(default_factory=list)  # the settings the search chose, per repeat
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return "all" if self.per_class is None else str(self.per_class)

    @property
    def top1_mean(self) -> float:
        return float(np.mean(self.top1))

    @property
    def top1_std(self) -> float:
        return float(np.std(self.top1))

    @property
    def top5_mean(self) -> float:
        return float(np.mean(self.top5))

    @property
    def top5_std(self) -> float:
        return float(np.std(self.top5))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "label": self.label,
            "top1_mean": self.top1_mean,
            "top1_std": self.top1_std,
            "top5_mean": self.top5_mean,
            "top5_std": self.top5_std,
        }


@dataclass
class CurveResult:
    id: str
    path: Path
    head: str
    points: list[CurvePoint]
    full_top1: float | None  # the `all` point's mean top-1 (None without an `all` point)
    reach90: int | None  # photos per class at which the mean top-1 first reaches 90 % of full_top1
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "head": self.head,
            "full_top1": self.full_top1,
            "reach90": self.reach90,
            "points": [p.to_dict() for p in self.points],
            **self.info,
        }


def parse_per_class(text: str) -> list[int | None]:
    """ "1,2,5,all" -> [1, 2, 5, None], sorted, without repeats, `all` last. Counts must be whole numbers >= 1."""
    out: list[int | None] = []
    for item in (t.strip().lower() for t in str(text).split(",")):
        if not item:
            continue
        if item == "all":
            out.append(None)
            continue
        try:
            k = int(item)
        except ValueError:
            k = 0
        if k < 1 or str(k) != item.lstrip("+"):
            raise FeatkitError(
                f"--per-class {item}: give whole numbers of photos per class, 1 or more, or all (e.g. 1,2,5,10,all)."
            )
        out.append(k)
    if not out:
        raise FeatkitError("--per-class is empty: give counts of photos per class, e.g. 1,2,5,10,all.")
    counts = sorted({k for k in out if k is not None})
    return [*counts, *([None] if None in out else [])]


def stratified_subset(labels: np.ndarray, per_class: int | None, seed: int, repeat: int) -> np.ndarray:
    """Row indices (ascending) of `per_class` rows of every class of `labels` (all of a class's rows when it has
    fewer; every row for None), drawn with a generator seeded by (seed, per_class, repeat)."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng([int(seed), int(per_class), int(repeat)])
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def learning_curve(
    cache_path: str | Path | Sequence[str | Path],
    head: str = "logreg",
    params: Mapping[str, Any] | None = None,
    per_class: Sequence[int | None] = (1, 2, 5, 10, 20, 50, None),
    repeats: int = 3,
    seed: int = 0,
    by_class: bool = False,
    refit: bool = False,
    reports: str | Path = DEFAULT_REPORTS,
    quiet: bool = False,
    warn: Callable[[str], None] | None = None,
) -> CurveResult:
    """Fit `head` on stratified subsets of the training rows of the cache(s) and write reports/curves/<id>/."""
    from featkit.core.fileio import write_json
    from featkit.core.progress import Progress
    from featkit.features.combine import cache_paths, describe_cache, read_features
    from featkit.heads import head_params
    from featkit.heads.search import fit_selected
    from featkit.runs.metrics import per_class_accuracy, topk_accuracy
    from featkit.runs.store import new_run

    say = warn or _warn
    if repeats < 1:
        raise FeatkitError(f"--repeats should be 1 or more; got {repeats}.")
    if not per_class:
        raise FeatkitError("--per-class is empty: give counts of photos per class, e.g. 1,2,5,10,all.")
    head_params(head)  # an unknown head: one line, before reading anything
    paths = cache_paths(cache_path)
    data = read_features(paths)
    meta = data.meta
    train, valid, test = data.subset("train"), data.subset("valid"), data.subset("test")
    if len(train) == 0 or len(test) == 0:
        raise FeatkitError(
            f"{paths[0]} has {len(train)} train and {len(test)} test rows: a curve needs both; "
            "extract the cache from a dataset with train and test splits."
        )
    n_classes = len(meta.classes) or int(max(data.labels.max(), 0)) + 1
    names = [c.name for c in meta.classes] or [str(i) for i in range(n_classes)]
    counts = np.bincount(train.labels.astype(np.int64), minlength=n_classes)
    missing = [names[i] for i in range(n_classes) if counts[i] == 0]
    if missing:
        raise FeatkitError(
            f"{paths[0]}: {len(missing)} classes have no training photo ({', '.join(missing[:5])}): a curve "
            "draws photos of every class; extract a cache whose train split covers every class."
        )
    has_valid = len(valid) > 0
    if not has_valid:
        say(f"{paths[0]} has no valid split: the head's defaults are used at every point (no search).")

    points_wanted = feasible_points(per_class, counts, names, say)
    params = dict(params or {})
    if "seed" in head_params(head) and "seed" not in params:
        params["seed"] = seed

    curve_dir = new_run(f"{meta.backbone.name}-{meta.size}-{head}-curve", reports, under="curves")
    t_start = time.perf_counter()
    fits = sum(1 if k is None else repeats for k in points_wanted)
    if not quiet:
        print(
            f"curve of {head} on {len(train):,} train rows x {train.features.shape[1]} features, {n_classes} classes: "
            f"{len(points_wanted)} points, {fits} fits...",
            file=sys.stderr,
            flush=True,
        )
    points: list[CurvePoint] = []
    class_top1: dict[str, list[np.ndarray]] = {}  # per point: per-class top-1 of every repeat
    with Progress(fits, "curve", unit="fits", quiet=quiet, every=0.0) as bar:
        for k in points_wanted:
            t0 = time.perf_counter()
            capped = [] if k is None else [names[i] for i in range(n_classes) if counts[i] < k]
            point = CurvePoint(k, 0, [], [], capped)
            for r in range(1 if k is None else repeats):  # `all` is the same draw every time: one fit
                idx = stratified_subset(train.labels, k, seed, r)
                model, sel = fit_selected(
                    head,
                    train.features[idx],
                    train.labels[idx],
                    valid.features if has_valid else None,
                    valid.labels if has_valid else None,
                    n_classes=n_classes,
                    params=params,
                    refit=refit,
                )
                probs = np.asarray(model.predict_proba(test.features), np.float32)  # as a run saves them
                acc = topk_accuracy(probs, test.labels, (1, 5))
                point.n_train = int(len(idx))
                point.top1.append(acc[1])
                point.top5.append(acc[5])
                point.chosen.append(dict(sel.candidates[sel.chosen].params))
                class_top1.setdefault(point.label, []).append(per_class_accuracy(probs, test.labels, 1)[1])
                bar.update(1)
            point.seconds = round(time.perf_counter() - t0, 3)
            points.append(point)

    full = next((p for p in points if p.per_class is None), None)
    full_top1 = full.top1_mean if full else None
    reach = reach_point(points, full_top1)
    info = {
        "dataset": meta.dataset,
        "fingerprint": meta.fingerprint,
        "backbone": meta.backbone.name,
        "size": meta.size,
        "n_classes": n_classes,
        "n_train": int(len(train)),
        "n_valid": int(len(valid)),
        "n_test": int(len(test)),
        "train_per_class": {"min": int(counts.min()), "max": int(counts.max())},
        "params": {k: v for k, v in params.items()},
        "repeats": repeats,
        "seed": seed,
        "refit": refit,
        "selection": "valid" if has_valid else "none",
        "caches": [describe_cache(p, data) for p in paths] if len(paths) == 1 else [str(p) for p in paths],
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    result = CurveResult(curve_dir.id, curve_dir.path, head, points, full_top1, reach, info)
    _write_table(result)
    plot_curve(result, curve_dir.path / "curve.png")
    if by_class:
        result.info["by_class"] = _write_by_class(result, class_top1, names, curve_dir.path)
    write_json(curve_dir.path / "curve.json", result.to_dict())  # last: marks the curve complete
    from featkit.runs import tracking

    if tracking.wanted():
        track_curve(result, reports)
    return result


def feasible_points(
    per_class: Sequence[int | None], counts: np.ndarray, names: list[str], say: Callable[[str], None]
) -> list[int | None]:
    """The points that differ from `all`: a count at or above every class's photos is left out (said); one
    above the smallest class keeps all the photos of the smaller classes (said, naming them)."""
    out: list[int | None] = []
    for k in per_class:
        if k is None:
            out.append(None)
            continue
        if k < 1:
            raise FeatkitError(f"--per-class {k}: give whole numbers of photos per class, 1 or more, or all.")
        if k >= counts.max():
            say(
                f"--per-class {k}: every class has at most {int(counts.max())} training photos, so this point is "
                "all of them; left out (see the `all` point)."
            )
            continue
        small = [i for i in np.argsort(counts, kind="stable") if counts[i] < k]
        if small:
            shown = ", ".join(f"{names[i]} ({int(counts[i])})" for i in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            say(
                f"--per-class {k} is above the smallest class: {len(small)} classes are capped at all their training "
                f"photos: {shown}{more}."
            )
        out.append(k)
    if not out:
        raise FeatkitError("no --per-class point is left: give counts below the classes' training photos, or all.")
    return out


def reach_point(points: Sequence[CurvePoint], full_top1: float | None, share: float = REACH) -> int | None:
    """The smallest measured photos-per-class whose mean top-1 is at least `share` of `full_top1` (None when no
    counted point reaches it, or without a full-data point)."""
    if full_top1 is None:
        return None
    for p in points:
        if p.per_class is not None and p.top1_mean >= share * full_top1:
            return p.per_class
    return None


def _write_table(result: CurveResult) -> None:
    from featkit.core.tables import write_csv

    write_csv(result.path / "curve.csv", curve_table(result.points))


def curve_table(points: Sequence[CurvePoint]):
    """One row per point: per_class, n_train, repeats, top-1/top-5 mean, spread (std) and range, capped classes."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "per_class": p.label,
                "n_train": p.n_train,
                "repeats": len(p.top1),
                "top1_mean": round(p.top1_mean, 6),
                "top1_std": round(p.top1_std, 6),
                "top1_min": round(min(p.top1), 6),
                "top1_max": round(max(p.top1), 6),
                "top5_mean": round(p.top5_mean, 6),
                "top5_std": round(p.top5_std, 6),
                "n_capped": len(p.capped),
                "seconds": p.seconds,
            }
            for p in points
        ]
    )


def _x(points: Sequence[CurvePoint], n_classes: int) -> list[float]:
    """x of each point: its photos per class; `all` at the mean training photos per class."""
    return [float(p.per_class) if p.per_class is not None else p.n_train / max(n_classes, 1) for p in points]


def plot_curve(result: CurveResult, path: Path) -> Path:
    from featkit.core.plots import new_figure, percent_axis, save_png

    fig, (ax,) = new_figure(7.0, 4.5)
    x = _x(result.points, int(result.info["n_classes"]))
    for key, label, marker in (("top1", "top-1", "o"), ("top5", "top-5", "s")):
        mean = [getattr(p, f"{key}_mean") for p in result.points]
        std = [getattr(p, f"{key}_std") for p in result.points]
        ax.errorbar(x, mean, yerr=std, marker=marker, capsize=3, label=label)
    for xi, p in zip(x, result.points, strict=True):
        if p.per_class is None:
            ax.annotate("all", (xi, p.top1_mean), textcoords="offset points", xytext=(4, -12))
    if result.full_top1 is not None:
        ax.axhline(REACH * result.full_top1, color="grey", linestyle=":", label="90 % of full-data top-1")
    ax.set_xscale("log")
    ax.set_xlabel("training photos per class (log scale)")
    ax.set_ylabel("test accuracy")
    percent_axis(ax)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    reach = f", 90 % at {result.reach90}/class" if result.reach90 else ""
    ax.set_title(f"{result.head} on {result.info['backbone']}-{result.info['size']}{reach}", fontsize=10)
    return save_png(fig, path)


def _write_by_class(result: CurveResult, class_top1: dict[str, list[np.ndarray]], names: list[str], folder: Path):
    """Per-class top-1 (mean over repeats) at every point for the HARDEST dishes (lowest at the last point)."""
    import pandas as pd

    from featkit.core.plots import new_figure, percent_axis, save_png
    from featkit.core.tables import write_csv

    labels = [p.label for p in result.points]
    means = {lab: np.nanmean(np.stack(class_top1[lab]), axis=0) for lab in labels}
    last = means[labels[-1]]
    hardest = [int(i) for i in np.argsort(np.nan_to_num(last, nan=np.inf), kind="stable")[:HARDEST]]
    rows = [
        {"class": names[i], "per_class": lab, "top1_mean": round(float(means[lab][i]), 6)}
        for i in hardest
        for lab in labels
    ]
    write_csv(folder / "curve_by_class.csv", pd.DataFrame(rows))
    fig, (ax,) = new_figure(7.5, 5.0)
    x = _x(result.points, int(result.info["n_classes"]))
    for i in hardest:
        ax.plot(x, [means[lab][i] for lab in labels], marker=".", label=names[i])
    ax.set_xscale("log")
    ax.set_xlabel("training photos per class (log scale)")
    ax.set_ylabel("test top-1 of the class")
    percent_axis(ax)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.set_title(f"the {len(hardest)} hardest classes (lowest top-1 at {labels[-1]})", fontsize=10)
    save_png(fig, folder / "curve_by_class.png")
    return [names[i] for i in hardest]


def track_curve(result: CurveResult, reports: str | Path) -> str | None:
    """The curve as one MLflow run: its settings as params, top-1/top-5 mean per point as metric series (step =
    photos per class; `all` at the mean per class), the 90 % point, and its files as artifacts."""
    from featkit.runs import tracking

    x = _x(result.points, int(result.info["n_classes"]))
    steps = [int(round(v)) for v in x]
    entry = tracking.Entry(
        name=result.id,
        params={
            "kind": "curve",
            "head": result.head,
            "per_class": ",".join(p.label for p in result.points),
            "repeats": result.info["repeats"],
            "seed": result.info["seed"],
            "refit": result.info["refit"],
            "backbone": result.info["backbone"],
            "size": result.info["size"],
            **{f"params.{k}": v for k, v in result.info["params"].items()},
        },
        metrics={
            k: float(v)
            for k, v in (("full_top1", result.full_top1), ("reach90_per_class", result.reach90))
            if v is not None
        },
        series={
            "top1_mean": [(s, p.top1_mean) for s, p in zip(steps, result.points, strict=True)],
            "top5_mean": [(s, p.top5_mean) for s, p in zip(steps, result.points, strict=True)],
            "top1_std": [(s, p.top1_std) for s, p in zip(steps, result.points, strict=True)],
        },
        tags={
            "featkit.curve_id": result.id,
            "featkit.kind": "curve",
            "featkit.folder": str(result.path.resolve()),
            "dataset": str(result.info.get("dataset") or ""),
            "dataset_fingerprint": str(result.info.get("fingerprint") or ""),
        },
        artifacts=[
            result.path / f
            for f in ("curve.csv", "curve.json", "curve.png", "curve_by_class.csv", "curve_by_class.png")
            if (result.path / f).is_file()
        ],
    )
    entry.params = {k: v if isinstance(v, str) else str(v) for k, v in entry.params.items()}
    return tracking.log_entry(entry, reports)


def list_curves(reports: str | Path = DEFAULT_REPORTS) -> list[dict]:
    """The finished curves under reports/curves/ (their curve.json), newest first; unreadable ones are skipped."""
    from featkit.core.fileio import read_json

    base = Path(reports) / "curves"
    out = []
    for folder in sorted((d for d in base.iterdir() if d.is_dir()), reverse=True) if base.is_dir() else []:
        if not (folder / "curve.json").exists():
            continue
        try:
            data = read_json(folder / "curve.json", dict)
        except FeatkitError:
            continue
        if isinstance(data.get("points"), list):
            out.append({**data, "folder": f"curves/{folder.name}"})
    return out


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


__all__ = [
    "CurvePoint",
    "CurveResult",
    "DEFAULT_PER_CLASS",
    "CURVE_SCORES",
    "parse_per_class",
    "stratified_subset",
    "learning_curve",
    "reach_point",
    "feasible_points",
    "curve_table",
    "plot_curve",
    "track_curve",
    "list_curves",
]
