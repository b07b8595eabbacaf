"""One view's extraction as three stages: reader (decode pool) -> mapper (backbone forward) -> writer (chunks, then
the cache file).

    reader   `Reader.read(chunk, rows)`: the photos of some view rows decoded (and perturbed) by a thread pool
             through the one image loader, as a `Batch` with its structured `ImageFailure`s; a prefetch thread keeps
             two batches ahead of the mapper (`batches`).
    mapper   `Mapper`: the backbone's forward pass on a batch, features cast to the cache's dtype.
    writer   `ChunkWriter`: the features and failures of each chunk of CHUNK view rows saved atomically under
             <view>.partial/ once the chunk is complete; `assemble` joins the chunks into the view's cache file.

Each stage times itself; the seconds per stage (`StageSeconds`: decode, forward, write) are added up across
interrupted runs and recorded in the cache's metadata (`CacheMeta.stage_seconds`). The stages overlap (decoding
runs ahead in its threads while the backbone computes), so they may add up to more than the wall-clock seconds.

An interrupted run (Ctrl-C, kill -9) resumes at the first missing chunk: a chunk is bound to its extraction by a
digest of the view's identity and verified by its checksum before it is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import atomic_path, load_npz, read_json, write_json
from featkit.core.progress import Progress
from featkit.core.schema import CacheMeta, StageSeconds
from featkit.core.version import __version__
from featkit.data import Prepared
from featkit.data.arrays import load_rows
from featkit.data.augment import photo_rng
from featkit.data.images import ImageFailure, default_threads
from featkit.features.cache import array_digest, write_cache
from featkit.features.options import ExtractOptions
from featkit.features.views import ViewJob, all_shards_present

CHUNK = 1024  # view rows per saved chunk (read at call time: tests and Ray workers set it)
PREFETCH = 2  # batches the reader decodes ahead of the mapper
CHUNK_ARRAYS = ("features", "failed_rows", "failed_paths", "failed_errors", "chunk", "identity")


@dataclass
class ViewResult:
    view: str
    path: str
    status: str  # "up to date", "extracted", "resumed", "shard done"
    photos: int
    seconds: float | None
    photos_per_second: float | None  # None when unknown (a cache that records no rate, "up to date")
    failures: list[ImageFailure] = field(default_factory=list)  # index: the row of the view
    stage_seconds: StageSeconds | None = None

    def to_dict(self) -> dict[str, Any]:
        """As `featkit extract --json` prints it."""
        return {
            "view": self.view,
            "path": self.path,
            "status": self.status,
            "photos": self.photos,
            "seconds": self.seconds,
            "photos_per_second": self.photos_per_second,
            "failures": failure_records(self.failures),
            "stage_seconds": self.stage_seconds.to_dict() if self.stage_seconds else None,
        }


def failures_of(meta: CacheMeta) -> list[ImageFailure]:
    """The photos a cache left out, as the loader reported them (caches before schema 3: row -1, and the error
    text then began with the path)."""
    return [ImageFailure(int(f.get("row", -1)), str(f.get("path", "")), str(f.get("error", ""))) for f in meta.failures]


def failure_records(failures: list[ImageFailure]) -> list[dict[str, Any]]:
    """CacheMeta.failures: one {"row", "path", "error"} per photo left out."""
    return [{"row": int(f.index), "path": f.path, "error": f.error} for f in failures]


# ---- reader ------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """What the reader hands the mapper: decoded photos of view rows `rows` (all of one chunk), the rows that
    failed (index: view row) and the seconds decoding took."""

    chunk: int
    rows: range
    images: np.ndarray
    failures: list[ImageFailure]
    seconds: float


class Reader:
    """Decodes (and perturbs) photos of one view in parallel threads, through the one image loader."""

    def __init__(self, prep: Prepared, job: ViewJob, size: int, opts: ExtractOptions, pool: ThreadPoolExecutor):
        self.prep, self.job, self.size, self.opts, self.pool = prep, job, size, opts, pool

    def read(self, chunk: int, indices: range) -> Batch:
        t0 = time.perf_counter()
        rows = [int(r) for r in self.job.rows[indices.start : indices.stop]]
        job, seed = self.job, self.opts.seed
        perturbation = job.perturbation

        def perturb(i: int, img: np.ndarray) -> np.ndarray:
            assert perturbation is not None
            return perturbation.apply(img, photo_rng(seed, job.name, int(job.copies[indices[i]]), rows[i]))

        images, failures = load_rows(
            self.prep,
            rows,
            self.size,
            self.opts.resize,
            self.opts.crop_box,
            self.opts.decode,
            perturb if perturbation else None,
            self.pool,
        )
        view_failures = [dataclasses.replace(f, index=indices[f.index]) for f in failures]
        return Batch(chunk, indices, images, view_failures, time.perf_counter() - t0)


def batches(reader: Reader, work: list[tuple[int, range]], prefetch: int = PREFETCH) -> Iterator[Batch]:
    """The batches of `work` ((chunk, view rows) in order), decoded on a prefetch thread `prefetch` ahead."""
    with ThreadPoolExecutor(1) as prefetcher:
        pending: list[Future[Batch]] = [prefetcher.submit(reader.read, k, r) for k, r in work[:prefetch]]
        for j in range(len(work)):
            batch = pending.pop(0).result()
            if j + prefetch < len(work):
                pending.append(prefetcher.submit(reader.read, *work[j + prefetch]))
            yield batch


# ---- mapper ------------------------------------------------------------------------------------------------


class Mapper:
    """The backbone's forward pass on each batch, features in the cache's dtype; `seconds`: time spent in it."""

    def __init__(self, backbone, dtype: str):
        self.backbone, self.dtype, self.seconds = backbone, dtype, 0.0

    def __call__(self, batch: Batch) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.backbone(batch.images).astype(self.dtype)
        self.seconds += time.perf_counter() - t0
        return out


# ---- writer ------------------------------------------------------------------------------------------------


def chunk_ids(n: int, shard: tuple[int, int] | None) -> list[int]:
    ids = range((n + CHUNK - 1) // CHUNK)
    return [k for k in ids if shard is None or k % shard[1] == shard[0]]


def chunk_file(partial: Path, k: int) -> Path:
    return partial / f"chunk-{k:06d}.npz"


def chunk_rows(k: int, n: int) -> range:
    """The view rows chunk k covers."""
    return range(k * CHUNK, min(n, (k + 1) * CHUNK))


def identity_digest(identity: dict) -> str:
    """Binds a chunk to its extraction: a chunk copied in from another run's .partial/ carries another digest."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def save_chunk(partial: Path, k: int, features: np.ndarray, failures: list[ImageFailure], bound: str) -> None:
    arrays = {
        "features": features,
        "failed_rows": np.array([f.index for f in failures], np.int64),
        "failed_paths": np.array([f.path for f in failures], dtype=str),
        "failed_errors": np.array([f.error for f in failures], dtype=str),
        "chunk": np.array(k),
        "identity": np.array(bound),
    }
    with atomic_path(chunk_file(partial, k)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, checksum=np.array(array_digest(arrays)), **arrays)  # type: ignore[arg-type]


