"""A pool of Ray actors for any picklable work (an optional extra: pip install "featkit[ray]").

    results = run_tasks(fit_one, candidates, address="auto")        # any picklable work, retried if a worker dies

`run_tasks` keeps a pool of Ray Core actors (one per worker, placed with SPREAD); each item runs once on one of
them, and an item whose worker process dies is retried on a fresh worker a bounded number of times. An exception
raised by the work itself is not retried: it is a bug or bad input, and would fail again.

Extraction on Ray (featkit.features.ray_shards) is built on it.

Nothing here imports Ray until a function is called.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.core.extras import install_hint
from featkit.core.progress import Progress

RAY_EXTRA = install_hint("ray")
RETRIES = 3
# a local instance started here only passes shard results (a few KB) through the object store
LOCAL_OBJECT_STORE = 256 * 2**20


def import_ray():
    """The ray module, or a one-line FeatkitError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise FeatkitError(
            f'--engine ray needs Ray, an optional extra of featkit: {RAY_EXTRA} (or pip install "ray>=2.9").'
        ) from None
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
        raise FeatkitError(
            f"could not start or join {where} ({first}): start one with `ray start --head`, "
            f"then pass its address (or auto on its head node)."
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


# an HTTP/2 client's first bytes (the connection preface, then an empty SETTINGS frame): Ray's GCS and its client
# server speak gRPC, which answers with a SETTINGS frame of its own
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
PROBE_SECONDS = 5.0


def _check_reachable(address: str) -> None:
    """Ray keeps retrying an address for minutes where nothing answers, or where something that is not Ray
    answers: fail within seconds instead, naming the address."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    todo = "start the cluster with `ray start --head` and give the address it prints (or auto on its head node)"
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS)
    except OSError as e:
        raise FeatkitError(f"--address {address}: nothing answers there ({e.strerror or e}): {todo}.") from None
    with conn:
        if not _speaks_grpc(conn):
            raise FeatkitError(
                f"--address {address}: something answers there, but not Ray (no gRPC reply within "
                f"{PROBE_SECONDS:g} s): {todo}."
            )


def _speaks_grpc(conn: socket.socket) -> bool:
    """True when the server on `conn` answers an HTTP/2 preface with a SETTINGS frame (what gRPC servers do)."""
    try:
        conn.settimeout(PROBE_SECONDS)
        conn.sendall(_HTTP2_PREFACE)
        head = b""
        while len(head) < 9:  # a frame header: length (3 bytes), type (1), flags (1), stream id (4)
            more = conn.recv(9 - len(head))
            if not more:
                return False
            head += more
    except OSError:  # timed out, reset
        return False
    return head[3] == 4 and int.from_bytes(head[5:9], "big") & 0x7FFFFFFF == 0


def check_workers(workers: int | None, option: str = "--workers") -> None:
    """Refuse a worker count below 1 (None: the default) with one line naming the option."""
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
        raise FeatkitError(
            f"{option} {workers}: give 1 or more workers, or leave {option} out for the default (one per GPU of "
            "the cluster, else one per node)."
        )


# ---- progress reported from inside a worker process ----------------------------------------------------------

_reported = 0
_reported_lock = threading.Lock()


def report_progress(n: int) -> None:
    """Called by work running on a `run_tasks` worker: n more units are done. The driver polls the workers and
    shows one progress line for the whole job (when run_tasks was given `total`)."""
    global _reported
    with _reported_lock:
        _reported += n


class _Worker:
    """One Ray actor: runs `setup()` once, on its first item, then fn(item) or fn(item, state) per item."""

    def __init__(self, fn: Callable, setup: Callable[[], Any] | None, env: dict[str, str]):
        os.environ.update(env)
        self.fn, self.setup, self.state, self.ready = fn, setup, None, setup is None

    def run(self, item: Any) -> Any:
        if not self.ready and self.setup is not None:
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


def worker_count(
    ray, requested: int | None, num_cpus: float = 1, num_gpus: float = 0, log: Callable[[str], None] | None = None
) -> int:
    """How many workers of `num_cpus` CPUs and `num_gpus` GPUs to start: `requested`, or as many as the cluster
    holds now; a request above that is lowered (with a message) rather than waiting for resources forever."""
    res = ray.cluster_resources()
    room = [int(res.get(key, 0) // need) for key, need in (("CPU", num_cpus), ("GPU", num_gpus)) if need]
    fit = min(room) if room else 1
    if fit < 1:
        raise FeatkitError(
            f"the Ray cluster has {res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs: not "
            f"enough for one worker of {num_cpus:g} CPUs and {num_gpus:g} GPUs."
        )
    if requested is not None and requested > fit and log is not None:
        log(
            f"--workers {requested}: the Ray cluster has room for {fit} (CPU {res.get('CPU', 0):g}, "
            f"GPU {res.get('GPU', 0):g}); using {fit}"
        )
    return max(1, min(requested or fit, fit))


def run_tasks(
    fn: Callable,
    items: Sequence,
    *,
    address: str | None = None,
    workers: int | None = None,
    retries: int = RETRIES,
    setup: Callable[[], Any] | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    env: dict[str, str] | None = None,
    total: int | None = None,
    desc: str = "tasks",
    unit: str = "tasks",
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    name: Callable[[Any], str] = str,
) -> list:
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
    check_workers(workers)
    items = list(items)
    if not items:
        return []
    env = {**{k: v for k, v in os.environ.items() if k.startswith("FEATKIT_")}, **(env or {})}
    with ray_session(address) as ray:
        from ray.exceptions import RayError, RayTaskError

        n_workers = min(worker_count(ray, workers, num_cpus, num_gpus, log), len(items))
        actor_class = ray.remote(_Worker).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=2, scheduling_strategy="SPREAD"
        )
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
                                log(
                                    f"{desc}: the worker running {name(items[i])} died ({_one_line(e)}); "
                                    f"trying again ({attempts[i] + 1} of {retries + 1})"
                                )
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
