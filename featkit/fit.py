"""Fit a head on a feature cache and record it as a run: train on "train" (plus augmented rows), select on
"valid", score once on "test".

    run = fit_head("caches/food101/mobilenet-v2-224-plain.h5", head="logreg", params={"C": 0.5})
    head = load_run_head(run)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import __version__
from .cache import FeatureSet, read_cache
from .errors import FeatkitError
from .heads import Head, get_head, load_head
from .runs import DEFAULT_REPORTS, Run, load_run, new_run


def fit_head(cache_path: str | Path, head: str = "logreg", params: Mapping[str, Any] | None = None,
             augment_cache: str | Path | None = None, reports: str | Path = DEFAULT_REPORTS, seed: int = 0,
             quiet: bool = False) -> Run:
    """Fit `head` on the cache and write a complete run folder under reports/runs/; returns the Run.

    `params` are the head's parameters (see featkit.heads.head_params); its `seed` defaults to `seed`.
    `augment_cache`: a cache of augmented copies of the same training photos (same backbone, size, classes and
    dataset); its "train" rows are added to the training rows, and nothing else of it is used.
    """
    from .evaluate import topk_accuracy

    cache_path = Path(cache_path)
    data = read_cache(cache_path)
    meta = data.meta
    train, valid, test = data.subset("train"), data.subset("valid"), data.subset("test")
    if len(train) == 0 or len(test) == 0:
        raise FeatkitError(f"{cache_path} has {len(train)} train and {len(test)} test rows: a head needs both; "
                           "extract the cache from a dataset with train and test splits.")
    params = dict(params or {})
    model = get_head(head, **params)
    if "seed" in model.params and "seed" not in params:
        model = get_head(head, **{**params, "seed": seed})

    X, y = train.features, train.labels
    aug_meta, n_aug = None, 0
    if augment_cache is not None:
        aug = read_cache(augment_cache)
        if not str(aug.meta.get("view", "")).startswith("augment"):
            raise FeatkitError(f"--augment-cache {augment_cache} holds the {aug.meta.get('view', 'unknown')!r} view, not "
                               "augmented copies: give an augment-*.h5 made by `featkit extract ... --augment N`.")
        _check_same_source(meta, aug.meta, cache_path, Path(augment_cache))
        aug = aug.subset("train")
        leaked = set(aug.image_ids.tolist()) & set(valid.image_ids.tolist() + test.image_ids.tolist())
        if leaked:
            raise FeatkitError(f"{augment_cache} has {len(leaked)} training rows of valid/test photos "
                               f"(e.g. {sorted(leaked)[0]}): re-extract the augmented view from the train split only.")
        aug_meta, n_aug = aug.meta, len(aug)
        X, y = np.concatenate([X, aug.features]), np.concatenate([y, aug.labels])

    n_classes = len(meta.get("classes") or []) or int(max(data.labels.max(), 0)) + 1
    classes = meta.get("classes") or [{"index": i, "id": str(i), "name": str(i)} for i in range(n_classes)]
    has_valid = len(valid) > 0
    _say(quiet, f"fitting {head} on {len(train):,} train rows"
                f"{f' + {n_aug:,} augmented' if n_aug else ''} x {X.shape[1]} features, {n_classes} classes"
                f"{'' if has_valid else ' (no valid split: no early stopping)'}...")
    t0 = time.perf_counter()
    model.fit(X, y, valid.features if has_valid else None, valid.labels if has_valid else None, n_classes=n_classes)
    fit_seconds = time.perf_counter() - t0

    backbone = meta.get("backbone")
    bname = backbone.get("name", "features") if isinstance(backbone, dict) else (backbone or "features")
    run = new_run(f"{bname}-{meta.get('size', '')}-{head}{'-aug' if n_aug else ''}", reports)
    run.write_json("config.json", {
        "kind": "head", "name": head, "head": head, "params": model.params,
        "backbone": backbone, "size": meta.get("size"), "view": meta.get("view", "plain"),
        "views": [meta.get("view", "plain")] + ([aug_meta.get("view", "augment")] if aug_meta else []),
        "augment": bool(n_aug), "augment_view_params": aug_meta.get("view_params") if aug_meta else None,
        "cache": str(cache_path.resolve()), "augment_cache": str(Path(augment_cache).resolve()) if aug_meta else None,
        "dataset": meta.get("dataset"), "fingerprint": meta.get("fingerprint"), "resize": meta.get("resize"),
        "crop_box": meta.get("crop_box"), "seed": seed, "n_classes": n_classes,
        "selection": "valid" if has_valid else "none", "featkit_version": __version__,
    })
    run.write_json("classes.json", classes)
    model.save(run.path)
    if model.history_:
        _write_history(run, model.history_)
    probs = model.predict_proba(test.features)
    run.save_predictions(probs, test.labels, test.image_ids)

    extract_seconds = _seconds(meta)
    if aug_meta is not None and extract_seconds is not None and _seconds(aug_meta) is not None:
        extract_seconds += _seconds(aug_meta)
    extra: dict[str, Any] = {
        "fit_seconds": round(fit_seconds, 3), "extract_seconds": extract_seconds,
        "n_train": int(len(y)), "n_train_photos": int(len(train)), "n_augmented": n_aug,
        "n_valid": int(len(valid)), "n_test": int(len(test)),
    }
    if has_valid:
        extra["valid_top1"] = topk_accuracy(model.predict_proba(valid.features), valid.labels, (1,))[1]
    extra.update({k.rstrip("_"): v for k, v in model.fitted_state().items() if k in ("best_epoch_", "best_iteration_", "n_iter_")})

    from .evaluate import evaluate_run

    metrics = evaluate_run(run, extra=extra)  # writes metrics.json last: the run is complete from here
    _say(quiet, f"run {run.id}: test top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f} "
                f"(fit {fit_seconds:.1f} s) -> {run.path}")
    return run


def load_run_head(run: Run | str | Path, reports: str | Path = DEFAULT_REPORTS) -> Head:
    """The fitted head of a head run (by Run, folder or id)."""
    run = run if isinstance(run, Run) else load_run(run, reports)
    kind = run.config.get("kind")
    if kind != "head":
        raise FeatkitError(f"run {run.id} is a {kind!r} run, not a head run: it has no fitted head to load.")
    head = load_head(run.path)
    run.check_n_classes(head.n_classes_, "the fitted head")
    return head


def _seconds(meta: Mapping[str, Any]) -> float | None:
    s = meta.get("seconds")
    return float(s) if isinstance(s, (int, float)) else None


def _check_same_source(meta: Mapping, other: Mapping, path: Path, other_path: Path) -> None:
    from .evaluate import _class_key, _spec_key

    diffs = [what for what, a, b in (
        ("backbone", _spec_key(meta.get("backbone")), _spec_key(other.get("backbone"))),
        ("size", meta.get("size"), other.get("size")),
        ("class list", _class_key(meta.get("classes", [])), _class_key(other.get("classes", []))),
        ("dataset", meta.get("dataset"), other.get("dataset")),
        ("dataset fingerprint", meta.get("fingerprint"), other.get("fingerprint")),
        ("resize mode", meta.get("resize"), other.get("resize")),
    ) if a != b]
    if diffs:
        raise FeatkitError(f"augment cache {other_path} does not match {path}: different {' and '.join(diffs)}; "
                           "extract the augmented view with the same backbone, size and dataset.")


def _write_history(run: Run, history: list[dict]) -> None:
    import pandas as pd

    from .evaluate import _write_csv

    _write_csv(run.path / "history.csv", pd.DataFrame(history))


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


__all__ = ["fit_head", "load_run_head", "FeatureSet"]