def load_chunk(partial: Path, k: int, bound: str, n: int) -> dict[str, np.ndarray]:
    """Chunk k of a .partial folder, verified: whole (its checksum), of this extraction (identity digest), of this
    position (chunk index) and with one row per photo it covers; DamagedFileError otherwise (also for a chunk saved
    by a featkit before failures were kept as path and error: it is extracted again)."""
    path = chunk_file(partial, k)
    arrays = load_npz(path, (*CHUNK_ARRAYS, "checksum"), fix="featkit extract recomputes it")
    expected = len(chunk_rows(k, n))
    body = {name: arrays[name] for name in CHUNK_ARRAYS}
    if str(arrays["checksum"]) != array_digest(body):
        why = "its contents do not match its checksum"
    elif str(arrays["identity"]) != bound or int(arrays["chunk"]) != k:
        why = "it belongs to another extraction or position (copied from another run?)"
    elif len(arrays["features"]) + len(arrays["failed_rows"]) != expected:
        why = f"{len(arrays['features'])} rows + {len(arrays['failed_rows'])} failures for {expected} photos"
    elif not len(arrays["failed_rows"]) == len(arrays["failed_paths"]) == len(arrays["failed_errors"]):
        why = "its failure lists differ in length"
    else:
        return arrays
    raise DamagedFileError(path, f"{path} is refused: {why}")


def chunk_failures(arrays: dict[str, np.ndarray]) -> list[ImageFailure]:
    """The failures a loaded chunk recorded, as the reader reported them."""
    return [
        ImageFailure(int(i), str(p), str(e))
        for i, p, e in zip(arrays["failed_rows"], arrays["failed_paths"], arrays["failed_errors"], strict=True)
    ]


