"""Several feature caches of the same photos as one: backbones, sizes and views side by side.

    fs = concat_caches(["cache/.../mobilenet-v2-...-224px-.../plain.h5",
                        "cache/.../efficientnet-lite0-...-224px-.../plain.h5"])
    fs.features.shape    # (N, 1280 + 1280), rows in the first cache's order

The caches must hold the same photos of the same dataset: same dataset fingerprint, same class list, and the same
image ids (rows are matched by image id, so a different row order is fine). Anything else is refused with one
line naming the file, how many ids differ and an example.

Test-time views (`featkit extract --tta flip`, file `tta-flip.h5` beside each plain cache) are combined the same
way, and `average_tta` averages a head's probabilities on the plain and mirrored photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import FeatkitError
from featkit.core.schema import BackboneSpec, CacheMeta, check_comparable
from featkit.data.augment import TTA_VIEWS
from featkit.features.cache import FeatureSet, read_cache


def cache_paths(cache_path: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or several, as a list of Paths."""
    if isinstance(cache_path, (str, Path)):
        return [Path(cache_path)]
    paths = [Path(p) for p in cache_path]
    if not paths:
        raise FeatkitError("no feature cache given: pass at least one --features CACHE.h5.")
    return paths


def read_features(cache_path: str | Path | Sequence[str | Path]) -> FeatureSet:
    """A cache, or several concatenated (`concat_caches`) when given a list of more than one."""
    paths = cache_paths(cache_path)
    return read_cache(paths[0]) if len(paths) == 1 else concat_caches(paths)


def concat_caches(paths: Sequence[str | Path]) -> FeatureSet:
    """The features of the same photos from several caches, side by side (D1 + D2 + ... columns).

    Rows follow the first cache; every other cache is matched to it by image id. meta is the first cache's, with
    `backbone` a combined spec naming the parts, `size` the common size (or the list of sizes), `seconds` the
    summed extraction time and `caches` the list of {path, backbone, size, view, feature_dim}.
    """
    paths = [Path(p) for p in paths]
    sets = [read_cache(p) for p in paths]
    base, first = sets[0], paths[0]
    if len(sets) == 1:
        return base
    parts = [base.features]
    for path, fs in zip(paths[1:], sets[1:], strict=True):
        _check_same_dataset(first, base.meta, path, fs.meta)
        order = align_rows(base.image_ids, fs.image_ids, first, path)
        if not (np.array_equal(fs.labels[order], base.labels) and np.array_equal(fs.split[order], base.split)):
            bad = int(np.flatnonzero((fs.labels[order] != base.labels) | (fs.split[order] != base.split))[0])
            raise FeatkitError(
                f"{path}: photo {base.image_ids[bad]} has another label or split than in {first}: "
                "the caches come from different split manifests; extract both with the same --split and --seed."
            )
        parts.append(fs.features[order])
    metas = [fs.meta for fs in sets]
    sizes = [m.size for m in metas]
    seconds = [m.seconds for m in metas]
    size = sizes[0] if len(set(sizes)) == 1 else sizes
    backbone = BackboneSpec(
        kind="combined",
        name="+".join(f"{m.backbone.name}-{m.size}" for m in metas),
        size=sizes[0],
        extra={"parts": [m.backbone.to_dict() for m in metas], "sizes": sizes},
    )
    meta = base.meta.replace(
        backbone=backbone,
        size=size,
        view="+".join(dict.fromkeys(m.view for m in metas)),
        seconds=round(sum(s for s in seconds if s is not None), 3) if None not in seconds else None,
        extra={**base.meta.extra, "caches": [describe_cache(p, fs) for p, fs in zip(paths, sets, strict=True)]},
    )
    return FeatureSet(np.concatenate(parts, axis=1), base.labels, base.split, base.image_ids, meta, base.copy, base.row)


def describe_cache(path: str | Path, fs: FeatureSet) -> dict[str, Any]:
    """What a run config records about one source cache (with how its photos were decoded and its dtype, so a run
    can turn new photos into the same features without the cache: featkit.apps.run_model)."""
    return {
        "path": str(Path(path).resolve()),
        "backbone": fs.meta.backbone.to_dict(),
        "size": fs.meta.size,
        "view": fs.meta.view,
        "feature_dim": int(fs.features.shape[1]),
        "resize": fs.meta.resize,
        "decode": fs.meta.decode,
        "crop_box": bool(fs.meta.crop_box),
        "dtype": fs.meta.dtype,
    }


