"""Unit tests of decoding: modes, orientation, draft mode, and every failure reason."""

import io

import numpy as np
import pytest
from PIL import Image

from plantray.images.decode import ImageError, center_crop, open_image, resize_shorter
from plantray.images.loader import preprocess
from plantray.images.presets import EvalPreset
from tests.helpers import jpeg_bytes


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("CMYK", "JPEG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"),
                                      ("LA", "PNG"), ("I;16", "PNG"), ("1", "PNG")])
def test_modes_become_rgb(mode, fmt):
    img = Image.new("RGB", (30, 20), (200, 30, 60)).convert(mode)
    out = open_image(_save(img, fmt), min_side=20)  # no draft reduction: size is kept
    assert out.mode == "RGB" and out.size == (30, 20)


def test_sixteen_bit_scaled_not_clipped():
    arr = np.full((10, 10), 65535 // 2, dtype=np.uint16)
    out = np.asarray(open_image(_save(Image.fromarray(arr), "PNG"), 4))
    assert 120 <= out[0, 0, 0] <= 135  # half of full scale, not saturated at 255


def test_exif_orientation_applied():
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    out = open_image(_save(img, "JPEG", exif=exif.tobytes()), 20)
    assert out.size == (20, 40)


def test_draft_mode_keeps_enough_resolution():
    data = jpeg_bytes(1600, 1200, seed=1)
    img = open_image(data, min_side=100)
    assert min(img.size) >= 100 and img.size[0] < 1600  # decoded at reduced scale, never below need


def test_preprocess_shape_and_geometry():
    preset = EvalPreset(crop_size=32, resize_size=36)
    out = preprocess(jpeg_bytes(90, 60), preset)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    img = resize_shorter(Image.new("RGB", (90, 60)), 36)
    assert img.size == (54, 36)
    assert center_crop(img, 32).size == (32, 32)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, not an image", "not an image"),
    (jpeg_bytes(64, 64)[:300], "truncated image"),
])
def test_failure_reasons(data, reason):
    with pytest.raises(ImageError) as e:
        open_image(data, 8)
    assert e.value.reason == reason


def test_decompression_bomb_refused_before_decoding():
    bomb = _save(Image.new("1", (12_000, 12_000)), "PNG")  # 144 MP in a few KB
    assert len(bomb) < 200_000
    with pytest.raises(ImageError) as e:
        open_image(bomb, 8)
    assert e.value.reason == "image too large"
