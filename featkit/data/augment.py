"""Random geometric views of photos, as Keras' ImageDataGenerator made them, seeded per photo.

Used for the augmented training views and the sensitivity (robustness) views of the test photos that
`featkit extract` caches. Each photo's transform depends only on (seed, view, copy, photo index), so the
result is the same whatever the batch size, sharding or resume point.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Perturbation:
    name: str
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    width_shift: float = 0.0  # fraction of the width, uniform in [-w, w]
    height_shift: float = 0.0
    horizontal_flip: bool = False  # each with probability 0.5
    vertical_flip: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_transform(
            image, rng, self.rotation, self.width_shift, self.height_shift, self.horizontal_flip, self.vertical_flip
        )


# The robustness study: test photos under each perturbation, scored without re-running the backbone.
SENSITIVITY_VIEWS = (
    Perturbation("sens-rot45-shift0.1", rotation=45, width_shift=0.1, height_shift=0.1),
    Perturbation(
        "sens-rot45-shift0.1-flips",
        rotation=45,
        width_shift=0.1,
        height_shift=0.1,
        horizontal_flip=True,
        vertical_flip=True,
    ),
    Perturbation(
        "sens-rot180-h0.3-w0.4-flips",
        rotation=180,
        width_shift=0.4,
        height_shift=0.3,
        horizontal_flip=True,
        vertical_flip=True,
    ),
)


@dataclass(frozen=True)
class Mirror:
    """The photo mirrored left-right, always (no randomness): the test-time-augmentation view of valid and test."""

    name: str = "tta-flip"

    def to_dict(self) -> dict:
        return {"name": self.name, "mirror": "horizontal"}

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])


# `extract --tta NAME`: deterministic views of the valid and test photos whose predictions `fit-head --tta` averages.
TTA_VIEWS = {"flip": Mirror("tta-flip")}


# The study's training augmentation, kept fixed for its whole project: ImageDataGenerator(rotation_range=90,
# width_shift_range=0.2, height_shift_range=0.2, flips on). `extract --augment-copies` and the CNN presets both use it.
STUDY_AUGMENTATION = Perturbation(
    "augment", rotation=90.0, width_shift=0.2, height_shift=0.2, horizontal_flip=True, vertical_flip=True
)


def augment_view(
    rotation: float = STUDY_AUGMENTATION.rotation,
    shift: float = STUDY_AUGMENTATION.width_shift,
    horizontal_flip: bool = STUDY_AUGMENTATION.horizontal_flip,
    vertical_flip: bool = STUDY_AUGMENTATION.vertical_flip,
) -> Perturbation:
    return Perturbation("augment", rotation, shift, shift, horizontal_flip, vertical_flip)


def photo_rng(seed: int, view: str, copy: int, index: int) -> np.random.Generator:
    view_key = int.from_bytes(view.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([seed, view_key, copy, index])


def random_transform(
    image: np.ndarray,
    rng: np.random.Generator,
    rotation: float = 0.0,
    width_shift: float = 0.0,
    height_shift: float = 0.0,
    horizontal_flip: bool = False,
    vertical_flip: bool = False,
) -> np.ndarray:
    """One random rotation + shift (+ flips) of a (H, W, C) uint8 image; edges filled with the nearest pixel."""
    h, w = image.shape[:2]
    theta = np.deg2rad(rng.uniform(-rotation, rotation)) if rotation else 0.0
    tx = rng.uniform(-height_shift, height_shift) * h if height_shift else 0.0
    ty = rng.uniform(-width_shift, width_shift) * w if width_shift else 0.0
    flip_h = horizontal_flip and rng.random() < 0.5
    flip_v = vertical_flip and rng.random() < 0.5
    out = image
    if theta or tx or ty:
        out = _affine_nearest_fill(image, theta, tx, ty)
    if flip_h:
        out = out[:, ::-1]
    if flip_v:
        out = out[::-1]
    return np.ascontiguousarray(out)


def _affine_nearest_fill(image: np.ndarray, theta: float, row_shift: float, col_shift: float) -> np.ndarray:
    """Rotate by theta about the centre and shift; PIL's bilinear affine on an edge-padded copy.

    Padding by the image size on each side with edge pixels gives ImageDataGenerator's fill_mode="nearest"
    for any rotation and shifts up to the full size, at a fraction of scipy.ndimage's cost.
    """
    h, w = image.shape[:2]
    padded = Image.fromarray(np.pad(image, ((h, h), (w, w), (0, 0)), mode="edge"))
    c, s = np.cos(theta), np.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    # output (x, y) -> input (x, y), in the padded image's coordinates
    a, b, d, e = c, s, -s, c
    off_x = cx - a * cx - b * cy + col_shift + w
    off_y = cy - d * cx - e * cy + row_shift + h
    out = padded.transform(
        (w, h), Image.Transform.AFFINE, (a, b, off_x, d, e, off_y), resample=Image.Resampling.BILINEAR
    )
    return np.asarray(out)
