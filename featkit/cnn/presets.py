"""Presets: the rows of the classic food-classification study, by name.

Custom CNNs are N blocks of Conv2D (kernel 2, 'same', relu) + MaxPool(2), optional dropout after each block,
global average pooling and a dense softmax. Transfer models are a frozen ImageNet backbone + Dense 1024.

Only one figure of the study is known for sure (frozen VGG16 + Dense 1024 at 128 px on UECFOOD-256: 21.73% top-1,
49.00% top-5, 13.5 h of training); every other `study_top1` / `study_top5` is None. Where the study does not say
(epochs of most rows, augmentation ranges, image size of the augmented rows), the values here are assumptions and
the `note` says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..errors import FeatkitError

MODELS = ("custom", "transfer")
OPTIMIZERS = ("rmsprop", "adam")


@dataclass(frozen=True)
class Preset:
    name: str
    size: int = 64
    blocks: int = 3
    filters: tuple[int, ...] = (16, 32, 64)
    kernel: int = 2
    dropout: float = 0.0               # after each conv block (custom) / before the softmax (transfer head)
    augment: bool = False
    rotation: float = 20.0             # degrees, +-
    shift: float = 0.2                 # width and height shift, fraction of the side
    hflip: bool = True
    vflip: bool = True
    standardize: bool = False          # feature-wise (per channel) mean / std from the training split
    zca: bool = False
    zca_epsilon: float = 1e-6          # relative to the largest eigenvalue of the covariance
    zca_samples: int = 2000            # training photos used to fit the whitening
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    patience: int | None = None        # early stopping on val_loss; None: off
    model: str = "custom"
    backbone: str | None = None
    weights: str = "imagenet"          # transfer only: "imagenet" | "none" | PATH
    dense: int = 1024                  # transfer head width
    fine_tune_from: str | int | None = None
    study_top1: float | None = None    # percent, as reported by the study
    study_top5: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        if self.model not in MODELS:
            raise FeatkitError(f"preset {self.name}: model should be one of {MODELS}, not {self.model!r}")
        if self.optimizer not in OPTIMIZERS:
            raise FeatkitError(f"preset {self.name}: optimizer should be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.model == "custom" and self.blocks < 1:
            raise FeatkitError(f"--blocks {self.blocks} should be 1 or more conv+pool blocks (preset {self.name}).")
        if self.model == "custom" and len(self.filters) != self.blocks:
            raise FeatkitError(f"preset {self.name}: {self.blocks} blocks but {len(self.filters)} filter counts {self.filters}")
        if self.model == "transfer" and not self.backbone:
            raise FeatkitError(f"preset {self.name}: a transfer model needs a backbone")
        if not 0.0 <= self.dropout < 1.0:
            raise FeatkitError(f"preset {self.name}: dropout should be in [0, 1), not {self.dropout}")
        if self.size < 8 or self.epochs < 1 or self.batch_size < 1:
            raise FeatkitError(f"preset {self.name}: size >= 8, epochs >= 1 and batch_size >= 1 are needed")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FeatkitError(f"--lr {self.lr} should be a learning rate > 0, e.g. 0.001 (preset {self.name}).")
        if self.model == "custom" and self.size >> self.blocks < 1:
            raise FeatkitError(f"--blocks {self.blocks} at --size {self.size}: each block halves the image, so at most "
                               f"{self.size.bit_length() - 1} blocks fit; use fewer blocks or a larger --size.")
        if self.model == "custom" and (self.kernel < 1 or self.kernel > self.size):
            raise FeatkitError(f"--kernel {self.kernel} should be from 1 to the image size {self.size} (the study used 2).")
        if self.model == "custom" and min(self.filters) < 1:
            raise FeatkitError(f"--filters {','.join(map(str, self.filters))}: every block needs 1 or more filters.")
        if not all(math.isfinite(v) and v >= 0 for v in (self.rotation, self.shift)) or self.shift >= 1:
            raise FeatkitError(f"preset {self.name}: rotation should be >= 0 degrees and shift in [0, 1).")

    def replace(self, **changes: Any) -> "Preset":
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
        return d


_EPOCHS_NOTE = "epochs not stated by the study (5 assumed)"
_AUG_NOTE = "augmentation ranges and image size not stated by the study (rotation 20 deg, shifts 0.2, flips, 64 px assumed)"


def _custom(name: str, filters: tuple[int, ...], note: str = "", **kw: Any) -> Preset:
    return Preset(name=name, blocks=len(filters), filters=filters, note=note, **kw)


def _aug(name: str, filters: tuple[int, ...], note: str = "", **kw: Any) -> Preset:
    kw.setdefault("augment", True)
    notes = "; ".join(n for n in (note, _AUG_NOTE, "" if "epochs" in kw else _EPOCHS_NOTE) if n)
    return _custom(name, filters, notes, **kw)


_PRESETS: list[Preset] = [
    _custom("basic", (16,), "1 block of 16 filters; " + _EPOCHS_NOTE, size=64),
    _custom("benchmark-64", (16, 32, 64), _EPOCHS_NOTE, size=64),
    _custom("benchmark-128", (16, 32, 64), _EPOCHS_NOTE, size=128),
    _custom("benchmark-256", (16, 32, 64), _EPOCHS_NOTE, size=256),
    _aug("aug-3", (16, 32, 64), "basic augmentation"),
    _aug("aug-3-drop0.5", (16, 32, 64), dropout=0.5),
    _aug("aug-3-drop0.3-10ep", (16, 32, 64), dropout=0.3, epochs=10),
    _aug("aug-4-drop0.3", (32, 64, 64, 128), dropout=0.3),
    _aug("aug-4-drop0.3-wide", (64, 128, 128, 256), "aug-4-drop0.3 with more nodes (filters doubled: assumed)",
         dropout=0.3),
    _aug("std-aug-3", (16, 32, 64), "feature-wise standardisation", standardize=True),
    _aug("std-aug-3-drop", (16, 32, 64), "dropout rate not stated (0.5 assumed)", standardize=True, dropout=0.5),
    _aug("std-aug-4", (32, 64, 64, 128), standardize=True),
    _aug("std-aug-4x64", (64, 64, 64, 64), standardize=True),
    _aug("std-aug-4x128", (128, 128, 128, 128), standardize=True),
    _aug("std-aug-4x128-drop0.3", (128, 128, 128, 128), standardize=True, dropout=0.3),
    _aug("std-aug-5x128-drop0.3-20ep", (128,) * 5, standardize=True, dropout=0.3, epochs=20),
    Preset(name="vgg16-transfer-48", model="transfer", backbone="vgg16", size=48, blocks=0, filters=(),
           note="frozen VGG16 + Dense 1024; " + _EPOCHS_NOTE),
    Preset(name="vgg16-transfer-128", model="transfer", backbone="vgg16", size=128, blocks=0, filters=(),
           study_top1=21.73, study_top5=49.00,
           note="frozen VGG16 + Dense 1024; study: UECFOOD-256, 13.5 h of training; " + _EPOCHS_NOTE),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}


def get_preset(name: str, **overrides: Any) -> Preset:
    """The preset `name`, with `overrides` (fields left None are ignored) applied."""
    if name not in PRESETS:
        raise FeatkitError(f"no CNN preset {name!r}: choose one of {', '.join(PRESETS)} (`featkit train-cnn --list`).")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**changes) if changes else PRESETS[name]


def list_presets() -> list[dict[str, Any]]:
    """One row per preset for `featkit train-cnn --list`."""
    rows = []
    for p in _PRESETS:
        rows.append({
            "name": p.name,
            "model": p.model if p.model == "custom" else f"transfer ({p.backbone})",
            "size": p.size,
            "blocks": p.blocks,
            "filters": "/".join(map(str, p.filters)) if p.filters else f"dense {p.dense}",
            "dropout": p.dropout,
            "augment": p.augment,
            "standardize": p.standardize,
            "epochs": p.epochs,
            "study_top1": p.study_top1,
            "study_top5": p.study_top5,
            "note": p.note,
        })
    return rows
