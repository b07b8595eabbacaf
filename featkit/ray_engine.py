"""featkit on a Ray cluster (an optional extra: pip install -e ".[ray]").

    results = run_tasks(fit_one, candidates, address="auto")        # any picklable work, retried if a worker dies
    views = extract_on_ray("photos.zip", ExtractOptions(...), workers=4)  # `featkit extract --engine ray`

`run_tasks` keeps a pool of Ray Core actors (one per worker, placed with SPREAD); each item runs once on one of
them, and an item whose worker process dies is retried on a fresh worker a bounded number of times. An exception
raised by the work itself is not retried: it is a bug or bad input, and would fail again.

`extract_on_ray` splits an extraction into the shards of `featkit extract --shard i/n`; each shard runs on an
actor that loads the backbone once (num_gpus=1 per actor on a cluster with GPUs), writes the same shard file
`--shard i/n` writes, and saves its work in chunks, so a retried shard resumes at its first missing chunk. When
every shard is done, the driver joins them with `featkit.extract.merge`. Every worker must reach the dataset, the
model and the cache folder at the same paths (a shared folder on a real cluster).

Nothing here imports Ray until a function is called.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import FeatkitError
from .progress import Progress

RAY_EXTRA = 'pip install -e ".[ray]"'
RETRIES = 3
# a local instance started here only passes shard results (a few KB) through the object store
LOCAL_OBJECT_STORE = 256 * 2**20
# test hook: "N" or "N:MARKER": a worker process exits (as if killed) once it has reported N units of
# progress; with MARKER, only the first worker that gets there (it creates the file)
CRASH_HOOK = "FEATKIT_RAY_TEST_CRASH"


def import_ray():
    """The ray module, or a one-line FeatkitError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise FeatkitError(f'--engine ray needs Ray, an optional extra of featkit: {RAY_EXTRA} '
                           f'(or pip install "ray>=2.9").') from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Connected to Ray for the block: the driver's existing connection if there is one, else the cluster at
    `address` ("auto": the one running on this machine; "HOST:PORT"; "ray://HOST:PORT"), else a Ray instance
    started on this machine and shut down at the end."""
    ray = import_ray()
    # Ray prints what its nodes report (e.g. a worker that died) on the driver's stdout: keep stdout for
    # featkit's results (--json) and send those lines to stderr, with the progress and other messages
    with redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield ray
        else:
            with _connected(ray, address):
                yield ray


@contextmanager
def _connected(ray, address: str | None) -> Iterator[None]:
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE, **quiet)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError...
        first = " ".join(str(e).split())[:200]
        where = f"the Ray cluster at --address {address}" if address else "a local Ray instance"
        raise FeatkitError(f"could not start or join {where} ({first}): start one with `ray start --head`, "
                           f"then pass its address (or auto on its head node).") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Ray keeps retrying an address where nothing answers for minutes: fail at once instead."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise FeatkitError(f"--address {address}: nothing answers there ({e.strerror or e}): start the cluster with "
                           f"`ray start --head` and give the address it prints (or auto on its head node).") from None


# ---- progress reported from inside a worker process ----------------------------------------------------------

_reported = 0
_reported_lock = threading.Lock()


def report_progress(n: int) -> None:
    """Called by work running on a `run_tasks` worker: n more units are done. The driver polls the workers and
    shows one progress line for the whole job (when run_tasks was given `total`)."""
    global _reported
    with _reported_lock:
        _reported += n
        done = _reported
    spec = os.environ.get(CRASH_HOOK)
    if spec:
        _crash_if_due(spec, done)


def _crash_if_due(spec: str, done: int) -> None:
    after, _, marker = spec.partition(":")
    if done < int(after):
        return
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os._exit(1)


class _Worker:
    """One Ray actor: runs `setup()` once, on its first item, then fn(item) or fn(item, state) per item."""

    def __init__(self, fn: Callable, setup: Callable[[], Any] | None, env: dict[str, str]):
        os.environ.update(env)
        self.fn, self.setup, self.state, self.ready = fn, setup, None, setup is None

    def run(self, item: Any) -> Any:
        if not self.ready:
            self.state, self.ready = self.setup(), True
        return self.fn(item) if self.setup is None else self.fn(item, self.state)

    def progress(self) -> int:
        return _reported


@dataclass
class TaskFailure:
    index: int  # position of the item in `items`
    item: Any
    attempts: int
    error: str  # one line


class TasksFailed(FeatkitError):
    """Some items of `run_tasks` failed (after the retries, for dead workers); the others completed."""

    def __init__(self, message: str, failures: list[TaskFailure]):
        super().__init__(message)
        self.failures = failures


@dataclass
class _Slot:
    actor: Any
    seen: int = 0  # progress units of this actor already on the progress line


def worker_count(ray, requested: int | None, num_cpus: float = 1, num_gpus: float = 0,
                 log: Callable[[str], None] | None = None) -> int:
    """How many workers of `num_cpus` CPUs and `num_gpus` GPUs to start: `requested`, or as many as the cluster
    holds now; a request above that is lowered (with a message) rather than waiting for resources forever."""
    res = ray.cluster_resources()
    room = [int(res.get(key, 0) // need) for key, need in (("CPU", num_cpus), ("GPU", num_gpus)) if need]
    fit = min(room) if room else 1
    if fit < 1:
        raise FeatkitError(f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs: not "
                           f"enough for one worker of {num_cpus:g} CPUs and {num_gpus:g} GPUs.")
    if requested is not None and requested > fit and log is not None:
        log(f"--workers {requested}: the Ray cluster has room for {fit} (CPU {res.get('CPU', 0):g}, "
            f"GPU {res.get('GPU', 0):g}); using {fit}")
    return max(1, min(requested or fit, fit))


def run_tasks(fn: Callable, items: Sequence, *, address: str | None = None, workers: int | None = None,
              retries: int = RETRIES, setup: Callable[[], Any] | None = None, num_cpus: float = 1,
              num_gpus: float = 0, env: dict[str, str] | None = None, total: int | None = None,
              desc: str = "tasks", unit: str = "tasks", quiet: bool = False,
              log: Callable[[str], None] | None = None, name: Callable[[Any], str] = str) -> list:
    """Run fn(item) for every item on Ray workers and return the results in the order of `items`.

    fn, setup and the items must be picklable (module-level functions, functools.partial, dataclasses).
    address: as `ray_session`. workers: how many actors (default: as many as the cluster holds, see
    `worker_count`); each reserves num_cpus CPUs and num_gpus GPUs. setup: called once per worker, on its first
    item; fn then gets (item, what setup returned), e.g. a model loaded once. env: environment variables set in
    each worker (the driver's FEATKIT_* variables are passed on too).
    Faults: when a worker process dies (killed, out of memory, its node lost), its item is retried on a new
    worker, at most `retries` times; an exception raised by fn is not retried. After every item has run, any
    failure raises TasksFailed (a FeatkitError) listing them.
    Progress: one line for the whole job, one unit per finished item; or, with `total`, fn calls
    `report_progress(n)` as it goes and the driver adds up what the workers report.
    """
    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    items = list(items)
    if not items:
        return []
    env = {**{k: v for k, v in os.environ.items() if k.startswith("FEATKIT_")}, **(env or {})}
    with ray_session(address) as ray:
        from ray.exceptions import RayError, RayTaskError

        n_workers = min(worker_count(ray, workers, num_cpus, num_gpus, log), len(items))
        actor_class = ray.remote(_Worker).options(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=2,
                                                  scheduling_strategy="SPREAD")
        queue, attempts = deque(range(len(items))), [0] * len(items)
        results: list[Any] = [None] * len(items)
        failures: list[TaskFailure] = []
        idle: list[_Slot] = []
        running: dict[Any, tuple[_Slot, int]] = {}
        live = 0
        try:
            with Progress(total if total is not None else len(items), desc, unit=unit, quiet=quiet) as bar:
                while queue or running:
                    while queue and (idle or live < n_workers):
                        if not idle:
                            idle.append(_Slot(actor_class.remote(fn, setup, env)))
                            live += 1
                        slot, i = idle.pop(), queue.popleft()
                        attempts[i] += 1
                        running[slot.actor.run.remote(items[i])] = (slot, i)
                    ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                    if total is not None:
                        _poll_progress(ray, [s for s, _ in running.values()], bar)
                    for ref in ready:
                        slot, i = running.pop(ref)
                        try:
                            results[i] = ray.get(ref)
                            idle.append(slot)
                            if total is None:
                                bar.update(1)
                        except RayTaskError as e:  # fn raised: bad input or a bug, it would fail again
                            failures.append(TaskFailure(i, items[i], attempts[i], _one_line(e.cause or e)))
                            idle.append(slot)
                        except RayError as e:  # the worker process died
                            ray.kill(slot.actor, no_restart=True)
                            live -= 1
                            if attempts[i] <= retries:
                                log(f"{desc}: the worker running {name(items[i])} died ({_one_line(e)}); "
                                    f"trying again ({attempts[i] + 1} of {retries + 1})")
                                queue.appendleft(i)
                            else:
                                failures.append(TaskFailure(i, items[i], attempts[i], _one_line(e)))
                if total is not None:
                    _poll_progress(ray, idle, bar, timeout=10)
        finally:
            for slot in idle + [s for s, _ in running.values()]:
                ray.kill(slot.actor, no_restart=True)
    if failures:
        failures.sort(key=lambda f: f.index)
        listing = "; ".join(f"{name(f.item)} ({f.attempts} attempts): {f.error}" for f in failures[:3])
        raise TasksFailed(f"{len(failures)} of {len(items)} {unit} failed: {listing}", failures)
    return results


def _poll_progress(ray, slots: list[_Slot], bar: Progress, timeout: float = 0.2) -> None:
    if not slots:
        return
    asked = {slot.actor.progress.remote(): slot for slot in slots}
    ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout)
    for ref in ready:
        slot = asked[ref]
        try:
            now = ray.get(ref)
        except Exception:  # a worker that died: what it did not report is never shown
            continue
        new = min(now - slot.seen, bar.total - bar.done)
        if new > 0:
            bar.update(new)
        slot.seen = max(slot.seen, now)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return " ".join((text[0] if text else type(e).__name__).split())[:200]


# ---- extraction ------------------------------------------------------------------------------------------------

@dataclass
class ShardJob:
    """What a worker needs to extract shards of one extraction: everything is a path all workers reach."""
    data: str
    cache_dir: str
    split: Any  # featkit.data.SplitConfig
    key: str  # the dataset content and split the driver saw
    opts: Any  # featkit.extract.ExtractOptions, without shard
    chunk: int  # photos per saved chunk: must be the driver's, since shards are made of chunks


def _open_shard_worker(job: ShardJob):
    from . import extract as extract_module
    from .data import prepare

    extract_module.CHUNK = job.chunk  # this worker process only runs this extraction
    prep = prepare(job.data, cache_dir=job.cache_dir, split=job.split, quiet=True)
    if prep.key != job.key:
        raise FeatkitError(f"the worker on {socket.gethostname()} sees different photos at {job.data} "
                           f"({prep.key}, the driver saw {job.key}): give every node the same shared folder.")
    return prep, extract_module.build_backbone(job.opts)


def _extract_shard(job: ShardJob, shard: tuple[int, int], state) -> list:
    from .extract import extract

    prep, backbone = state
    return extract(prep, replace(job.opts, shard=shard), cache_dir=job.cache_dir, quiet=True, backbone=backbone,
                   on_progress=report_progress)


def extract_on_ray(data: str | Path, opts, cache_dir: str | Path = "cache", split=None, *,
                   address: str | None = None, workers: int | None = None, shards: int | None = None,
                   retries: int = RETRIES, quiet: bool = False, log: Callable[[str], None] | None = None,
                   command: str | None = None) -> list:
    """`featkit extract --engine ray`: the views `opts` asks for, extracted shard by shard on Ray actors and
    merged as `featkit merge` does; returns one ViewResult per view, like `featkit.extract.extract`.

    workers: actors (default: one per GPU of the cluster, else one per node, each using that node's cores).
    shards: parts to split each view into (default: one per worker). Views already complete return at once
    without starting Ray; complete shards of an interrupted job are kept. A shard whose worker dies is retried
    (`retries` times), then the job stops with one line naming the failed shards and `command` to re-run them.
    """
    from . import extract as ex
    from .data import prepare

    if opts.shard is not None:
        raise FeatkitError("--shard picks one part to run by hand; --engine ray splits the work into parts "
                           "itself: drop --shard.")
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
    opts = replace(opts, backbone=_absolute(opts.backbone), weights=_absolute(opts.weights),
                   plain="plain" in names, augment=opts.augment if any(n.startswith("augment") for n in names) else 0,
                   sensitivity=any(n.startswith("sens") for n in names))
    started = time.perf_counter()
    with ray_session(address) as ray:
        start_seconds = time.perf_counter() - started
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        n_workers = worker_count(ray, workers or (gpus or nodes), 1, 1 if gpus else 0, log)
        most_chunks = max(-(-len(v.rows) // ex.CHUNK) for v in todo)
        n = max(1, min(shards or n_workers, most_chunks))
        left = [(i, n) for i in range(n)
                if any(ex.cached_result(prep, replace(opts, shard=(i, n)), v) is None for v in todo)]
        n_workers = min(n_workers, max(1, len(left)))
        threads = max(1, min(8, int(res.get("CPU", 1)) // n_workers))
        job = ShardJob(str(Path(data).resolve()), str(Path(cache_dir).resolve()), prep.split, prep.key,
                       replace(opts, threads=opts.threads or threads), ex.CHUNK)
        total = sum(ex.photos_to_extract(v, s) for v in todo for s in left)
        ran = time.perf_counter()
        try:
            run_tasks(partial(_extract_shard, job), left, workers=n_workers, retries=retries,
                      setup=partial(_open_shard_worker, job), num_gpus=1 if gpus else 0,
                      env={} if gpus else {"FEATKIT_ONNX_THREADS": str(threads)}, total=total,
                      desc=f"extract on Ray ({n_workers} worker{'s' * (n_workers > 1)})", unit="photos",
                      quiet=quiet, log=log, name=lambda s: f"shard {s[0]}/{s[1]}")
        except TasksFailed as e:
            failed = ", ".join(f"{f.item[0]}/{f.item[1]}" for f in e.failures)
            tries = max(f.attempts for f in e.failures)
            raise FeatkitError(f"extraction on Ray failed for shard(s) {failed} of {', '.join(sorted(names))} after "
                               f"{tries} attempt{'s' * (tries > 1)} ({e.failures[0].error}); the finished shards are "
                               f"kept: run "
                               f"`{command or 'the same featkit extract --engine ray command'}` again to re-run "
                               f"only the failed ones.") from None
        wall = time.perf_counter() - ran
    return [done[v.name] or _merge_view(v, n, wall, start_seconds, n_workers, total) for v in views]


def _merge_view(view, n: int, wall: float, start_seconds: float, n_workers: int, photos: int):
    from .cache import read_meta
    from .extract import ViewResult, merge, shard_path

    files = [shard_path(view.path, (i, n)) for i in range(n)]
    extra = {"engine": "ray", "ray_workers": n_workers, "ray_shards": n, "ray_start_seconds": round(start_seconds, 3),
             "ray_worker_seconds": round(sum(read_meta(f).seconds or 0.0 for f in files), 3)}
    # seconds and photos/s of the merged file: the whole job's, as a local extraction records them
    meta = read_meta(merge(files, view.path, seconds=wall, extra=extra))
    for f in files:  # the merged file holds all of them
        f.unlink()
    return ViewResult(view.name, str(view.path), "extracted", meta.photos, round(wall, 3),
                      round(photos / wall, 2) if wall > 0 else 0.0, meta.failures)


def _absolute(path: str) -> str:
    """Paths a worker opens are made absolute: a Ray worker's working folder is not the driver's."""
    return str(Path(path).resolve()) if Path(path).is_file() else path
