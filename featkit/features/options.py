"""What `featkit extract` is asked to do: `ExtractOptions` (checked once, when made), the backbone spec they name,
the memory check a size must pass before anything is allocated, and the command line that makes a cache again."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from featkit.backbones import BackboneSpec, locate, resolve
from featkit.core.errors import FeatkitError
from featkit.core.resources import available_memory_bytes
from featkit.data import Prepared
from featkit.data.augment import STUDY_AUGMENTATION, TTA_VIEWS
from featkit.data.images import DECODE_MODES, check_resize

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
        # a name of an .onnx file in the models folder becomes its path, once (featkit.backbones.names.locate)
        self.backbone = locate(self.backbone)
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
            raise FeatkitError(f"--augment-copies should be 0 or more copies; got {self.augment}.")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise FeatkitError(f"--shard {i}/{n}: expected i/n with 0 <= i < n, e.g. 0/4.")


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


def rebuild_command(
    prep: Prepared, opts: ExtractOptions, spec: BackboneSpec, cache_dir: str | Path | None = None
) -> str:
    """The `featkit extract` command that makes this cache (again): named when a cache file is found damaged or
    missing; every option that differs from the defaults, so the command makes this very cache."""
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
        ("--augment-copies", "augment"),
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
            ("--decode full", opts.decode == "full"),
            ("--precision int8", opts.precision == "int8"),
        )
        if on
    ]
    if prep.split.key != "70-20-10-s0":
        parts.append(
            f"--split {'/'.join(f'{f * 100:g}' for f in (prep.split.train, prep.split.valid, prep.split.test))}"
            f" --seed {prep.split.seed}"
        )
    if cache_dir is not None and Path(cache_dir) != Path("cache"):
        parts.append(f"--cache {cache_dir}")
    return " ".join(parts)


__all__ = [
    "ExtractOptions",
    "PRECISIONS",
    "MAX_SIZE",
    "BYTES_PER_PIXEL",
    "parse_shard",
    "resolve_backbone",
    "check_memory",
    "rebuild_command",
]
