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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from ..errors import FeatkitError

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


def open_image(data: bytes, box: Sequence[int] | None = None, draft_size: int | None = None) -> Image.Image:
    """Decode bytes to an upright RGB PIL image, cropped to `box` (x1, y1, x2, y2) if given."""
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > _limits["max_pixels"]:
            raise ImageDecodeError(f"{w:,} x {h:,} pixels, over the limit of {_limits['max_pixels']:,} pixels per "
                                   "photo (--max-pixels): not decoded")
        if draft_size and img.format == "JPEG" and box is None:
            img.draft("RGB", (draft_size, draft_size))  # DCT scaling: decode big JPEGs at >= 2x the target
        ImageOps.exif_transpose(img, in_place=True)  # loads the pixels; no copy when upright already
        img = _to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as e:  # PIL raises many kinds: OSError, SyntaxError, ValueError, DecompressionBombError
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(img.width, x2), min(img.height, y2)
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            img = img.crop((x1, y1, x2, y2))
    return img


def resize_square(img: Image.Image, size: int, resize: str = "stretch") -> np.ndarray:
    check_resize(resize, "resize")
    w, h = img.size
    if resize == "crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        # crop first: resizing with box= lets the filter reach past the square, bleeding the cut-off edges in
        img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
    elif resize == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (size, size))
        canvas.paste(img.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
        img = canvas
    elif (w, h) != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes, size: int, resize: str = "stretch", box: Sequence[int] | None = None) -> np.ndarray:
    """Bytes -> uint8 array (size, size, 3), RGB. Raises ImageDecodeError for unreadable data."""
    return resize_square(open_image(data, box=box, draft_size=2 * size), size, resize)


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
) -> tuple[np.ndarray, list[ImageFailure]]:
    """The one loader: read `paths` through `read`, decode, EXIF, optional box, square resize, then
    `transform(i, photo)` (e.g. a seeded perturbation), in parallel threads.

    Returns (uint8 array (N, size, size, 3) (written into `out` when given), failures sorted by index). A failed
    photo's row is all zeros; callers decide whether to skip it or stop, but always report it.
    """
    if out is None:
        out = np.zeros((len(paths), size, size, 3), np.uint8)
    failures: list[ImageFailure] = []

    def work(i: int) -> None:
        try:
            img = decode_image(read_photo(read, paths[i]), size, resize, None if boxes is None else boxes[i])
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
