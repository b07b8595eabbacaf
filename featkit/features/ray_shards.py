"""featkit extract --engine ray: an extraction split into the shards of `featkit extract --shard i/n`.

Each shard runs on an actor that loads the backbone once (num_gpus=1 per actor on a cluster with GPUs), writes the
same shard file `--shard i/n` writes, and saves its work in chunks, so a retried shard resumes at its first missing
chunk. When every shard is done, the driver joins them with `featkit.features.merge.merge`. Every worker must
reach the dataset, the model and the cache folder at the same paths (a shared folder on a real cluster).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.ray_tasks import (
    RETRIES,
    TasksFailed,
    import_ray,
    ray_session,
    report_progress,
    run_tasks,
    worker_count,
)


@dataclass
class ShardJob:
    """What a worker needs to extract shards of one extraction: everything is a path all workers reach."""

    data: str
    cache_dir: str
    split: Any  # featkit.data.SplitConfig
    key: str  # the dataset content and split the driver saw
    opts: Any  # featkit.features.extract.ExtractOptions, without shard
    chunk: int  # photos per saved chunk: must be the driver's, since shards are made of chunks


def _open_shard_worker(job: ShardJob):
    from featkit.data import prepare
    from featkit.features import extract as extract_module
    from featkit.features import pipeline

    pipeline.CHUNK = job.chunk  # this worker process only runs this extraction
    prep = prepare(job.data, cache_dir=job.cache_dir, split=job.split, quiet=True)
    if prep.key != job.key:
        raise FeatkitError(
            f"the worker on {socket.gethostname()} sees different photos at {job.data} "
            f"({prep.key}, the driver saw {job.key}): give every node the same shared folder."
        )
    return prep, extract_module.build_backbone(job.opts)


def _extract_shard(job: ShardJob, shard: tuple[int, int], state) -> list:
    from featkit.features.extract import extract

    prep, backbone = state
    return extract(
        prep,
        replace(job.opts, shard=shard),
        cache_dir=job.cache_dir,
        quiet=True,
        backbone=backbone,
        on_progress=report_progress,
    )


def extract_on_ray(
    data: str | Path,
    opts,
    cache_dir: str | Path = "cache",
    split=None,
    *,
    address: str | None = None,
    workers: int | None = None,
    shards: int | None = None,
    retries: int = RETRIES,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
) -> list:
    """`featkit extract --engine ray`: the views `opts` asks for, extracted shard by shard on Ray actors and
    merged as `featkit merge` does; returns one ViewResult per view, like `featkit.features.extract.extract`.

    workers: actors (default: one per GPU of the cluster, else one per node, each using that node's cores).
    shards: parts to split each view into (default: one per worker). Views already complete return at once
    without starting Ray; complete shards of an interrupted job are kept. A shard whose worker dies is retried
    (`retries` times), then the job stops with one line naming the failed shards and `command` to re-run them.
    """
    from featkit.data import prepare
    from featkit.features import extract as ex
    from featkit.features import pipeline

    if opts.shard is not None:
        raise FeatkitError(
            "--shard picks one part to run by hand; --engine ray splits the work into parts itself: drop --shard."
        )
    import_ray()
    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    prep = prepare(data, cache_dir=cache_dir, split=split, quiet=quiet)
    out_dir = ex.features_dir(prep, opts, cache_dir)
    views = ex.plan_views(prep, opts, out_dir)
    done = {v.name: ex.cached_result(prep, opts, v) for v in views}
    todo = [v for v in views if done[v.name] is None]
    if not todo:
        return [done[v.name] for v in views]
    names = {v.name for v in todo}
    opts = replace(
        opts,
        backbone=_absolute(opts.backbone),
        weights=_absolute(opts.weights),
        plain="plain" in names,
        augment=opts.augment if any(n.startswith("augment") for n in names) else 0,
        sensitivity=any(n.startswith("sens") for n in names),
    )
    started = time.perf_counter()
    with ray_session(address) as ray:
        start_seconds = time.perf_counter() - started
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        n_workers = worker_count(ray, workers or (gpus or nodes), 1, 1 if gpus else 0, log)
        most_chunks = max(-(-len(v.rows) // pipeline.CHUNK) for v in todo)
        n = max(1, min(shards or n_workers, most_chunks))
        if n < n_workers:  # shards are whole chunks: fewer chunks than workers leave workers idle
            print(
                f"warning: {max(len(v.rows) for v in todo):,} photos make {most_chunks} chunk"
                f"{'s' * (most_chunks > 1)} of {pipeline.CHUNK:,}: running {n} shard{'s' * (n > 1)} on {n} of the "
                f"{n_workers} workers.",
                file=sys.stderr,
                flush=True,
            )
        left = [
            (i, n)
            for i in range(n)
            if any(ex.cached_result(prep, replace(opts, shard=(i, n)), v) is None for v in todo)
        ]
        n_workers = min(n_workers, max(1, len(left)))
        threads = max(1, min(8, int(res.get("CPU", 1)) // n_workers))
        job = ShardJob(
            str(Path(data).resolve()),
            str(Path(cache_dir).resolve()),
            prep.split,
            prep.key,
            replace(opts, threads=opts.threads or threads),
            pipeline.CHUNK,
        )
        total = sum(ex.photos_to_extract(v, s) for v in todo for s in left)
        ran = time.perf_counter()
        try:
            run_tasks(
                partial(_extract_shard, job),
                left,
                workers=n_workers,
                retries=retries,
                setup=partial(_open_shard_worker, job),
                num_gpus=1 if gpus else 0,
                env={} if gpus else {"FEATKIT_ONNX_THREADS": str(threads)},
                total=total,
                desc=f"extract on Ray ({n_workers} worker{'s' * (n_workers > 1)})",
                unit="photos",
                quiet=quiet,
                log=log,
                name=lambda s: f"shard {s[0]}/{s[1]}",
            )
        except TasksFailed as e:
            failed = ", ".join(f"{f.item[0]}/{f.item[1]}" for f in e.failures)
            tries = max(f.attempts for f in e.failures)
            raise FeatkitError(
                f"extraction on Ray failed for shard(s) {failed} of {', '.join(sorted(names))} after "
                f"{tries} attempt{'s' * (tries > 1)} ({e.failures[0].error}); the finished shards are "
                f"kept: run "
                f"`{command or 'the same featkit extract --engine ray command'}` again to re-run "
                f"only the failed ones."
            ) from None
        wall = time.perf_counter() - ran
    return [done[v.name] or _merge_view(v, n, wall, start_seconds, n_workers, total) for v in views]


def _merge_view(view, n: int, wall: float, start_seconds: float, n_workers: int, photos: int):
    from featkit.features.cache import read_meta
    from featkit.features.merge import merge
    from featkit.features.pipeline import ViewResult, failures_of
    from featkit.features.views import shard_path

    files = [shard_path(view.path, (i, n)) for i in range(n)]
    extra = {
        "engine": "ray",
        "ray_workers": n_workers,
        "ray_shards": n,
        "ray_start_seconds": round(start_seconds, 3),
        "ray_worker_seconds": round(sum(read_meta(f).seconds or 0.0 for f in files), 3),
    }
    # seconds and photos/s of the merged file: the whole job's, as a local extraction records them
    meta = read_meta(merge(files, view.path, seconds=wall, extra=extra))
    for f in files:  # the merged file holds all of them
        f.unlink()
    return ViewResult(
        view.name,
        str(view.path),
        "extracted",
        meta.photos,
        round(wall, 3),
        round(photos / wall, 2) if wall > 0 else 0.0,
        failures_of(meta),
        meta.stage_seconds,
    )


def _absolute(path: str) -> str:
    """Paths a worker opens are made absolute: a Ray worker's working folder is not the driver's."""
    return str(Path(path).resolve()) if Path(path).is_file() else path
