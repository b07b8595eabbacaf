"""Fit a head on a feature cache and record it as a run: search on "train" scored on "valid", calibrate on
"valid", refit on "train" + "valid" (plus augmented rows), score once on "test".

    run = fit_head("caches/food101/mobilenet-v2-224-plain.h5", head="logreg", params={"C": 0.5})
    head = load_run_head(run)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import ClassEntry, RunConfig
from featkit.core.tables import pct
from featkit.core.version import __version__
from featkit.features.cache import FeatureSet, check_same_features, read_cache
from featkit.features.combine import average_tta, cache_paths, describe_cache, read_features, read_tta
from featkit.heads import head_params
from featkit.runs.metrics import topk_accuracy
from featkit.runs.store import DEFAULT_REPORTS, Run, finish, new_run


def fit_head(
    cache_path: str | Path | Sequence[str | Path],
    head: str = "logreg",
    params: Mapping[str, Any] | None = None,
    augment_cache: str | Path | None = None,
    reports: str | Path = DEFAULT_REPORTS,
    seed: int = 0,
    quiet: bool = False,
    refit: bool = True,
    tta: str | None = None,
) -> Run:
    """Fit `head` on the cache and write a complete run folder under reports/runs/; returns the Run.

    `params` are the head's parameters (see featkit.heads.head_params); its `seed` defaults to `seed`. A value
    with commas ("0.01,0.03,0.1") or a list is searched; settings not given are searched over the head's default
    grid (featkit.heads.search). The chosen settings are refitted on train + valid rows unless `refit` is False, a
    temperature fitted on the validation predictions calibrates the probabilities, and test is scored once.
    `augment_cache`: a cache of augmented copies of the same training photos (same backbone, size, classes and
    dataset); its "train" rows are added to the training rows, and nothing else of it is used.
    `cache_path` may be a list of caches of the same photos: their features are concatenated (featkit.features.combine).
    `tta`: a test-time view ("flip", cached by `extract --tta flip`): valid and test probabilities are the mean
    over the plain and the mirrored photo.
    """
    from featkit.heads.search import fit_selected

    paths = cache_paths(cache_path)
    cache_path = paths[0]
    data = read_features(paths)
    tta_view = read_tta(paths, tta) if tta else None
    meta = data.meta
    train, valid, test = data.subset("train"), data.subset("valid"), data.subset("test")
    if len(train) == 0 or len(test) == 0:
        raise FeatkitError(
            f"{cache_path} has {len(train)} train and {len(test)} test rows: a head needs both; "
            "extract the cache from a dataset with train and test splits."
        )
    params = dict(params or {})
    if "seed" in head_params(head) and "seed" not in params:
        params["seed"] = seed

    X, y = train.features, train.labels
    aug_meta, n_aug = None, 0
    if augment_cache is not None:
        aug = read_cache(augment_cache)
        check_same_features(
            meta,
            aug.meta,
            cache_path,
            augment_cache,
            "extract the augmented view with the same backbone, size and dataset",
        )
        if not aug.meta.is_augmented:
            raise FeatkitError(
                f"{augment_cache} holds the {aug.meta.view!r} view, not augmented copies: give an "
                "augment-*.h5 cache made by `featkit extract --augment-copies N`."
            )
        aug = aug.subset("train")
        leaked = set(aug.image_ids.tolist()) & set(valid.image_ids.tolist() + test.image_ids.tolist())
        if leaked:
            raise FeatkitError(
                f"{augment_cache} has {len(leaked)} training rows of valid/test photos "
                f"(e.g. {sorted(leaked)[0]}): re-extract the augmented view from the train split only."
            )
        aug_meta, n_aug = aug.meta, len(aug)
        X, y = np.concatenate([X, aug.features]), np.concatenate([y, aug.labels])

    n_classes = len(meta.classes) or int(max(data.labels.max(), 0)) + 1
    classes = meta.classes or [ClassEntry(i, str(i), str(i)) for i in range(n_classes)]
    has_valid = len(valid) > 0
    _say(
        quiet,
        f"fitting {head} on {len(train):,} train rows"
        f"{f' + {n_aug:,} augmented' if n_aug else ''} x {X.shape[1]} features, {n_classes} classes"
        f"{'' if has_valid else ' (no valid split: no search, no early stopping, no calibration)'}...",
    )
    t0 = time.perf_counter()
    model, sel = fit_selected(
        head,
        X,
        y,
        valid.features if has_valid else None,
        valid.labels if has_valid else None,
        n_classes=n_classes,
        params=params,
        refit=refit,
        log=None if quiet else _say_line,
        warn=_say_line,  # warnings print even with --quiet
    )
    fit_seconds = time.perf_counter() - t0
    refitted = model is not sel.model

    run = new_run(f"{meta.backbone.name}-{meta.size}-{head}{'-aug' if n_aug else ''}", reports)
    run.write_config(
        RunConfig(
            kind="head",
            name=head,
            backbone=meta.backbone,
            size=meta.size if isinstance(meta.size, int) else None,  # caches of several sizes: extra "sizes"
            params=model.params,
            n_classes=n_classes,
            dataset=meta.dataset,
            fingerprint=meta.fingerprint,
            data=meta.data,
            manifest=meta.manifest,
            resize=meta.resize,
            crop_box=meta.crop_box,
            decode=meta.decode,
            seed=seed,
            view=meta.view,
            views=[meta.view] + ([aug_meta.view] if aug_meta else []),
            augment=bool(n_aug),
            cache=str(cache_path.resolve()),
            augment_cache=str(Path(augment_cache).resolve()) if augment_cache is not None and aug_meta else None,
            featkit_version=__version__,
            extra={
                "augment_view_params": aug_meta.view_params if aug_meta else None,
                "caches": meta.extra.get("caches") or [describe_cache(cache_path, data)],
                **({"sizes": meta.size} if isinstance(meta.size, list) else {}),
                "tta": tta,
                "selection": "valid" if has_valid else "none",
                "search": sel.to_dict(),
                "refit": refitted,
                "refit_rows": ["train", "valid"] if refitted else ["train"],
                "selected_params": sel.params,
            },
        )
    )
    run.write_classes(classes)
    model.save(run.path)

    def predict(fs: FeatureSet, head=model, calibrated: bool = True) -> np.ndarray:
        if tta_view is None:
            return head.predict_proba(fs.features, calibrated=calibrated)
        return average_tta(head, fs, tta_view, calibrated=calibrated)

    raw, probs = predict(test, calibrated=False), predict(test)

    extract_seconds = meta.seconds
    if aug_meta is not None and extract_seconds is not None and aug_meta.seconds is not None:
        extract_seconds += aug_meta.seconds
    extra: dict[str, Any] = {
        "fit_seconds": round(fit_seconds, 3),
        "search_seconds": round(sel.seconds, 3),
        "refit_seconds": round(fit_seconds - sel.seconds, 3) if refitted else 0.0,
        "extract_seconds": extract_seconds,
        "n_train": int(len(y) + (len(valid) if refitted else 0)),
        "n_train_photos": int(len(train)),
        "n_augmented": n_aug,
        "n_valid": int(len(valid)),
        "n_test": int(len(test)),
        "n_candidates": len(sel.candidates),
    }
    if has_valid:
        # the selected model before its refit never saw the valid photos: its valid scores are held out
        valid_probs = predict(valid, head=sel.model)
        run.save_predictions(valid_probs, valid.labels, valid.image_ids, name="valid")
        extra["valid_top1"], extra["valid_top5"] = topk_accuracy(valid_probs, valid.labels, (1, 5)).values()
    extra.update(
        {
            k.rstrip("_"): v
            for k, v in sel.model.fitted_state().items()
            if k in ("best_epoch_", "best_iteration_", "n_iter_")
        }
    )

    metrics = finish(
        run,
        probs,
        test.labels,
        test.image_ids,
        history=model.history_,
        extra=extra,
        temperature=model.temperature_,
        raw_probs=raw,
    )
    _say(
        quiet,
        f"run {run.id}: test top-1 {pct(metrics.top1)}, top-5 {pct(metrics.top5)}, log loss "
        f"{metrics.log_loss:.3f}, ECE {metrics.ece if metrics.ece is not None else float('nan'):.3f} "
        f"(T={model.temperature_:.3g}, fit {fit_seconds:.1f} s)"
        f" -> {run.path}",
    )
    return run


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        _say_line(text)


def _say_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


__all__ = ["fit_head", "FeatureSet"]
