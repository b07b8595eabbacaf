"""The one image-loading path: decode, RGB, EXIF orientation, optional box crop, square resize.

Resize modes (`resize=`):
  stretch  (default) scale both sides to size x size, ignoring aspect ratio: the whole dish stays in the
           picture, as Keras' ImageDataGenerator / flow_from_directory did in the original study.
  crop     centre-crop the largest square, then scale.
  pad      scale the longer side to `size` and pad the shorter one with black, keeping the aspect ratio.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from featkit.core.errors import FeatkitError

RESIZE_MODES = ("stretch", "crop", "pad")
# A photo's pixel count is checked from its header before decoding: two 13,000 x 13,000 PNGs of 164 KB each would
# otherwise take 3.4 GB. 64 megapixels holds every camera photo up to 9,000 x 7,000; `--max-pixels` changes it.
DEFAULT_MAX_PIXELS = 64_000_000
_env = os.environ.get("FEATKIT_MAX_PIXELS", "")
_limits = {"max_pixels": int(_env) if _env.isdigit() and int(_env) > 0 else DEFAULT_MAX_PIXELS}


def set_max_pixels(n: int | None) -> None:
    """The largest photo (width x height) featkit decodes, for this process; None keeps the current limit."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FeatkitError(f"--max-pixels {n!r} should be a whole number of pixels >= 1, e.g. {DEFAULT_MAX_PIXELS}.")
    _limits["max_pixels"] = n


def max_pixels() -> int:
    return _limits["max_pixels"]


def max_file_bytes() -> int:
    """The largest photo file read (4 bytes a pixel: an uncompressed RGBA bitmap at --max-pixels); larger files
    (and zip members) are refused before they are read."""
    return 4 * max(_limits["max_pixels"], 16_000_000)


def check_resize(resize: str, option: str = "--resize") -> str:
    if resize not in RESIZE_MODES:
        raise FeatkitError(f"{option} {resize!r} should be one of {', '.join(RESIZE_MODES)}.")
    return resize


DECODE_MODES = ("draft", "full")  # draft: big JPEGs decoded at 1/2, 1/4 or 1/8 scale (DCT scaling), still >= size
JPEG_SCALES = (8, 4, 2)
_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that turn the photo by 90 degrees


