"""`featkit extract`: run a backbone over every photo of the split manifest once and cache pooled features.

Views, one HDF5 file each, under cache/features/<dataset>-<split>/<backbone>-<weights>-<size>-<pooling>-<resize>/:
  plain.h5                    every photo of the manifest (train, valid and test)
  augment-<N>.h5              N randomly transformed copies of each training photo
  sens-*.h5                   the test photos under each perturbation of the robustness study
  tta-flip.h5                 the valid and test photos mirrored left-right (`--tta flip`)

Work is done in chunks of CHUNK photos; each finished chunk is saved atomically under <view>.partial/, so an
interrupted run (Ctrl-C, kill -9) resumes at the first missing chunk. The final file is written under a
temporary name and renamed, so a file at the final path is always complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featkit.backbones import BackboneSpec, resolve
from featkit.core.errors import DamagedFileError, FeatkitError
from featkit.core.fileio import atomic_path, load_npz, read_json, write_json
from featkit.core.locks import discard_lock_folder, exclusive
from featkit.core.progress import Progress
from featkit.core.resources import available_memory_bytes
from featkit.core.schema import CacheMeta, check_comparable
from featkit.core.version import __version__
from featkit.data import Prepared
from featkit.data.arrays import load_rows
from featkit.data.augment import (
    SENSITIVITY_VIEWS,
    STUDY_AUGMENTATION,
    TTA_VIEWS,
    Mirror,
    Perturbation,
    augment_view,
    photo_rng,
)
from featkit.data.images import DECODE_MODES, check_resize, default_threads
from featkit.features.cache import array_digest, read_cache, verify_cache, write_cache

CHUNK = 1024
MAX_SIZE = 4096  # no backbone is run above this; memory is checked below it
# bytes per input pixel a forward pass may hold at its peak, an upper estimate: VGG16's first two convolutions keep
# 2 x 64 float32 channels per input pixel (512 B), plus the float32 input and the decoded uint8 batches
BYTES_PER_PIXEL = 576
PRECISIONS = ("float32", "int8")


@dataclass
class ExtractOptions:
    backbone: str = "vgg16"
    size: int | None = None
    weights: str = "imagenet"
    pooling: str = "avg"
    resize: str = "stretch"
    crop_box: bool = False
    batch_size: int | None = None
    dtype: str = "float16"
    augment: int = 0
    rotation: float = STUDY_AUGMENTATION.rotation
    shift: float = STUDY_AUGMENTATION.width_shift
    flips: bool = STUDY_AUGMENTATION.horizontal_flip
    sensitivity: bool = False
    tta: tuple[str, ...] = ()
    plain: bool = True
    shard: tuple[int, int] | None = None
    seed: int = 0
    threads: int | None = None
    decode: str = "draft"
    precision: str = "float32"

    def __post_init__(self):
        check_resize(self.resize)
        if self.pooling not in ("avg", "max"):
            raise FeatkitError(f"--pooling {self.pooling!r} should be avg or max.")
        if self.size is not None and not 8 <= self.size <= MAX_SIZE:
            raise FeatkitError(f"--size {self.size} should be from 8 to {MAX_SIZE} pixels, e.g. 128 or 224.")
        if self.threads is not None and self.threads < 1:
            raise FeatkitError(
                f"--threads {self.threads} should be 1 or more decoding threads (leave it out for all cores)."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise FeatkitError(f"--batch-size {self.batch_size} should be 1 or more photos per forward pass.")
        if not (math.isfinite(self.rotation) and 0 <= self.rotation <= 360):
            raise FeatkitError(f"--rotation {self.rotation} should be a number of degrees from 0 to 360.")
        if not (math.isfinite(self.shift) and 0 <= self.shift < 1):
            raise FeatkitError(f"--shift {self.shift} should be a fraction of the side from 0 to below 1, e.g. 0.2.")
        if self.decode not in DECODE_MODES:
            raise FeatkitError(f"--decode should be one of {', '.join(DECODE_MODES)}; got {self.decode!r}.")
        if self.precision not in PRECISIONS:
            raise FeatkitError(f"--precision should be one of {', '.join(PRECISIONS)}; got {self.precision!r}.")
        if self.dtype not in ("float16", "float32"):
            raise FeatkitError(f"--dtype should be float16 or float32; got {self.dtype!r}.")
        unknown = [t for t in self.tta if t not in TTA_VIEWS]
        if unknown:
            raise FeatkitError(f"--tta {unknown[0]!r} is not a test-time view; known: {', '.join(TTA_VIEWS)}.")
        if self.augment < 0:
            raise FeatkitError(f"--augment should be 0 or more copies; got {self.augment}.")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise FeatkitError(f"--shard {i}/{n}: expected i/n with 0 <= i < n, e.g. 0/4.")


@dataclass
class ViewJob:
    name: str
    rows: np.ndarray  # manifest row per output row
    copies: np.ndarray  # copy index per output row (augmented views)
    perturbation: Perturbation | Mirror | None
    path: Path


@dataclass
class ViewResult:
    view: str
    path: str
    status: str  # "up to date", "extracted", "resumed", "shard done"
    photos: int
    seconds: float | None
    photos_per_second: float | None  # None when unknown (a cache that records no rate, "up to date")
    failures: list[dict] = field(default_factory=list)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise FeatkitError(f"--shard {text!r} should be i/n, e.g. 0/4 for the first of four parts.") from None
    return i, n


def resolve_backbone(opts: ExtractOptions) -> BackboneSpec:
    """The spec of the features these options give, without building the model (no TensorFlow import)."""
    return resolve(opts.backbone, size=opts.size, weights=opts.weights, pooling=opts.pooling)


def _slug(spec: BackboneSpec, opts: ExtractOptions) -> str:
    crop = "-box" if opts.crop_box else ""
    full = "-fulldecode" if opts.decode == "full" else ""  # draft (the default) keeps the folder names it had
    return f"{spec.slug()}-{spec.size}px-{opts.pooling}-{opts.resize}{crop}{full}"


def features_dir(prep: Prepared, opts: ExtractOptions, cache_dir: str | Path = "cache") -> Path:
    return Path(cache_dir) / "features" / prep.key / _slug(resolve_backbone(opts), opts)


def find_plain_cache(prep: Prepared, opts: ExtractOptions, cache_dir: str | Path = "cache") -> Path:
    """The finished plain-view cache these options extracted, or one line saying which command makes it."""
    path = features_dir(prep, opts, cache_dir) / "plain.h5"
    if not path.exists():
        flags = (
            f"{f' --size {opts.size}' if opts.size else ''}{' --decode full' if opts.decode == 'full' else ''}"
            f"{' --precision int8' if opts.precision == 'int8' else ''}"
        )
        raise FeatkitError(
            f"{path} does not exist: run `featkit extract --data {prep.dataset.source.path} "
            f"--backbone {opts.backbone}{flags}` first."
        )
    return path


def augment_caches(plain: Path) -> list[Path]:
    """The finished augmented views beside a plain-view cache, oldest name first."""
    return sorted(Path(plain).parent.glob("augment-*.h5"))


def sensitivity_caches(plain: Path) -> dict[str, Path]:
    """{view: path} of the finished sensitivity views beside a plain-view cache, in the study's order."""
    folder = Path(plain).parent
    return {v.name: folder / f"{v.name}.h5" for v in SENSITIVITY_VIEWS if (folder / f"{v.name}.h5").exists()}