class ChunkWriter:
    """Collects the mapper's features and the reader's failures of the chunk being extracted and saves the chunk
    once its last batch is in (features of the photos that decoded, in view-row order, plus the failures: one of
    the two per row); `seconds`: time spent saving."""

    def __init__(self, partial: Path, bound: str):
        self.partial, self.bound, self.seconds = partial, bound, 0.0
        self._feats: list[np.ndarray] = []
        self._fails: list[ImageFailure] = []

    def add(self, batch: Batch, features: np.ndarray, last_of_chunk: bool) -> None:
        """Keep the features of the batch's photos that decoded (a failed photo's row is not a photo)."""
        if batch.failures:
            failed = np.isin(np.arange(batch.rows.start, batch.rows.stop), [f.index for f in batch.failures])
            features = features[~failed]
        self._feats.append(features)
        self._fails.extend(batch.failures)
        if last_of_chunk:
            t0 = time.perf_counter()
            save_chunk(self.partial, batch.chunk, np.concatenate(self._feats), self._fails, self.bound)
            self.seconds += time.perf_counter() - t0
            self._feats, self._fails = [], []


def photos_to_extract(job: ViewJob, shard: tuple[int, int] | None) -> int:
    """Photos of one view (or of one shard of it) whose chunks are not saved yet."""
    n = len(job.rows)
    return sum(len(chunk_rows(k, n)) for k in chunk_ids(n, shard) if not chunk_file(job.partial, k).exists())


# ---- one view, stage by stage ---------------------------------------------------------------------------------


def _read_or(path: Path, default):
    """A small JSON state file of the .partial folder, or `default` when it is missing or damaged."""
    try:
        return read_json(path) if path.exists() else default
    except DamagedFileError:
        return default


def _chunk_usable(partial: Path, k: int, bound: str, n: int, log) -> bool:
    if not chunk_file(partial, k).exists():
        return False
    try:
        load_chunk(partial, k, bound, n)
        return True
    except DamagedFileError as e:
        log(f"{e}: extracting that chunk again")
        chunk_file(partial, k).unlink()
        return False


def _timing_file(partial: Path, shard: tuple[int, int] | None) -> Path:
    return partial / ("seconds.json" if shard is None else "seconds-shard-{}-of-{}.json".format(*shard))


def _prior_timing(path: Path) -> tuple[float, StageSeconds]:
    """(wall seconds, seconds per stage) of earlier, interrupted runs of this view (a bare number: a featkit that
    recorded no stages)."""
    saved = _read_or(path, 0.0)
    if isinstance(saved, (int, float)) and not isinstance(saved, bool):
        return float(saved), StageSeconds()
    if isinstance(saved, dict) and isinstance(saved.get("seconds"), (int, float)):
        try:
            return float(saved["seconds"]), StageSeconds.from_dict(saved, str(path))
        except FeatkitError:  # a damaged state file only loses the timing of earlier runs
            return float(saved["seconds"]), StageSeconds()
    return 0.0, StageSeconds()


def run_view(
    prep: Prepared,
    opts: ExtractOptions,
    job: ViewJob,
    identity: dict,
    backbone,
    target: Path,
    quiet: bool,
    log: Callable[[str], None],
    on_progress: Callable[[int], None] | None = None,
    rebuild: str = "",
) -> ViewResult:
    """Extract the chunks of `job` (of `opts.shard`) that are not saved yet, reader -> mapper -> writer, then
    assemble the view's cache file at `target`."""
    partial = job.partial
    state_file = partial / "identity.json"
    # shards of one view may run at once and share this folder: only a recorded different (or damaged) identity
    # clears it
    if partial.exists() and state_file.exists() and _read_or(state_file, None) != identity:
        log(f"{partial} holds chunks of a different extraction (or a damaged identity.json): starting that view afresh")
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    if not state_file.exists():
        write_json(state_file, identity)

    n = len(job.rows)
    mine = chunk_ids(n, opts.shard)
    if opts.shard is not None and not mine:  # shards are whole chunks of CHUNK photos
        print(
            f"warning: --shard {opts.shard[0]}/{opts.shard[1]} holds 0 of the {n:,} photos of {job.name}: shards are "
            f"whole chunks of {CHUNK:,} photos, and {n:,} photos make {-(-n // CHUNK)}; the other shards hold them.",
            file=sys.stderr,
            flush=True,
        )
    bound = identity_digest(identity)
    todo = [k for k in mine if not _chunk_usable(partial, k, bound, n, log)]
    status = "resumed" if len(todo) < len(mine) else "extracted"
    if status == "resumed":
        log(f"{job.name}: resuming, {len(mine) - len(todo)} of {len(mine)} chunks already done")
    size = backbone.batch_size
    work = [(k, range(s, min(s + size, chunk_rows(k, n).stop))) for k in todo for s in chunk_rows(k, n)[::size]]
    total = sum(len(r) for _, r in work)
    started = time.perf_counter()
    mapper, writer = Mapper(backbone, opts.dtype), ChunkWriter(partial, bound)
    decode = 0.0
    with (
        ThreadPoolExecutor(opts.threads or default_threads()) as pool,
        Progress(total, f"extract {job.name}", quiet=quiet) as bar,
    ):
        reader = Reader(prep, job, backbone.size, opts, pool)
        for j, batch in enumerate(batches(reader, work)):
            decode += batch.seconds
            features = mapper(batch)
            bar.update(len(batch.rows))
            if on_progress is not None:  # before the chunk is saved: a worker stopped here redoes that chunk
                on_progress(len(batch.rows))
            writer.add(batch, features, last_of_chunk=j + 1 == len(work) or work[j + 1][0] != batch.chunk)
    seconds = time.perf_counter() - started
    timing = _timing_file(partial, opts.shard)
    prior_seconds, prior_stages = _prior_timing(timing)
    stages = prior_stages + StageSeconds(decode, mapper.seconds, writer.seconds)
    write_json(timing, {"seconds": prior_seconds + seconds, **stages.to_dict()})
    total_seconds = prior_seconds + seconds
    return assemble(
        prep, opts, job, identity, backbone, partial, mine, target, status, total_seconds, stages, log, bound, rebuild
    )