class ImageDecodeError(Exception):
    """A photo that cannot be decoded; the message says why."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) greyscale: 0..65535 maps to 0..255, so a dark photo stays dark
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=0))
        if lo < 0 or hi > 65535:  # not 16-bit data: stretch its own range
            arr = (arr - lo) * (65535.0 / ((hi - lo) or 1.0))
        img = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8))
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, F


def draft_scale(width: int, height: int, size: int) -> int:
    """The largest JPEG scale 1/s (s in 8, 4, 2, else 1) that keeps a width x height region at least size x size."""
    return next((s for s in JPEG_SCALES if min(width, height) >= s * size), 1)


def _clip_box(box: Sequence[int], width: int, height: int) -> tuple[int, int, int, int] | None:
    x1, y1, x2, y2 = (int(v) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    return (x1, y1, x2, y2) if x2 - x1 >= 2 and y2 - y1 >= 2 else None  # under 2 px: the whole photo


def open_image(data: bytes, box: Sequence[int] | None = None, draft_size: int | None = None) -> Image.Image:
    """Decode bytes to an upright RGB PIL image, cropped to `box` (x1, y1, x2, y2, full-size upright pixels).

    draft_size: a JPEG whose photo (or box) is at least twice that on both sides is decoded at the smallest
    DCT scale that keeps it at least draft_size; the box is scaled with it (its size rounded up, so the crop stays
    at least draft_size). `img.info["draft_scale"]` says which scale was used (1: full size).
    """
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > _limits["max_pixels"]:
            raise ImageDecodeError(
                f"{w:,} x {h:,} pixels, over the limit of {_limits['max_pixels']:,} pixels per "
                "photo (--max-pixels): not decoded"
            )
        region = None
        if box is not None:
            w, h = img.size
            if img.getexif().get(0x0112) in _SWAPPED:  # the box is in upright pixels
                w, h = h, w
            region = _clip_box(box, w, h)
        scale = 1
        if draft_size and img.format == "JPEG":
            rw, rh = (region[2] - region[0], region[3] - region[1]) if region else img.size
            scale = draft_scale(rw, rh, draft_size)
            # asking for (w // s, h // s) makes Pillow decode at exactly 1/s
            if scale > 1 and img.draft("RGB", (img.width // scale, img.height // scale)) is None:
                scale = 1  # Pillow could not draft this file: full size
        ImageOps.exif_transpose(img, in_place=True)  # loads the pixels; no copy when upright already
        img = _to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as e:  # PIL raises many kinds: OSError, SyntaxError, ValueError, DecompressionBombError
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None
    if region is not None:
        x1, y1, x2, y2 = region
        if scale == 1:
            img = img.crop(region)
        else:  # the box in drafted pixels to the sub-pixel, so it is not shifted against a full-size crop
            img = img.resize(
                (-(-(x2 - x1) // scale), -(-(y2 - y1) // scale)),
                Image.Resampling.BILINEAR,
                box=(x1 / scale, y1 / scale, x2 / scale, y2 / scale),
            )
    img.info["draft_scale"] = scale
    return img


def resize_square(img: Image.Image, size: int, resize: str = "stretch") -> np.ndarray:
    check_resize(resize, "resize")
    w, h = img.size
    if resize == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        # crop first: resizing with box= lets the filter reach past the square, bleeding the cut-off edges in
        img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BILINEAR)
    elif resize == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (size, size))
        canvas.paste(img.resize((nw, nh), Image.Resampling.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    elif (w, h) != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_image(
    data: bytes, size: int, resize: str = "stretch", box: Sequence[int] | None = None, decode: str = "draft"
) -> np.ndarray:
    """Bytes -> uint8 array (size, size, 3), RGB. Raises ImageDecodeError for unreadable data.

    decode: "draft" (default) decodes big JPEGs at a reduced scale that is still at least `size`; "full" never.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode should be one of {DECODE_MODES}. Received decode={decode!r}")
    return resize_square(open_image(data, box=box, draft_size=size if decode == "draft" else None), size, resize)


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass(frozen=True)
class ImageFailure:
    """A photo that could not be loaded: its position in the request, its path and why."""

    index: int
    path: str
    error: str

    def __str__(self) -> str:
        return f"{self.path}: {self.error}"


def read_photo(read: Callable[[str], bytes], path: str) -> bytes:
    """The bytes of one photo through `read`; a missing or unreadable file raises ImageDecodeError."""
    try:
        return read(path)
    except KeyError as e:
        raise ImageDecodeError(f"missing file: {e}") from None
    except OSError as e:  # e.g. a corrupt zip member, a dangling symlink or a permission problem
        raise ImageDecodeError(f"cannot read: {e}") from None


def load_images(
    read: Callable[[str], bytes],
    paths: Sequence[str],
    size: int,
    resize: str = "stretch",
    boxes: Sequence[Sequence[int] | None] | None = None,
    transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
    pool: ThreadPoolExecutor | None = None,
    out: np.ndarray | None = None,
    decode: str = "draft",
) -> tuple[np.ndarray, list[ImageFailure]]:
    """The one loader: read `paths` through `read`, decode (`decode`: see `decode_image`), EXIF, optional box,
    square resize, then `transform(i, photo)` (e.g. a seeded perturbation), in parallel threads.

    Returns (uint8 array (N, size, size, 3) (written into `out` when given), failures sorted by index). A failed
    photo's row is all zeros; callers decide whether to skip it or stop, but always report it.
    """
    if out is None:
        out = np.zeros((len(paths), size, size, 3), np.uint8)
    failures: list[ImageFailure] = []

    def work(i: int) -> None:
        try:
            img = decode_image(read_photo(read, paths[i]), size, resize, None if boxes is None else boxes[i], decode)
        except ImageDecodeError as e:
            out[i] = 0
            failures.append(ImageFailure(i, str(paths[i]), str(e)))
            return
        out[i] = img if transform is None else transform(i, img)

    if pool is None:
        with ThreadPoolExecutor(default_threads()) as own:
            list(own.map(work, range(len(paths))))
    else:
        list(pool.map(work, range(len(paths))))
    failures.sort(key=lambda f: f.index)
    return out, failures
