"""`featkit extract`: run a backbone over every photo of the split manifest once and cache pooled features.

The stages live in their own modules, each owning its data:
  featkit.features.options    ExtractOptions (checked once), the backbone spec, the memory check, the rebuild command
  featkit.features.views      which views to make (ViewJob) and where their files live
  featkit.features.pipeline   one view: reader (decode pool) -> mapper (backbone forward) -> writer (chunks, cache
                              file), each timed (CacheMeta.stage_seconds: decode, forward, write)
  featkit.features.merge      shard files joined into one cache

This module runs them for every view `ExtractOptions` asks for: a view whose file is whole and made with the same
options returns at once; another is extracted (or resumed at its first missing chunk) under a lock, so a second
identical command waits instead of doing the work twice. The names other modules use from here stay importable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from featkit.backbones import BackboneSpec
from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.locks import discard_lock_folder, exclusive
from featkit.data import Prepared
from featkit.features.cache import verify_cache
from featkit.features.merge import merge
from featkit.features.options import (
    BYTES_PER_PIXEL,
    MAX_SIZE,
    PRECISIONS,
    ExtractOptions,
    check_memory,
    parse_shard,
    rebuild_command,
    resolve_backbone,
)
from featkit.features.pipeline import ViewResult, failures_of, load_chunk, photos_to_extract, run_view
from featkit.features.views import (
    ViewJob,
    augment_caches,
    cache_slug,
    features_dir,
    find_plain_cache,
    job_identity,
    plan_views,
    sensitivity_caches,
    shard_path,
)


def extract(
    prep: Prepared,
    opts: ExtractOptions,
    cache_dir: str | Path = "cache",
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    backbone=None,
    on_progress: Callable[[int], None] | None = None,
) -> list[ViewResult]:
    """Extract every view `opts` asks for (or one shard of each). `backbone`: one already built from `opts`
    (reused across calls, e.g. by a Ray actor); `on_progress(n)` is called as each batch of n photos is done."""
    say: Callable[[str], None] = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    spec = resolve_backbone(opts)
    out_dir = Path(cache_dir) / "features" / prep.key / cache_slug(spec, opts)
    _say_if_dataset_changed(prep, out_dir, say)
    jobs = plan_views(prep, opts, out_dir)
    results: list[ViewResult] = []
    check_memory(spec.size, opts)
    made = not out_dir.exists()
    try:
        _extract_views(prep, opts, jobs, out_dir, results, backbone, spec, quiet, say, on_progress)
    except Exception:
        if made:  # failed before writing anything (e.g. the backbone cannot be built): no folder of lock files
            discard_lock_folder(out_dir, Path(cache_dir) / "features")
        raise
    return results


def _extract_views(prep, opts, jobs, out_dir, results, backbone, spec, quiet, say, on_progress) -> None:
    for job in jobs:
        target = shard_path(job.path, opts.shard)
        with exclusive(out_dir / f".{target.stem}.lock", str(target), say):  # a second identical command waits
            done = cached_result(prep, opts, job, spec, say)
            if done is not None:
                results.append(done)
                continue
            if target.exists():
                say(f"{target} was made from a different dataset, manifest or options: extracting it again")
                target.unlink()
            if backbone is None:
                backbone = _build_backbone(opts, spec)
            want = job_identity(prep, spec, opts, job)
            results.append(
                run_view(
                    prep, opts, job, want, backbone, target, quiet, say, on_progress, rebuild_command(prep, opts, spec)
                )
            )


def cached_result(
    prep: Prepared,
    opts: ExtractOptions,
    job: ViewJob,
    spec: BackboneSpec | None = None,
    log: Callable[[str], None] | None = None,
) -> ViewResult | None:
    """The result of a view (or of its shard `opts.shard`) whose file is whole (checksum verified) and was made
    with these options; None when it must be extracted (a damaged file is named through `log` and removed)."""
    target = shard_path(job.path, opts.shard)
    if not target.exists():
        return None
    try:
        meta = verify_cache(target)
    except DamagedFileError as e:
        (log or (lambda msg: None))(f"{e}: extracting it again")
        target.unlink()
        return None
    if meta.identity != job_identity(prep, spec or resolve_backbone(opts), opts, job):
        return None
    return ViewResult(
        job.name,
        str(target),
        "up to date",
        meta.photos,
        meta.seconds,
        meta.photos_per_second,
        failures_of(meta),
        meta.stage_seconds,
    )


def _say_if_dataset_changed(prep: Prepared, out_dir: Path, log: Callable[[str], None]) -> None:
    """Caches are keyed by dataset content: say so when an older cache of the same dataset no longer applies."""
    if out_dir.exists():
        return
    stem = prep.dir.name.rsplit("-", 1)[0]
    for other in sorted(out_dir.parent.parent.glob(f"{stem}-*/{out_dir.name}")):
        if other.parent.name.endswith(prep.split.key) and other != out_dir:
            log(f"the dataset or its split changed since {other} was made: extracting again for the new content")
            return


def build_backbone(opts: ExtractOptions):
    """The backbone `opts` names, built once (Keras models import TensorFlow here)."""
    return _build_backbone(opts, resolve_backbone(opts))


def _build_backbone(opts: ExtractOptions, spec: BackboneSpec):
    from featkit.backbones import get_backbone

    return get_backbone(
        opts.backbone, size=spec.size, weights=opts.weights, pooling=opts.pooling, batch_size=opts.batch_size
    )


__all__ = [
    "extract",
    "cached_result",
    "DamagedFileError",
    "FeatkitError",
    "job_identity",
    "build_backbone",
    "ExtractOptions",
    "ViewJob",
    "ViewResult",
    "BYTES_PER_PIXEL",
    "MAX_SIZE",
    "PRECISIONS",
    "augment_caches",
    "check_memory",
    "features_dir",
    "find_plain_cache",
    "load_chunk",
    "merge",
    "parse_shard",
    "photos_to_extract",
    "plan_views",
    "rebuild_command",
    "resolve_backbone",
    "sensitivity_caches",
    "shard_path",
]
