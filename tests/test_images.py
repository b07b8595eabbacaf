"""The one image-loading path: any mode to RGB uint8, EXIF orientation, box crop, resize modes, failures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featkit.core.errors import FeatkitError
from featkit.data.images import ImageDecodeError, decode_image, load_images, open_image, resize_square


def encode(img: Image.Image, fmt: str = "PNG", **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def noise(w: int = 24, h: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _palette(transparent: bool) -> bytes:
    img = Image.fromarray(noise()).convert("P", palette=Image.ADAPTIVE, colors=16)
    if transparent:
        return encode(img, transparency=0)
    return encode(img)


def _sixteen_bit() -> bytes:
    arr = np.zeros((20, 24), np.uint16)
    arr[:, 12:] = 128 * 257  # mid grey in 16 bits
    return encode(Image.fromarray(arr))


MODES = {
    "L jpeg": lambda: encode(Image.fromarray(noise()[..., 0]), "JPEG"),
    "CMYK jpeg": lambda: encode(Image.fromarray(noise()).convert("CMYK"), "JPEG"),
    "P png": lambda: _palette(False),
    "P png transparent": lambda: _palette(True),
    "RGBA png": lambda: encode(Image.fromarray(noise()).convert("RGBA")),
    "LA png": lambda: encode(Image.fromarray(noise()[..., 0]).convert("LA")),
    "1 png": lambda: encode(Image.fromarray(noise()[..., 0]).convert("1")),
    "16-bit png": _sixteen_bit,
    "RGB webp": lambda: encode(Image.fromarray(noise()), "WEBP"),
    "RGB bmp": lambda: encode(Image.fromarray(noise()), "BMP"),
}


@pytest.mark.parametrize("kind", list(MODES))
@pytest.mark.parametrize("resize", ["stretch", "crop", "pad"])
def test_every_mode_comes_out_rgb_uint8(kind, resize):
    data = MODES[kind]()
    out = decode_image(data, 16, resize)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


def test_source_modes_are_what_the_cases_claim():
    modes = {k: Image.open(io.BytesIO(f())).mode for k, f in MODES.items()}
    assert modes["CMYK jpeg"] == "CMYK" and modes["P png transparent"] == "P" and modes["16-bit png"].startswith("I")
    assert "transparency" in Image.open(io.BytesIO(MODES["P png transparent"]())).info


def test_grey_and_cmyk_colours():
    grey = decode_image(encode(Image.new("L", (16, 16), 100)), 16)
    assert (grey == 100).all()
    red = decode_image(encode(Image.new("RGB", (16, 16), (255, 0, 0)).convert("CMYK"), "JPEG", quality=95), 16)
    assert (red[..., 0] > 240).all() and (red[..., 1:] < 15).all()


def test_transparency_becomes_white():
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (0, 0, 255, 255)  # left half opaque blue, right half fully transparent
    out = decode_image(encode(Image.fromarray(rgba)), 16)
    assert (out[:, :8] == (0, 0, 255)).all() and (out[:, 8:] == 255).all()
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(0, (0, 0, 8, 16))
    out = decode_image(encode(p, transparency=0), 16)  # index 0 transparent
    assert (out[:, :8] == 255).all() and (out[:, 8:] == (0, 255, 0)).all()


def test_sixteen_bit_maps_to_eight_bit_scale():
    out = decode_image(_sixteen_bit(), 24, "stretch")
    assert (out[:, :12] == 0).all()
    assert (out[:, 12:] == 128).all()  # mid grey stays mid grey, not stretched to white


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 30, 3), np.uint8)  # 30 wide, 20 high
    arr[:, :6] = (255, 0, 0)  # the left edge is red
    arr[:, 6:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).size == (30, 20)
    img = open_image(data)
    assert img.size == (20, 30)  # upright: 20 wide, 30 high
    up = np.asarray(img)
    assert (up[:4, :, 0] > 200).all() and (up[:4, :, 2] < 60).all()  # the left edge is now the top
    assert (up[10:, :, 2] > 200).all()
    out = decode_image(data, 10, "pad")  # tall now: a 7 x 10 picture with bars left (1 px) and right (2 px)
    assert (out[:, :1] < 10).all() and (out[:, 8:] < 10).all()
    assert (out[0, 1:8, 0] > 200).all() and (out[9, 1:8, 2] > 200).all()


def _bands(w: int = 40, h: int = 20) -> Image.Image:
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 4] = (255, 0, 0)
    arr[:, w // 4 : 3 * w // 4] = (0, 255, 0)
    arr[:, 3 * w // 4 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_resize_stretch_keeps_everything():
    out = resize_square(_bands(), 16, "stretch")
    assert out.shape == (16, 16, 3)
    assert out[:, 0, 0].min() > 200 and out[:, 8, 1].min() > 200 and out[:, 15, 2].min() > 200


def test_resize_crop_keeps_the_centre():
    out = resize_square(_bands(), 16, "crop")
    assert out.shape == (16, 16, 3)
    assert (out[..., 1] > 240).all() and (out[..., [0, 2]] < 15).all()  # only the green middle band


def test_resize_pad_has_black_bars():
    out = resize_square(Image.new("RGB", (40, 20), (255, 255, 255)), 16, "pad")
    assert out.shape == (16, 16, 3)
    assert (out[:4] == 0).all() and (out[12:] == 0).all()  # 16 x 8 picture, 4 black rows above and below
    assert (out[4:12] > 240).all()


def test_bad_resize_mode():
    with pytest.raises(FeatkitError, match="should be one of"):
        resize_square(_bands(), 16, "squash")


def test_box_crop_is_clipped_and_a_degenerate_box_is_not_applied():
    data = encode(_bands(40, 20))
    assert open_image(data, box=(10, 0, 30, 20)).size == (20, 20)
    assert open_image(data, box=(-5, -5, 10, 100)).size == (10, 20)  # clipped to the photo
    assert open_image(data, box=(5, 5, 6, 6)).size == (40, 20)  # under 2 px: the whole photo
    green = decode_image(data, 8, box=(10, 0, 30, 20))
    assert (green[..., 1] > 240).all() and (green[..., [0, 2]] < 15).all()


def test_big_jpeg_uses_draft_decoding_and_keeps_shape():
    data = encode(Image.fromarray(noise(400, 300)), "JPEG")
    assert decode_image(data, 32).shape == (32, 32, 3)
    assert open_image(data).size == (400, 300)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(Image.fromarray(noise(64, 64)), "JPEG")[:900], id="truncated jpeg"),
        pytest.param(b"this is text, not a JPEG", id="text"),
        pytest.param(b"", id="empty"),
    ],
)
def test_undecodable_bytes_raise_image_decode_error(data):
    with pytest.raises(ImageDecodeError) as e:
        decode_image(data, 16)
    assert str(e.value) and "\n" not in str(e.value)


def test_load_images_reports_failures_and_keeps_going():
    good = encode(Image.new("RGB", (20, 20), (10, 200, 30)), "PNG")
    files = {"a.png": good, "bad.jpg": b"not a photo", "c.png": good}

    def read(name: str) -> bytes:
        if name == "broken-member.jpg":
            raise OSError("corrupt zip member: Bad CRC-32")
        return files[name]  # KeyError for a missing file

    names = ["a.png", "bad.jpg", "missing.jpg", "broken-member.jpg", "c.png"]
    out, failures = load_images(read, names, 8)
    assert out.shape == (5, 8, 8, 3) and out.dtype == np.uint8
    assert [f.index for f in failures] == [1, 2, 3]
    assert [f.path for f in failures] == ["bad.jpg", "missing.jpg", "broken-member.jpg"]
    assert "missing file" in failures[1].error and "Bad CRC-32" in failures[2].error
    assert (out[[1, 2, 3]] == 0).all()
    assert (out[0] == (10, 200, 30)).all() and (out[4] == out[0]).all()


def test_load_images_applies_the_transform_to_each_loaded_photo_only():
    good = encode(Image.new("RGB", (20, 20), (10, 200, 30)), "PNG")
    seen = []

    def flip_and_mark(i: int, img: np.ndarray) -> np.ndarray:
        seen.append(i)
        return 255 - img

    out, failures = load_images({"a.png": good}.__getitem__, ["a.png", "gone.png", "a.png"], 4, transform=flip_and_mark)
    assert sorted(seen) == [0, 2] and [f.index for f in failures] == [1]
    assert (out[0] == (245, 55, 225)).all() and (out[1] == 0).all()