def assemble(
    prep: Prepared,
    opts: ExtractOptions,
    job: ViewJob,
    identity: dict,
    backbone,
    partial: Path,
    chunks: list[int],
    target: Path,
    status: str,
    seconds: float,
    stages: StageSeconds,
    log: Callable[[str], None],
    bound: str,
    rebuild: str = "",
) -> ViewResult:
    """The writer's last step: the verified chunks joined into the view's cache file (or shard file) at `target`,
    with its metadata; the .partial folder is removed once every part of the view is written. The seconds spent
    here, up to the final file's own write, count as "write"."""
    t0 = time.perf_counter()
    parts, keep, failures = [], [], []
    n = len(job.rows)
    for k in chunks:
        z = load_chunk(partial, k, bound, n)
        parts.append(z["features"])
        idx = np.asarray(chunk_rows(k, n), np.int64)
        keep.append(idx[~np.isin(idx, z["failed_rows"])])
        failures += chunk_failures(z)
    feats = np.concatenate(parts) if parts else np.zeros((0, backbone.feature_dim), opts.dtype)
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    covered = sum(len(chunk_rows(k, n)) for k in chunks)
    rows = job.rows[idx]
    m = prep.manifest
    stages = dataclasses.replace(stages, write=stages.write + time.perf_counter() - t0)
    stages = StageSeconds(round(stages.decode, 3), round(stages.forward, 3), round(stages.write, 3))
    meta = CacheMeta(
        backbone=backbone.spec,
        size=backbone.size,
        view=job.name,
        view_params=job.perturbation.to_dict() if job.perturbation else None,
        classes=prep.classes,
        dataset=prep.key,
        fingerprint=prep.fingerprint,
        manifest=str(prep.manifest_path),
        resize=opts.resize,
        crop_box=opts.crop_box,
        decode=opts.decode,
        dtype=opts.dtype,
        photos=int(len(rows)),
        rows_total=n,
        seconds=round(seconds, 3),
        photos_per_second=round(covered / seconds, 2) if seconds > 0 else None,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        failures=failure_records(failures),
        shard=list(opts.shard) if opts.shard else None,
        final_name=job.path.name,
        identity=identity,
        featkit_version=__version__,
        data=str(prep.dataset.source.path),
        rebuild=rebuild or None,
        stage_seconds=stages,
        extra={"onnxruntime_session": getattr(backbone, "session_settings", None)},
    )
    write_cache(
        target,
        feats,
        m["label"].to_numpy()[rows],
        m["split"].to_numpy()[rows],
        m["image_id"].to_numpy()[rows],
        meta,
        copy=job.copies[idx] if job.name.startswith("augment") else None,
        dtype=opts.dtype,
        row=idx,
    )
    if failures:
        log(f"{job.name}: {len(failures)} photos could not be decoded and are not in the cache:")
        for f in failures[:10]:
            log(f"    {f.path}: {f.error}")
    if opts.shard is None or all_shards_present(job.path, opts.shard):
        shutil.rmtree(partial, ignore_errors=True)
    return ViewResult(
        job.name,
        str(target),
        "shard done" if opts.shard else status,
        int(len(rows)),
        round(seconds, 3),
        meta.photos_per_second,
        failures,
        stages,
    )


__all__ = [
    "CHUNK",
    "ViewResult",
    "Batch",
    "Reader",
    "Mapper",
    "ChunkWriter",
    "batches",
    "run_view",
    "assemble",
    "save_chunk",
    "load_chunk",
    "chunk_ids",
    "chunk_file",
    "chunk_rows",
    "chunk_failures",
    "identity_digest",
    "photos_to_extract",
    "failures_of",
    "failure_records",
]
