"""`featkit ensemble RUN RUN ...`: the mean of several runs' test probabilities, written as a run like any other.

The runs must be scored on the same test photos (same image ids in the same order) with the same class list.
When every member also saved its validation predictions (valid_predictions.npz, written by `fit-head`: held-out
predictions of the model fitted on train only), those are averaged too, so the ensemble has a validation score that
a sweep can select on, and a temperature is fitted on them: a mean of calibrated members is under-confident (the
members disagree), and the temperature sharpens it back. Without them the temperature is 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import RunConfig, check_comparable
from featkit.core.tables import pct
from featkit.core.version import __version__
from featkit.features.combine import mean_probs
from featkit.runs.calibration import apply_temperature, fit_temperature
from featkit.runs.metrics import topk_accuracy
from featkit.runs.store import DEFAULT_REPORTS, Run, finish, load_run, new_run


def ensemble_runs(
    refs: Sequence[Run | str | Path],
    name: str | None = None,
    reports: str | Path = DEFAULT_REPORTS,
    quiet: bool = False,
) -> Run:
    """Average the members' (calibrated) test probabilities into a new run folder; returns the Run."""
    runs = [r if isinstance(r, Run) else load_run(r, reports) for r in refs]
    if not runs:
        raise FeatkitError("featkit ensemble needs at least one run id (two or more to be useful).")
    for r in runs:
        if not r.complete:
            raise FeatkitError(
                f"run {r.id} did not finish (no metrics.json): re-run it or leave it out of the ensemble."
            )
    first = runs[0]
    classes = first.classes
    for r in runs[1:]:
        if [c.id for c in r.classes] != [c.id for c in classes]:
            raise FeatkitError(f"run {r.id} has another class list than {first.id}: ensemble runs of the same dataset.")
        a, b = _dataset_key(first), _dataset_key(r)
        if a["fingerprint"] and b["fingerprint"]:  # runs that record no fingerprint are matched by photos below
            check_comparable(a, b, f"run {first.id}", f"run {r.id}", "ensemble runs of the same dataset")
    test = [r.load_predictions("test") for r in runs]
    _check_same_photos(runs, test, "test")
    has_valid = all((r.path / "valid_predictions.npz").exists() for r in runs)
    valid = [r.load_predictions("valid") for r in runs] if has_valid else None
    if valid is not None:
        _check_same_photos(runs, valid, "valid")

    members = [r.id for r in runs]
    configs = [r.config for r in runs]
    run = new_run(name or f"ensemble-{len(runs)}-{_short(configs[0])}", reports)
    with run:  # a failure before the run finished leaves no half-written run folder
        sizes = _sizes(configs)
        run.write_config(
            RunConfig(
                kind="ensemble",
                name=name or "ensemble",
                size=sizes[0] if len(sizes) == 1 else None,
                n_classes=len(classes),
                dataset=configs[0].dataset,
                fingerprint=configs[0].fingerprint,
                data=configs[0].data,
                manifest=configs[0].manifest,
                augment=any(c.augment for c in configs),
                featkit_version=__version__,
                extra={
                    "members": members,
                    "member_paths": [str(r.path.resolve()) for r in runs],
                    "sizes": sizes,
                    "combine": "mean of probabilities",
                },
            )
        )
        run.write_classes(classes)
        metrics = [r.metrics for r in runs]
        extra = {
            "n_members": len(runs),
            "fit_seconds": round(sum(m.fit_seconds or 0.0 for m in metrics), 3),
            "n_test": int(len(test[0]["labels"])),
        }
        temperature = 1.0
        if valid is not None:
            vp = mean_probs([p["probs"] for p in valid])
            temperature = fit_temperature(vp, valid[0]["labels"])
            vp = apply_temperature(vp, temperature)
            run.save_predictions(vp, valid[0]["labels"], valid[0]["image_ids"], name="valid")
            extra["valid_top1"], extra["valid_top5"] = topk_accuracy(vp, valid[0]["labels"], (1, 5)).values()
        raw = mean_probs([p["probs"] for p in test])
        m = finish(
            run,
            apply_temperature(raw, temperature),
            test[0]["labels"],
            test[0]["image_ids"],
            extra=extra,
            temperature=temperature,
            raw_probs=raw,
        )
    if not quiet:
        print(
            f"ensemble {run.id} of {len(runs)} runs: test top-1 {pct(m.top1)}, top-5 {pct(m.top5)} -> {run.path}",
            file=sys.stderr,
            flush=True,
        )
    return run


def _check_same_photos(runs: list[Run], preds: list[dict], split: str) -> None:
    ids, labels = preds[0]["image_ids"], preds[0]["labels"]
    for r, p in zip(runs[1:], preds[1:], strict=True):
        other = p["image_ids"]
        if len(other) != len(ids) or not np.array_equal(other, ids):
            differ = np.setdiff1d(ids, other).tolist() + np.setdiff1d(other, ids).tolist()
            where = (
                f"{len(differ)} image ids differ, e.g. {differ[0]}" if differ else "the same photos in another order"
            )
            raise FeatkitError(
                f"run {r.id} was scored on other {split} photos than {runs[0].id} ({where}): "
                "ensemble runs fitted on the same dataset and split."
            )
        if not np.array_equal(p["labels"], labels):
            raise FeatkitError(
                f"run {r.id} labels its {split} photos differently from {runs[0].id}: "
                "ensemble runs of the same class list and manifest."
            )
        if p["probs"].shape != preds[0]["probs"].shape:
            raise FeatkitError(
                f"run {r.id} predicts {p['probs'].shape[1]} classes, {runs[0].id} "
                f"{preds[0]['probs'].shape[1]}: ensemble runs of the same class list."
            )


def _dataset_key(run: Run) -> dict:
    """What says two runs saw the same dataset: its content fingerprint and class list (`comparable_key`)."""
    key = run.config.comparable_key(run.classes)
    return {k: key[k] for k in ("fingerprint", "classes")}


def _sizes(configs: list[RunConfig]) -> list:
    out: list[int | None] = []
    for c in configs:
        s = c.extra.get("sizes") or c.size
        out.extend(s if isinstance(s, list) else [s])
    return sorted({s for s in out if s is not None})


def _short(config: RunConfig) -> str:
    return config.backbone_name or config.name or "runs"