def align_rows(ids: np.ndarray, other_ids: np.ndarray, path: Path | str, other_path: Path | str) -> np.ndarray:
    """Indices into other_ids that put its rows in the order of ids; one-line FeatkitError unless both hold
    exactly the same image ids."""
    ids, other_ids = np.asarray(ids, dtype=str), np.asarray(other_ids, dtype=str)
    if len(ids) == len(other_ids) and np.array_equal(ids, other_ids):
        return np.arange(len(ids))
    missing = np.setdiff1d(ids, other_ids)
    extra = np.setdiff1d(other_ids, ids)
    if len(missing) or len(extra):
        example = f"{missing[0]} is not in {other_path}" if len(missing) else f"{extra[0]} is not in {path}"
        raise FeatkitError(
            f"{other_path} holds other photos than {path}: {len(missing)} image ids of {path} are missing "
            f"and {len(extra)} are extra (e.g. {example}); combine caches extracted from the same dataset and split."
        )
    if len(np.unique(ids)) != len(ids) or len(np.unique(other_ids)) != len(other_ids):
        raise FeatkitError(
            f"{other_path} and {path} repeat image ids in a different order: rows cannot be matched; "
            "combine plain views (one row per photo)."
        )
    pos = {v: i for i, v in enumerate(other_ids.tolist())}
    return np.fromiter((pos[v] for v in ids.tolist()), np.int64, len(ids))


def _check_same_dataset(path: Path | str, meta: CacheMeta, other_path: Path | str, other: CacheMeta) -> None:
    """Same photos of the same dataset: fingerprint and class list (backbones and sizes may differ)."""

    def key(m: CacheMeta) -> dict[str, Any]:
        return {k: v for k, v in m.comparable_key().items() if k in ("fingerprint", "classes")}

    check_comparable(key(meta), key(other), str(path), str(other_path), "combine caches of the same photos")


# ---- test-time views ---------------------------------------------------------------------------------


def tta_paths(cache_path: str | Path | Sequence[str | Path], view: str = "flip") -> list[Path]:
    """The test-time view file beside each plain cache; one-line error naming the first that is missing."""
    name = TTA_VIEWS[view].name
    out = []
    for p in cache_paths(cache_path):
        t = p.with_name(f"{name}.h5")
        if not t.exists():
            raise FeatkitError(f"no {name} view beside {p}: run the same `featkit extract` with --tta {view} first.")
        out.append(t)
    return out


def read_tta(cache_path: str | Path | Sequence[str | Path], view: str = "flip") -> FeatureSet:
    """The test-time view of the valid and test photos, combined like the plain caches."""
    return read_features(tta_paths(cache_path, view))


def average_tta(head, plain: FeatureSet, view: FeatureSet, calibrated: bool = True) -> np.ndarray:
    """Mean of the head's probabilities on each photo of `plain` and on the same photo in `view` (matched by
    image id; the view must hold every photo of `plain`). `calibrated`: as `Head.predict_proba`."""
    ids = np.asarray(plain.image_ids, dtype=str)
    pos = {v: i for i, v in enumerate(np.asarray(view.image_ids, dtype=str).tolist())}
    missing = [v for v in ids.tolist() if v not in pos]
    if missing:
        raise FeatkitError(
            f"the {view.meta.view} view lacks {len(missing)} of the {len(ids)} photos "
            f"(e.g. {missing[0]}): re-run `featkit extract ... --tta` on the same dataset and split."
        )
    order = np.fromiter((pos[v] for v in ids.tolist()), np.int64, len(ids))
    if view.features.shape[1] != plain.features.shape[1]:
        raise FeatkitError(
            f"the test-time view has {view.features.shape[1]} feature columns, the plain features "
            f"{plain.features.shape[1]}: give the same caches in the same order."
        )
    return mean_probs(
        [
            head.predict_proba(plain.features, calibrated=calibrated),
            head.predict_proba(view.features[order], calibrated=calibrated),
        ]
    )


def mean_probs(probs: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise mean of probability arrays of one shape (float32)."""
    return np.stack([np.asarray(p, np.float32) for p in probs]).mean(axis=0, dtype=np.float64).astype(np.float32)
