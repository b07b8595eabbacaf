"""`featkit predict`: top-k dish names for new photos with any run (head, multi-cache, mirrored view, ensemble, CNN),
through the same backbones, decoding and calibration as the run (the plan: featkit.apps.run_model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featkit.apps.run_model import RunModel, load_plan, resolve_run
from featkit.core.errors import FeatkitError
from featkit.data.layouts import is_image, natural_key
from featkit.runs.store import DEFAULT_REPORTS, Run


def expand_photos(paths: list[Path]) -> list[Path]:
    """Files as given; folders become the photos inside them (recursively, natural order)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted((f for f in p.rglob("*") if f.is_file() and is_image(f.name)), key=lambda f: natural_key(str(f)))
            )
        elif p.exists():
            out.append(p)
        else:
            raise FeatkitError(f"{p} does not exist: give photo files or folders of photos.")
    return out


def predict(
    run_ref: str | Path,
    photos: list[Path],
    top: int = 5,
    reports: str | Path = DEFAULT_REPORTS,
    batch_size: int = 64,
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(predictions [{"path", "top": [{"class", "name", "probability"}]}], failures [{"path", "error"}]).

    `run_ref`: a run id, folder, "latest", "sweep:latest" or "sweep:<id>" (featkit.apps.run_model.resolve_run);
    any run kind (head on one or several caches, with or without the mirrored view, ensemble, CNN). `say` gets one
    line naming the run taken when the reference was "latest" or a sweep. Probabilities are the run's calibrated
    ones, computed from the photos as the run's test photos were (featkit.apps.run_model)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise FeatkitError(f"--top {top} should be 1 or more classes to show per photo.")
    run, note = resolve_run(run_ref, reports)
    if note and say is not None:
        say(note)
    plan = load_plan(run, reports)
    classes = plan.classes
    files = expand_photos(photos)
    model = RunModel(plan, batch_size=batch_size, quiet=quiet)
    probs, ok, failed = model.predict_files([str(f) for f in files])
    failures = [{"path": f.path, "error": f"cannot read this photo ({f.error}); skipped"} for f in failed]
    k = min(top, plan.n_classes)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    results = [
        {
            "path": str(files[i]),
            "top": [
                {"class": classes[j].id, "name": classes[j].name, "probability": round(float(p[j]), 6)} for j in idx
            ],
        }
        for i, p, idx in zip(ok, probs, order, strict=True)
    ]
    return results, failures


@dataclass(frozen=True)
class Reproduction:
    """How closely predicting a run's own test photos from their files matches its test_predictions.npz."""

    run: str
    kind: str
    n: int
    agreement: float  # share of photos with the same top-1 class
    mean_abs_dp: float  # mean over photos and classes of |p_predict - p_saved|
    max_abs_dp: float
    round_features: bool
    seconds: float
    photos_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reproduce(
    run_ref: str | Path | Run,
    reports: str | Path = DEFAULT_REPORTS,
    round_features: bool = True,
    limit: int | None = None,
    batch_size: int = 64,
    model: RunModel | None = None,
) -> Reproduction:
    """Predict the run's test photos (the first `limit`, in test_predictions.npz order) from the dataset files its
    config names, through `predict`'s path, and compare with the saved test predictions. `round_features`: round
    features to the caches' dtype as the head saw them (False: the backbone's float32 features)."""
    import time

    from featkit.data.source import open_source
    from featkit.data.splits import read_manifest

    run, _ = resolve_run(run_ref, reports)
    cfg = run.config
    if not cfg.data or not cfg.manifest:
        raise FeatkitError(f"{run.path / 'config.json'} names no dataset or manifest: its test photos cannot be found.")
    if cfg.crop_box:
        raise FeatkitError(f"run {run.id} cropped its photos to annotated boxes: predict sees whole photos.")
    saved = run.load_predictions("test")
    ids = saved["image_ids"].astype(str)[:limit]
    manifest = read_manifest(cfg.manifest)
    where = dict(zip(manifest["image_id"].astype(str), manifest["path"].astype(str), strict=True))
    missing = [i for i in ids if i not in where]
    if missing:
        raise FeatkitError(f"{cfg.manifest} lacks {len(missing)} test photos of run {run.id} (e.g. {missing[0]}).")
    source = open_source(cfg.data, cache_dir=Path(reports))
    model = model or RunModel(load_plan(run, reports), batch_size=batch_size)
    model.round_features = round_features
    t0 = time.perf_counter()
    probs, ok, failures = model.predict_files([where[i] for i in ids], read=source.read)
    seconds = time.perf_counter() - t0
    if failures:
        raise FeatkitError(f"{failures[0]}: a test photo of run {run.id} cannot be read any more.")
    ref = saved["probs"][: len(ids)]
    diff = np.abs(probs.astype(np.float64) - ref)
    return Reproduction(
        run.id,
        cfg.kind,
        len(ids),
        float(np.mean(probs.argmax(1) == ref.argmax(1))) if len(ids) else 1.0,
        float(diff.mean()) if diff.size else 0.0,
        float(diff.max()) if diff.size else 0.0,
        round_features,
        round(seconds, 3),
        round(len(ids) / seconds, 1) if seconds > 0 else 0.0,
    )