def plan_views(prep: Prepared, opts: ExtractOptions, out_dir: Path) -> list[ViewJob]:
    split = prep.manifest["split"].to_numpy()
    all_rows = np.arange(len(split))
    train, test = all_rows[split == "train"], all_rows[split == "test"]
    jobs = []
    if opts.plain:
        jobs.append(ViewJob("plain", all_rows, np.zeros(len(all_rows), np.int64), None, out_dir / "plain.h5"))
    if opts.augment:
        view = augment_view(opts.rotation, opts.shift, opts.flips, opts.flips)
        rows = np.tile(train, opts.augment)
        copies = np.repeat(np.arange(opts.augment), len(train))
        name = f"augment-{opts.augment}-r{opts.rotation:g}-s{opts.shift:g}{'-flips' if opts.flips else ''}"
        jobs.append(ViewJob(name, rows, copies, view, out_dir / f"{name}.h5"))
    if opts.sensitivity:
        for p in SENSITIVITY_VIEWS:
            jobs.append(ViewJob(p.name, test, np.zeros(len(test), np.int64), p, out_dir / f"{p.name}.h5"))
    held_out = all_rows[np.isin(split, ("valid", "test"))]
    for t in opts.tta:
        m = TTA_VIEWS[t]
        jobs.append(ViewJob(m.name, held_out, np.zeros(len(held_out), np.int64), m, out_dir / f"{m.name}.h5"))
    return jobs


