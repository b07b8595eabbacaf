"""Draft JPEG decoding: used only where it keeps at least the target size, boxes scaled with it, off with
--decode full."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from conftest import read_food_photos
from PIL import Image

from featkit.data import images, prepare
from featkit.data.images import decode_image, draft_scale, open_image
from featkit.features import extract as ex
from featkit.features.cache import read_cache, read_meta


@pytest.fixture(scope="module")
def food_jpegs() -> list[Image.Image]:
    """Three real Food-101 photos (64 px) as PIL images."""
    _, blobs, _ = read_food_photos(classes=3, per_class=1)
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]


def big_jpeg(photo: Image.Image, w: int, h: int, orientation: int | None = None) -> bytes:
    """A real photo upscaled to w x h (as stored), JPEG quality 90, with an EXIF orientation if given."""
    buf = io.BytesIO()
    extra = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    photo.resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=90, **extra)
    return buf.getvalue()


@pytest.mark.parametrize(
    "w, h, size, scale",
    [
        (1000, 800, 64, 8),
        (1000, 800, 128, 4),
        (1000, 800, 200, 4),
        (1000, 800, 250, 2),
        (1000, 800, 401, 1),
        (600, 520, 128, 4),
        (600, 500, 128, 2),
        (300, 260, 128, 2),
        (300, 250, 128, 1),
        (130, 900, 64, 2),
    ],
)
def test_draft_scale_keeps_at_least_the_target(food_jpegs, w, h, size, scale):
    data = big_jpeg(food_jpegs[0], w, h)
    img = open_image(data, draft_size=size)  # what decode_image resizes
    assert img.info["draft_scale"] == scale == draft_scale(w, h, size)
    assert img.size == (math.ceil(w / scale), math.ceil(h / scale))
    assert min(img.size) >= size  # never below the target
    assert (scale > 1) == (min(w, h) >= 2 * size)  # only JPEGs at least twice the target are drafted
    if scale < 8:  # the smallest such scale: half of it would fall below the target
        assert min(w, h) / (2 * scale) < size
    assert decode_image(data, size).shape == (size, size, 3)


def test_draft_is_close_to_full_decoding_on_real_photos(food_jpegs):
    for photo in food_jpegs:
        data = big_jpeg(photo, 760, 560)
        draft, full = decode_image(data, 128).astype(int), decode_image(data, 128, decode="full").astype(int)
        diff = np.abs(draft - full)
        assert 0 < diff.mean() < 2.0 and np.percentile(diff, 99) < 16


def test_decode_full_turns_draft_off(food_jpegs, monkeypatch):
    seen = []
    original = images.open_image

    def spy(*args, **kwargs):
        img = original(*args, **kwargs)
        seen.append((img.info["draft_scale"], img.size))
        return img

    monkeypatch.setattr(images, "open_image", spy)
    data = big_jpeg(food_jpegs[0], 1000, 800)
    decode_image(data, 128)
    decode_image(data, 128, decode="full")
    assert seen == [(4, (250, 200)), (1, (1000, 800))]
    with pytest.raises(ValueError, match="decode should be one of"):
        decode_image(data, 128, decode="fast")


def test_png_is_never_drafted(food_jpegs):
    buf = io.BytesIO()
    food_jpegs[0].resize((1000, 800)).save(buf, "PNG")
    img = open_image(buf.getvalue(), draft_size=64)
    assert img.info["draft_scale"] == 1 and img.size == (1000, 800)


def test_box_is_scaled_with_the_draft(food_jpegs):
    data = big_jpeg(food_jpegs[1], 1000, 800)
    box = (101, 79, 741, 603)  # 640 x 524 full-size pixels: 1/4 still keeps 160 x 131 >= 128
    img = open_image(data, box=box, draft_size=128)
    assert img.info["draft_scale"] == 4
    assert img.size == (160, 131) and min(img.size) >= 128  # 640 / 4, 524 / 4 rounded up
    draft, full = (
        decode_image(data, 128, box=box).astype(int),
        decode_image(data, 128, box=box, decode="full").astype(int),
    )
    assert np.abs(draft - full).mean() < 1.0  # not shifted by the box's odd corners
    whole = decode_image(data, 128, decode="full").astype(int)
    assert np.abs(draft - whole).mean() > 4 * np.abs(draft - full).mean()  # the box really crops
    small = open_image(data, box=(300, 300, 500, 500), draft_size=128)  # 200 px box: under 2x, not drafted
    assert small.info["draft_scale"] == 1 and small.size == (200, 200)


def test_box_and_exif_orientation_with_draft(food_jpegs):
    data = big_jpeg(food_jpegs[2], 800, 1000, orientation=6)  # stored 800 x 1000, upright 1000 x 800
    assert open_image(data, draft_size=128).size == (250, 200)
    box = (120, 40, 900, 700)  # upright pixels
    img = open_image(data, box=box, draft_size=128)
    assert img.info["draft_scale"] == 4 and img.size == (195, 165)  # 780 x 660 upright pixels / 4
    draft, full = (
        decode_image(data, 96, box=box).astype(int),
        decode_image(data, 96, box=box, decode="full").astype(int),
    )
    assert np.abs(draft - full).mean() < 1.0


def test_extract_records_the_decode_mode_and_keeps_the_caches_apart(food_jpegs, tmp_path, mobilenet_onnx, monkeypatch):
    data = tmp_path / "big"
    for c, photo in enumerate(food_jpegs[:2]):
        (data / f"dish{c}").mkdir(parents=True)
        for i in range(10):
            (data / f"dish{c}" / f"{i}.jpg").write_bytes(big_jpeg(photo.rotate(9 * i), 520 + 10 * i, 540))
    scales = []
    original = images.open_image
    monkeypatch.setattr(
        images, "open_image", lambda *a, **k: scales.append(original(*a, **k).info["draft_scale"]) or original(*a, **k)
    )
    cache = tmp_path / "cache"
    prep = prepare(data, cache_dir=cache, quiet=True)
    scales.clear()
    results = {}
    for mode in ("draft", "full"):
        opts = ex.ExtractOptions(backbone=str(mobilenet_onnx), size=64, decode=mode, dtype="float32")
        (results[mode],) = ex.extract(prep, opts, cache_dir=cache, quiet=True)
        assert sorted(set(scales)) == ([8] if mode == "draft" else [1]), mode  # 520-610 px at 64: 1/8
        scales.clear()
    draft, full = (read_cache(results[m].path) for m in ("draft", "full"))
    assert draft.meta.decode == "draft" and full.meta.decode == "full"
    assert read_meta(results["draft"].path).identity["decode"] == "draft"
    assert results["draft"].path != results["full"].path and results["full"].path.split("/")[-2].endswith("-fulldecode")
    f32 = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert np.median((f32(draft.features) * f32(full.features)).sum(1)) > 0.95  # nearly the same features
