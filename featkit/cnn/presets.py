"""Presets: the 18 rows of the classic food-classification study (/work/shared/docs/study.md), by name, as the
study ran them.

Custom CNNs (rows 1-16): N x [Conv2D(kernel 2, 'same', relu) -> Dropout (when the row has one) -> MaxPool 2],
global average pooling, Dense(n_classes) softmax, RMSprop, categorical cross-entropy. Augmentation is the study's
ImageDataGenerator setting (featkit.data.augment.STUDY_AUGMENTATION); standardisation is feature-wise (per channel) with
the training split's statistics. Transfer rows (17, 18): frozen ImageNet VGG16, global pooling, Dense 1024, softmax.

Each preset carries the study's row (number, name, checkpoint file, parameter count, top-1 / top-5 on its
UECFOOD-256 test split, seconds per epoch and wall time from its logs). What the study does not state is a choice
of featkit, and the preset's `note` says which and why.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from featkit.core.errors import FeatkitError
from featkit.data.augment import STUDY_AUGMENTATION

MODELS = ("custom", "transfer")
OPTIMIZERS = ("rmsprop", "adam")
STUDY_DATASET = "UECFOOD-256"
# Fields that describe the study's row, not what is trained: they never change a run's configuration.
STUDY_FIELDS = (
    "study_row",
    "study_name",
    "study_checkpoint",
    "study_params",
    "study_top1",
    "study_top5",
    "study_epoch_seconds",
    "study_wall",
    "note",
)


@dataclass(frozen=True)
class Preset:
    name: str
    size: int = 64
    blocks: int = 3
    filters: tuple[int, ...] = (16, 32, 64)
    kernel: int = 2
    dropout: float = 0.0  # custom: after each convolution, before its pooling; transfer: before the softmax
    augment: bool = False
    rotation: float = STUDY_AUGMENTATION.rotation  # degrees, +-
    shift: float = STUDY_AUGMENTATION.width_shift  # width and height shift, fraction of the side
    hflip: bool = STUDY_AUGMENTATION.horizontal_flip
    vflip: bool = STUDY_AUGMENTATION.vertical_flip
    standardize: bool = False  # feature-wise (per channel) mean / std from the training split
    zca: bool = False
    zca_epsilon: float = 1e-6  # relative to the largest eigenvalue of the covariance
    zca_samples: int = 2000  # training photos used to fit the whitening
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    patience: int | None = None  # early stopping on val_loss; None: off
    model: str = "custom"
    backbone: str | None = None
    weights: str = "imagenet"  # transfer only: "imagenet" | "none" | PATH
    dense: int = 1024  # transfer head width
    fine_tune_from: str | int | None = None
    study_row: int | None = None  # the study's Results row (1-18)
    study_name: str = ""  # its name in the Results table
    study_checkpoint: str = ""  # the weights file it saved
    study_params: int | None = None  # parameters at 256 classes: printed by the study, or computed by the digest
    study_top1: float | None = None  # percent, the study's Results table (UECFOOD-256 test split)
    study_top5: float | None = None
    study_epoch_seconds: tuple[float, float] | None = None  # (lowest, highest) seconds per epoch in its log
    study_wall: str = ""  # total training time it printed
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        if self.study_epoch_seconds is not None:
            object.__setattr__(self, "study_epoch_seconds", tuple(float(s) for s in self.study_epoch_seconds))
        if self.model not in MODELS:
            raise FeatkitError(f"preset {self.name}: model should be one of {MODELS}, not {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise FeatkitError(f"preset {self.name}: optimizer should be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.model == "custom" and self.blocks < 1:
            raise FeatkitError(f"--blocks {self.blocks} should be 1 or more conv+pool blocks (preset {self.name}).")
        if self.model == "custom" and len(self.filters) != self.blocks:
            raise FeatkitError(
                f"preset {self.name}: {self.blocks} blocks but {len(self.filters)} filter counts {self.filters}"
            )
        if self.model == "transfer" and not self.backbone:
            raise FeatkitError(f"preset {self.name}: a transfer model needs a backbone")
        if not 0.0 <= self.dropout < 1.0:
            raise FeatkitError(f"preset {self.name}: dropout should be in [0, 1), not {self.dropout}")
        if self.size < 8 or self.epochs < 1 or self.batch_size < 1:
            raise FeatkitError(f"preset {self.name}: size >= 8, epochs >= 1 and batch_size >= 1 are needed")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FeatkitError(f"--lr {self.lr} should be a learning rate > 0, e.g. 0.001 (preset {self.name}).")
        if self.model == "custom" and self.size >> self.blocks < 1:
            raise FeatkitError(
                f"--blocks {self.blocks} at --size {self.size}: each block halves the image, so at most "
                f"{self.size.bit_length() - 1} blocks fit; use fewer blocks or a larger --size."
            )
        if self.model == "custom" and (self.kernel < 1 or self.kernel > self.size):
            raise FeatkitError(
                f"--kernel {self.kernel} should be from 1 to the image size {self.size} (the study used 2)."
            )
        if self.model == "custom" and min(self.filters) < 1:
            raise FeatkitError(f"--filters {','.join(map(str, self.filters))}: every block needs 1 or more filters.")
        if not all(math.isfinite(v) and v >= 0 for v in (self.rotation, self.shift)) or self.shift >= 1:
            raise FeatkitError(f"preset {self.name}: rotation should be >= 0 degrees and shift in [0, 1).")

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (validated); `filters` also sets `blocks`."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise FeatkitError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
        if "filters" in changes and "blocks" not in changes:
            changes["blocks"] = len(changes["filters"])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        if self.study_epoch_seconds is not None:
            d["study_epoch_seconds"] = list(self.study_epoch_seconds)
        return d

    def training_settings(self) -> dict[str, Any]:
        """What is trained (everything but the study's description of its row)."""
        return {k: v for k, v in self.to_dict().items() if k not in STUDY_FIELDS}


# What featkit chose where the study is silent; each preset's note is assembled from these.
_CHOSEN = (
    "batch size 32 (not stated; the Keras default, and rows 5-8 log ~700 steps per epoch, i.e. ~22,155 "
    "training photos / 32); RMSprop with Keras' defaults (lr 0.001; the study names RMSprop, no settings); "
    "test scored with the best epoch by val_loss (the study checkpointed best val_loss only)"
)
_RESCALE = "pixels scaled by 1/255 (the study does not say whether it rescaled)"
_AUG = (
    "augmentation: rotation 90, shifts 0.2, horizontal and vertical flips, fill 'nearest' (the study: 'flips "
    "... 0.2', which flips not stated, A2: both taken)"
)
_STD = "feature-wise standardisation with the training split's per-channel mean and std, applied to every split"
_FILTERS_C = "filters as row 2 (no summary printed for this row; the digest's computed total)"
_TRANSFER = (
    "frozen VGG16, global average pooling (type not stated), Dense 1024 relu (activation not stated), "
    "softmax; 5 epochs (not stated), no augmentation or dropout (none mentioned), VGG16's own "
    "preprocess_input (standardisation not stated); parameters: the digest's computed total"
)


def _note(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _row(
    n: int,
    name: str,
    study_name: str,
    checkpoint: str,
    filters: tuple[int, ...],
    params: int,
    top1: float,
    top5: float,
    seconds: tuple[float, float] | None,
    wall: str,
    *,
    size: int = 128,
    dropout: float = 0.0,
    augment: bool = True,
    standardize: bool = False,
    epochs: int = 5,
    note: str = "",
) -> Preset:
    """A custom-CNN row of the study."""
    parts = [note, _AUG if augment else "", _STD if standardize else _RESCALE, _CHOSEN]
    return Preset(
        name=name,
        size=size,
        blocks=len(filters),
        filters=filters,
        dropout=dropout,
        augment=augment,
        standardize=standardize,
        epochs=epochs,
        study_row=n,
        study_name=study_name,
        study_checkpoint=checkpoint,
        study_params=params,
        study_top1=top1,
        study_top5=top5,
        study_epoch_seconds=seconds,
        study_wall=wall,
        note=_note(*parts),
    )


_B3 = (16, 32, 64)
_B4 = (16, 32, 64, 128)

_PRESETS: list[Preset] = [
    _row(
        1,
        "basic",
        "Basic model",
        "basic.pixel.64.conv.1.pool.1.hdf5",
        (16,),
        4_560,
        2.36,
        7.63,
        (35, 35),
        "3m04s",
        size=64,
        augment=False,
    ),
    _row(
        2,
        "benchmark-64",
        "Benchmark model",
        "basic.pixel.64.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        5.67,
        16.64,
        (66, 66),
        "5m42s",
        size=64,
        augment=False,
        note="parameters: the digest's computed total (not printed)",
    ),
    _row(
        3,
        "benchmark-128",
        "Benchmark model using 128 pixels",
        "basic.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        5.83,
        18.15,
        (117, 119),
        "10m26s",
        augment=False,
        note=_FILTERS_C,
    ),
    _row(
        4,
        "benchmark-256",
        "Benchmark model using 256 pixels",
        "basic.pixel.256.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        6.11,
        17.53,
        (456, 458),
        "39m15s",
        size=256,
        augment=False,
        note=_FILTERS_C,
    ),
    _row(
        5,
        "aug-3",
        "Basic augmentation of 3 convolutional layers",
        "nozca.nostd.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        3.89,
        13.48,
        None,
        "",
        note=_FILTERS_C,
    ),
    _row(
        6,
        "aug-3-drop0.5",
        "Basic augmentation of 3 convolutional layers with 0.5 dropouts",
        "nozca.nostd.dropouts.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        3.46,
        11.77,
        (360, 362),
        "30m18s",
        dropout=0.5,
    ),
    _row(
        7,
        "aug-3-drop0.3-10ep",
        "Basic augmentation of 3 convolutional layers with 0.3 dropouts and 10 epochs",
        "nozca.nostd.dropouts.10.epochs.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        5.33,
        18.73,
        (362, 363),
        "1h00m55s",
        dropout=0.3,
        epochs=10,
        note="wall time printed '1h 55s' (A10: 10 x ~363 s)",
    ),
    _row(
        8,
        "aug-4-drop0.3-10ep",
        "Basic augmentation of 4 convolutional layers with 0.3 dropouts and 10 epochs",
        "nozca.nostd.dropouts.10.epochs.pixel.128.conv.4.pool.4.hdf5",
        _B4,
        76_464,
        6.10,
        20.63,
        (454, 454),
        "1h14m45s",
        dropout=0.3,
        epochs=10,
        note="filters 16-32-64-128 (76,464 parameters): the study printed row 9's summary here (91,040), A1; "
        "row 9 is the one that widens the first layers",
    ),
    _row(
        9,
        "aug-4-morenodes-drop0.3-10ep",
        "Basic augmentation of 4 convolutional layers with 0.3 dropouts, more nodes and 10 epochs",
        "nozca.nostd.morenodes.dropouts.10.epochs.pixel.128.conv.4.pool.4.hdf5",
        (32, 64, 64, 128),
        91_040,
        9.19,
        25.62,
        None,
        "",
        dropout=0.3,
        epochs=10,
    ),
    _row(
        10,
        "std-aug-3",
        "Augmentation with norm of 3 convolutional layers",
        "nozca.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        6.64,
        14.85,
        (128, 130),
        "",
        standardize=True,
        note=_FILTERS_C,
    ),
    _row(
        11,
        "std-aug-3-drop0.5-10ep",
        "Augmentation with norm of 3 convolutional layers with 0.5 dropouts",
        "nozca.multi.nodes.dropout.10.epochs.pixel.128.conv.3.pool.3.hdf5",
        _B3,
        27_184,
        7.78,
        14.18,
        (245, 257),
        "41m53s",
        dropout=0.5,
        standardize=True,
        epochs=10,
        note="filters as row 10 although the file says 'multi.nodes' (A5)",
    ),
    _row(
        12,
        "std-aug-4-10ep",
        "Augmentation with norm of 4 convolutional layers",
        "nozca.10.epochs.pixel.128.conv.4.pool.4.hdf5",
        _B4,
        76_464,
        9.65,
        20.34,
        (132, 136),
        "22m42s",
        standardize=True,
        epochs=10,
    ),
    _row(
        13,
        "std-aug-4x64-10ep",
        "Augmentation with norm of 4 convolutional layers, with 64 nodes",
        "nozca.64.nodes.10.epochs.pixel.128.conv.4.pool.4.hdf5",
        (64,) * 4,
        66_816,
        11.46,
        15.66,
        (374, 401),
        "1h04m43s",
        standardize=True,
        epochs=10,
    ),
    _row(
        14,
        "std-aug-4x128-10ep",
        "Augmentation with norm of 4 convolutional layers, with 128 nodes",
        "nozca.128.nodes.10.epochs.pixel.128.conv.4.pool.4.hdf5",
        (128,) * 4,
        231_680,
        12.75,
        18.00,
        (861, 905),
        "2h27m39s",
        standardize=True,
        epochs=10,
    ),
    _row(
        15,
        "std-aug-4x128-drop0.3-10ep",
        "Augmentation with norm of 4 convolutional layers, with 128 nodes, 0.3 dropouts",
        "nozca.128.nodes.10.dropout.epochs.pixel.128.conv.4.pool.4.hdf5",
        (128,) * 4,
        231_680,
        10.98,
        25.98,
        (1550, 1708),
        "4h26m28s",
        dropout=0.3,
        standardize=True,
        epochs=10,
    ),
    _row(
        16,
        "std-aug-5x128-drop0.3-20ep",
        "Augmentation with norm of 5 convolutional layers, with 128 nodes, 0.3 dropouts",
        "nozca.128.nodes.10.dropout.20.epochs.pixel.128.conv.5.pool.5.hdf5",
        (128,) * 5,
        297_344,
        18.19,
        38.63,
        (1495, 1522),
        "8h25m",
        dropout=0.3,
        standardize=True,
        epochs=20,
        note="no summary printed: kernel 2, max-pooling and dropout after each convolution taken from rows 1-15; "
        "parameters: the digest's computed total; the study's s/epoch is from epochs 17-20 only",
    ),
    Preset(
        name="vgg16-transfer-48",
        model="transfer",
        backbone="vgg16",
        size=48,
        blocks=0,
        filters=(),
        study_row=17,
        study_name="Transfer learning with VGG16 on 48 pixels",
        study_checkpoint="vgg16.pixel.48.conv.1.pool.1.hdf5",
        study_params=15_502_400,
        study_top1=12.07,
        study_top5=30.49,
        study_wall="47m",
        note=_note(_TRANSFER, _CHOSEN),
    ),
    Preset(
        name="vgg16-transfer-128",
        model="transfer",
        backbone="vgg16",
        size=128,
        blocks=0,
        filters=(),
        study_row=18,
        study_name="Transfer learning with VGG16 on 128 pixels",
        study_checkpoint="vgg16.pixel.128.conv.1.pool.1.hdf5",
        study_params=15_502_400,
        study_top1=21.73,
        study_top5=49.00,
        study_wall="13h30m",
        note=_note(_TRANSFER, _CHOSEN),
    ),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
STUDY_ORDER: tuple[str, ...] = tuple(
    p.name for p in sorted(_PRESETS, key=lambda p: (p.study_row is None, p.study_row or 0))
)


def get_preset(name: str, **overrides: Any) -> Preset:
    """The preset `name`, with `overrides` (fields left None are ignored) applied."""
    if name not in PRESETS:
        raise FeatkitError(f"no CNN preset {name!r}: choose one of {', '.join(PRESETS)} (`featkit train-cnn --list`).")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def preset_with_options(name: str, options: dict[str, Any]) -> Preset:
    """The preset `name` with command-line options applied (None: keep the preset's value).

    `blocks` alone keeps the preset's widths, cut or extended with its last width; `filters` (a list, a string
    like "16,32,64", or one width repeated `blocks` times) sets the widths and, alone, the number of blocks."""
    changes = {k: v for k, v in options.items() if v is not None}
    blocks, filters = changes.get("blocks"), changes.get("filters")
    if isinstance(filters, str):
        try:
            filters = tuple(int(f) for f in filters.split(","))
        except ValueError:
            raise FeatkitError(f"--filters {filters!r} should be numbers separated by commas, e.g. 16,32,64.") from None
    if filters is not None:
        filters = tuple(filters)
        if blocks and len(filters) == 1:
            filters = filters * blocks
        changes["filters"] = filters
        changes.setdefault("blocks", len(filters))
    elif blocks is not None:
        base = get_preset(name).filters or (16,)
        changes["filters"] = tuple(base[:blocks]) + (base[-1],) * max(0, blocks - len(base))
    if changes.get("backbone") is not None:  # a Keras model by its registry name, never an ONNX file's name
        from featkit.backbones.names import keras_name

        changes["backbone"] = keras_name(changes["backbone"])
    ftf = changes.get("fine_tune_from")
    if isinstance(ftf, str) and ftf.isdigit():
        changes["fine_tune_from"] = int(ftf)
    return get_preset(name, **changes)


def format_seconds_range(seconds: tuple[float, float] | list[float] | None) -> str:
    """(117, 119) -> '117-119', (35, 35) -> '35', None -> ''."""
    if not seconds:
        return ""
    lo, hi = seconds
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def list_presets() -> list[dict[str, Any]]:
    """One row per preset, in the study's order, for `featkit train-cnn --list`."""
    rows = []
    for p in _PRESETS:
        rows.append(
            {
                "name": p.name,
                "study_row": p.study_row,
                "study_name": p.study_name,
                "study_checkpoint": p.study_checkpoint,
                "model": p.model if p.model == "custom" else f"transfer ({p.backbone})",
                "size": p.size,
                "blocks": p.blocks,
                "filters": "-".join(map(str, p.filters)) if p.filters else f"dense {p.dense}",
                "kernel": p.kernel if p.model == "custom" else None,
                "layers": (
                    "Conv2D(same, relu) -> Dropout -> MaxPool 2 per block, GAP, Dense softmax"
                    if p.dropout
                    else "Conv2D(same, relu) -> MaxPool 2 per block, GAP, Dense softmax"
                )
                if p.model == "custom"
                else f"frozen {p.backbone}, GAP, Dense {p.dense} relu, Dense softmax",
                "dropout": p.dropout,
                "augment": p.augment,
                "augmentation": (
                    f"rotation {p.rotation:g}, shifts {p.shift:g}, flips "
                    + ("+".join(d for d, on in (("h", p.hflip), ("v", p.vflip)) if on) or "none")
                )
                if p.augment
                else None,
                "standardize": p.standardize,
                "epochs": p.epochs,
                "batch_size": p.batch_size,
                "optimizer": f"{p.optimizer} lr {p.lr:g}",
                "study_params": p.study_params,
                "study_top1": p.study_top1,
                "study_top5": p.study_top5,
                "study_epoch_seconds": list(p.study_epoch_seconds) if p.study_epoch_seconds else None,
                "study_wall": p.study_wall or None,
                "study_dataset": STUDY_DATASET,
                "note": p.note,
            }
        )
    return rows


def format_preset_list(rows: list[dict[str, Any]] | None = None, width: int = 118) -> str:
    """`featkit train-cnn --list` as text: one line of settings and study figures per preset, then its study row
    name, checkpoint file and note."""
    import textwrap

    rows = list_presets() if rows is None else rows
    pct = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    head = (
        f"{'row':>3}  {'preset':<29}{'px':>4}  {'filters':<20}{'drop':>5} {'aug':<4}{'std':<4}{'ep':>3}"
        f"{'params':>12}  {'study top-1/top-5 %':<20}{'s/epoch':>9}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        seconds = format_seconds_range(r["study_epoch_seconds"]) or "-"
        params = f"{r['study_params']:,}" if r["study_params"] else "-"
        out.append(
            f"{r['study_row'] or '':>3}  {r['name']:<29}{r['size']:>4}  {r['filters']:<20}"
            f"{r['dropout'] or '-':>5} {'yes' if r['augment'] else '-':<4}{'yes' if r['standardize'] else '-':<4}"
            f"{r['epochs']:>3}{params:>12}  {pct(r['study_top1']) + ' / ' + pct(r['study_top5']):<20}{seconds:>9}"
        )
        out.append(
            f'     study: "{r["study_name"]}"  {r["study_checkpoint"]}'
            + (f"  ({r['study_wall']} in all)" if r["study_wall"] else "")
        )
        out += textwrap.wrap("note: " + r["note"], width, initial_indent="     ", subsequent_indent="           ")
    out.append(
        f"Study figures: its {STUDY_DATASET} test split; params: at 256 classes. `--list --json` gives every setting."
    )
    return "\n".join(out)