def _job_identity(prep: Prepared, spec: BackboneSpec, opts: ExtractOptions, job: ViewJob) -> dict[str, Any]:
    return {
        "dataset": prep.key,
        "fingerprint": prep.fingerprint,
        "manifest_sha1": prep.manifest_sha1,
        "backbone": spec.comparable_key(),
        "resize": opts.resize,
        "crop_box": opts.crop_box,
        "decode": opts.decode,
        "dtype": opts.dtype,
        "seed": opts.seed,
        "view": job.name,
        "view_params": job.perturbation.to_dict() if job.perturbation else None,
        "rows": len(job.rows),
    }


class _Decoder:
    """Decodes (and perturbs) photos of one view in parallel threads, through the one image loader."""

    def __init__(self, prep: Prepared, job: ViewJob, size: int, opts: ExtractOptions, pool: ThreadPoolExecutor):
        self.prep, self.job, self.size, self.opts, self.pool = prep, job, size, opts, pool

    def batch(self, indices: range) -> tuple[np.ndarray, list[tuple[int, str]]]:
        rows = [int(r) for r in self.job.rows[indices.start : indices.stop]]
        job, seed = self.job, self.opts.seed

        def perturb(i: int, img: np.ndarray) -> np.ndarray:
            assert job.perturbation is not None  # load_rows gets perturb only for a perturbed view
            return job.perturbation.apply(img, photo_rng(seed, job.name, int(job.copies[indices[i]]), rows[i]))

        images, failures = load_rows(
            self.prep,
            rows,
            self.size,
            self.opts.resize,
            self.opts.crop_box,
            self.opts.decode,
            perturb if job.perturbation else None,
            self.pool,
        )
        return images, [(indices[f.index], str(f)) for f in failures]


def _chunk_ids(n: int, shard: tuple[int, int] | None) -> list[int]:
    ids = range((n + CHUNK - 1) // CHUNK)
    return [k for k in ids if shard is None or k % shard[1] == shard[0]]


def _chunk_file(partial: Path, k: int) -> Path:
    return partial / f"chunk-{k:06d}.npz"


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
    log = log or (lambda msg: None if quiet else print(msg, file=sys.stderr))
    spec = resolve_backbone(opts)
    out_dir = Path(cache_dir) / "features" / prep.key / _slug(spec, opts)
    _say_if_dataset_changed(prep, out_dir, log)
    jobs = plan_views(prep, opts, out_dir)
    results: list[ViewResult] = []
    check_memory(spec.size, opts)
    made = not out_dir.exists()
    try:
        _extract_views(prep, opts, jobs, out_dir, results, backbone, spec, quiet, log, on_progress)
    except Exception:
        if made:  # failed before writing anything (e.g. the backbone cannot be built): no folder of lock files
            discard_lock_folder(out_dir, Path(cache_dir) / "features")
        raise
    return results


def _extract_views(prep, opts, jobs, out_dir, results, backbone, spec, quiet, log, on_progress) -> None:
    for job in jobs:
        target = shard_path(job.path, opts.shard)
        with exclusive(out_dir / f".{target.stem}.lock", str(target), log):  # a second identical command waits
            done = cached_result(prep, opts, job, spec, log)
            if done is not None:
                results.append(done)
                continue
            if target.exists():
                log(f"{target} was made from a different dataset, manifest or options: extracting it again")
                target.unlink()
            if backbone is None:
                backbone = _build_backbone(opts, spec)
            want = _job_identity(prep, spec, opts, job)
            results.append(
                _run_view(
                    prep, opts, job, want, backbone, target, quiet, log, on_progress, rebuild_command(prep, opts, spec)
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
    if meta.identity != _job_identity(prep, spec or resolve_backbone(opts), opts, job):
        return None
    return ViewResult(
        job.name, str(target), "up to date", meta.photos, meta.seconds, meta.photos_per_second, meta.failures
    )


def photos_to_extract(job: ViewJob, shard: tuple[int, int] | None) -> int:
    """Photos of one view (or of one shard of it) whose chunks are not saved yet."""
    n = len(job.rows)
    partial = _partial_dir(job)
    return sum(
        min(n, (k + 1) * CHUNK) - k * CHUNK for k in _chunk_ids(n, shard) if not _chunk_file(partial, k).exists()
    )


def check_memory(size: int, opts: ExtractOptions) -> None:
    """Refuse a --size whose batches would not fit in memory, before anything is allocated."""
    batch = opts.batch_size or 32  # the smallest batch a backbone picks by itself (Keras on a CPU)
    need = BYTES_PER_PIXEL * batch * size * size
    avail = available_memory_bytes()
    if need > avail:
        fits = int(math.sqrt(avail / (BYTES_PER_PIXEL * batch)))
        raise FeatkitError(
            f"--size {size} needs about {need / 2**30:,.1f} GiB per batch of {batch} but "
            f"{avail / 2**30:.1f} GiB is available: use --size {fits} or smaller"
            + (" or a smaller --batch-size." if batch > 1 else ".")
        )


def rebuild_command(prep: Prepared, opts: ExtractOptions, spec: BackboneSpec) -> str:
    """The `featkit extract` command that makes this cache again (named when a cache file is found damaged)."""
    parts = [
        "featkit extract",
        f"--data {prep.dataset.source.origin}",
        f"--backbone {opts.backbone}",
        f"--size {spec.size}",
    ]
    defaults = ExtractOptions()
    for flag, name in (
        ("--weights", "weights"),
        ("--pooling", "pooling"),
        ("--resize", "resize"),
        ("--augment", "augment"),
        ("--rotation", "rotation"),
        ("--shift", "shift"),
    ):
        if getattr(opts, name) != getattr(defaults, name):
            parts.append(f"{flag} {getattr(opts, name)}")
    parts += [
        flag
        for flag, on in (
            ("--crop-box", opts.crop_box),
            ("--float32", opts.dtype == "float32"),
            ("--no-flips", not opts.flips),
            ("--sensitivity", opts.sensitivity),
        )
        if on
    ]
    if prep.split.key != "70-20-10-s0":
        parts.append(
            f"--split {'/'.join(f'{f * 100:g}' for f in (prep.split.train, prep.split.valid, prep.split.test))}"
            f" --seed {prep.split.seed}"
        )
    return " ".join(parts)


def _say_if_dataset_changed(prep: Prepared, out_dir: Path, log) -> None:
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


def shard_path(path: Path, shard: tuple[int, int] | None) -> Path:
    """The file `extract --shard i/n` writes for the view whose complete file is `path`."""
    return path if shard is None else path.with_name(f"{path.stem}.shard-{shard[0]}-of-{shard[1]}.h5")


def _read_or(path: Path, default):
    """A small JSON state file of the .partial folder, or `default` when it is missing or damaged."""
    try:
        return read_json(path) if path.exists() else default
    except DamagedFileError:
        return default


def _partial_dir(job: ViewJob) -> Path:
    return job.path.with_name(job.path.stem + ".partial")


def _run_view(
    prep: Prepared,
    opts: ExtractOptions,
    job: ViewJob,
    identity: dict,
    backbone,
    target: Path,
    quiet: bool,
    log,
    on_progress: Callable[[int], None] | None = None,
    rebuild: str = "",
) -> ViewResult:
    partial = _partial_dir(job)
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
    mine = _chunk_ids(n, opts.shard)
    if opts.shard is not None and not mine:  # shards are whole chunks of CHUNK photos
        print(
            f"warning: --shard {opts.shard[0]}/{opts.shard[1]} holds 0 of the {n:,} photos of {job.name}: shards are "
            f"whole chunks of {CHUNK:,} photos, and {n:,} photos make {-(-n // CHUNK)}; the other shards hold them.",
            file=sys.stderr,
            flush=True,
        )
    bound = _identity_digest(identity)
    todo = [k for k in mine if not _chunk_usable(partial, k, bound, n, log)]
    status = "resumed" if len(todo) < len(mine) else "extracted"
    if status == "resumed":
        log(f"{job.name}: resuming, {len(mine) - len(todo)} of {len(mine)} chunks already done")
    batch = backbone.batch_size
    work = [
        (k, range(s, min(s + batch, min(n, (k + 1) * CHUNK))))
        for k in todo
        for s in range(k * CHUNK, min(n, (k + 1) * CHUNK), batch)
    ]
    total = sum(len(r) for _, r in work)
    started = time.perf_counter()
    threads = opts.threads or default_threads()
    with (
        ThreadPoolExecutor(threads) as pool,
        ThreadPoolExecutor(1) as prefetcher,
        Progress(total, f"extract {job.name}", quiet=quiet) as bar,
    ):
        decoder = _Decoder(prep, job, backbone.size, opts, pool)
        pending = [prefetcher.submit(decoder.batch, r) for _, r in work[:2]]
        feats: list[np.ndarray] = []
        fails: list[tuple[int, str]] = []
        for j, (k, rows) in enumerate(work):
            images, errors = pending.pop(0).result()
            if j + 2 < len(work):
                pending.append(prefetcher.submit(decoder.batch, work[j + 2][1]))
            feats.append(backbone(images).astype(opts.dtype))
            fails.extend(errors)
            bar.update(len(rows))
            if on_progress is not None:
                on_progress(len(rows))
            if j + 1 == len(work) or work[j + 1][0] != k:
                _save_chunk(partial, k, np.concatenate(feats), fails, bound)
                feats, fails = [], []
    seconds = time.perf_counter() - started
    seconds_file = partial / (
        "seconds.json" if opts.shard is None else "seconds-shard-{}-of-{}.json".format(*opts.shard)
    )
    prior = _read_or(seconds_file, 0.0)
    prior = float(prior) if isinstance(prior, (int, float)) else 0.0
    write_json(seconds_file, prior + seconds)
    return _assemble(
        prep, opts, job, identity, backbone, partial, mine, target, status, prior + seconds, log, bound, rebuild
    )


def _identity_digest(identity: dict) -> str:
    """Binds a chunk to its extraction: a chunk copied in from another run's .partial/ carries another digest."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _save_chunk(partial: Path, k: int, features: np.ndarray, failures: list[tuple[int, str]], bound: str) -> None:
    arrays: dict[str, Any] = {
        "features": features,
        "failed_rows": np.array([i for i, _ in failures], np.int64),
        "failed_msgs": np.array([m for _, m in failures], dtype=str),
    }
    with atomic_path(_chunk_file(partial, k)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                **arrays,
                chunk=np.array(k),
                identity=np.array(bound),
                checksum=np.array(array_digest({**arrays, "chunk": np.array(k), "identity": np.array(bound)})),
            )


def load_chunk(partial: Path, k: int, bound: str, n: int) -> dict[str, np.ndarray]:
    """Chunk k of a .partial folder, verified: whole (its checksum), of this extraction (identity digest), of this
    position (chunk index) and with one row per photo it covers; DamagedFileError otherwise."""
    path = _chunk_file(partial, k)
    arrays = load_npz(
        path,
        ("features", "failed_rows", "failed_msgs", "chunk", "identity", "checksum"),
        fix="featkit extract recomputes it",
    )
    expected = min(n, (k + 1) * CHUNK) - k * CHUNK
    body = {name: arrays[name] for name in ("features", "failed_rows", "failed_msgs", "chunk", "identity")}
    if str(arrays["checksum"]) != array_digest(body):
        why = "its contents do not match its checksum"
    elif str(arrays["identity"]) != bound or int(arrays["chunk"]) != k:
        why = "it belongs to another extraction or position (copied from another run?)"
    elif len(arrays["features"]) + len(arrays["failed_rows"]) != expected:
        why = f"{len(arrays['features'])} rows + {len(arrays['failed_rows'])} failures for {expected} photos"
    else:
        return arrays
    raise DamagedFileError(path, f"{path} is refused: {why}")


def _chunk_usable(partial: Path, k: int, bound: str, n: int, log) -> bool:
    if not _chunk_file(partial, k).exists():
        return False
    try:
        load_chunk(partial, k, bound, n)
        return True
    except DamagedFileError as e:
        log(f"{e}: extracting that chunk again")
        _chunk_file(partial, k).unlink()
        return False


def _assemble(
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
    log,
    bound: str = "",
    rebuild: str = "",
) -> ViewResult:
    parts, keep, failures = [], [], []
    n = len(job.rows)
    for k in chunks:
        z = load_chunk(partial, k, bound or _identity_digest(identity), n)
        parts.append(z["features"])
        idx = np.arange(k * CHUNK, min(n, (k + 1) * CHUNK))
        ok = ~np.isin(idx, z["failed_rows"])
        keep.append(idx[ok])
        failures += [{"path": msg.split(": ", 1)[0], "error": msg} for msg in z["failed_msgs"].tolist()]
    feats = np.concatenate(parts) if parts else np.zeros((0, backbone.feature_dim), opts.dtype)
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    all_idx = np.concatenate([np.arange(k * CHUNK, min(n, (k + 1) * CHUNK)) for k in chunks]) if chunks else idx
    feats = feats[np.isin(all_idx, idx)]
    rows = job.rows[idx]
    m = prep.manifest
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
        photos_per_second=round(len(all_idx) / seconds, 2) if seconds > 0 else None,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        failures=failures,
        shard=list(opts.shard) if opts.shard else None,
        final_name=job.path.name,
        identity=identity,
        featkit_version=__version__,
        data=str(prep.dataset.source.path),
        rebuild=rebuild or None,
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
            log(f"    {f['error']}")
    if opts.shard is None or _all_shards_present(job.path, opts.shard):
        shutil.rmtree(partial, ignore_errors=True)
    return ViewResult(
        job.name,
        str(target),
        "shard done" if opts.shard else status,
        int(len(rows)),
        round(seconds, 3),
        meta.photos_per_second or 0.0,
        failures,
    )


def _all_shards_present(path: Path, shard: tuple[int, int]) -> bool:
    return all(shard_path(path, (i, shard[1])).exists() for i in range(shard[1]))


def merge(
    shard_files: list[Path], out: Path | None = None, seconds: float | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Join the shard files of one view (from `extract --shard i/n`) into the complete cache file.
    seconds: the time the whole job took (default: the shards' times added up); extra: keys for meta.extra."""
    if not shard_files:
        raise FeatkitError(
            "featkit merge needs the shard files of one view (…/plain.shard-0-of-4.h5 and its siblings)."
        )
    sets = [read_cache(p) for p in shard_files]
    metas = [s.meta for s in sets]
    for p, m in zip(shard_files, metas, strict=True):
        if m.shard is None:
            raise FeatkitError(f"{p} is not a shard file (made without --shard): nothing to merge.")
        check_comparable(
            {**metas[0].comparable_key(), **(metas[0].identity or {})},
            {**m.comparable_key(), **(m.identity or {})},
            str(shard_files[0]),
            str(p),
            "merge only the shards of one `featkit extract --shard i/n` command",
        )
    shards = [m.shard for m in metas if m.shard is not None]  # all of them: checked above
    n_shards = shards[0][1]
    got = sorted(s[0] for s in shards)
    if got != list(range(n_shards)) or any(s[1] != n_shards for s in shards):
        missing = sorted(set(range(n_shards)) - set(got))
        raise FeatkitError(
            f"shards {missing} of {n_shards} are missing (or some are given twice): "
            f"run `featkit extract --shard i/{n_shards}` for each, then merge again."
        )
    row = np.concatenate([s.row for s in sets])
    order = np.argsort(row, kind="stable")
    seconds = round(sum(m.seconds or 0.0 for m in metas) if seconds is None else seconds, 3)
    meta = metas[0].replace(
        shard=None,
        photos=int(len(row)),
        seconds=seconds,
        failures=[f for m in metas for f in m.failures],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        photos_per_second=round(len(row) / seconds, 2) if seconds else None,
        extra={**metas[0].extra, "merged_from": [str(p) for p in shard_files], **(extra or {})},
    )
    cat = lambda xs: np.concatenate(xs)[order]  # noqa: E731
    if out is None:
        if not meta.final_name:
            raise FeatkitError(f"{shard_files[0]} does not record the name of its complete file: give --out FILE.h5.")
        out = Path(shard_files[0]).with_name(meta.final_name)
    write_cache(
        out,
        cat([s.features for s in sets]),
        cat([s.labels for s in sets]),
        cat([s.split for s in sets]),
        cat([s.image_ids for s in sets]),
        meta,
        copy=cat([s.copy for s in sets]) if sets[0].copy is not None else None,
        dtype=meta.dtype,
        row=row[order],
    )
    return out
