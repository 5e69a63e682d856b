"""Decoding a corpus of odd, fuzzed and broken files: each gives pixels or one named reason, never a crash.

The corpus is generated in :mod:`tests.image_corpus` (about 750 files, nothing downloaded). Unit level: no Ray.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from plantray import reasons
from plantray.images import decode
from plantray.images.decode import ImageError, open_image
from plantray.images.loader import EvalView, load_one, preprocess
from plantray.images.presets import EvalPreset
from tests import image_corpus

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns of the corrupt EXIF it skips

PRESET = EvalPreset(crop_size=16, resize_size=20, max_pixels=1_000_000)
DECODE_REASONS = {reasons.EMPTY_FILE, reasons.NOT_AN_IMAGE, reasons.UNSUPPORTED_FORMAT, reasons.TRUNCATED,
                  reasons.IMAGE_TOO_LARGE, reasons.UNDECODABLE}


def outcome(data: bytes, preset: EvalPreset = PRESET) -> tuple[np.ndarray | None, str | None]:
    """(pixels, None) or (None, reason), as a loader records a row; anything else propagates and fails the test."""
    try:
        return preprocess(data, preset), None
    except ImageError as e:
        return None, e.reason


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[np.ndarray | None, str | None]]:
    files = image_corpus.corpus()
    assert len({name for name, _ in files}) == len(files)  # names are unique: each case reads on its own
    return {name: outcome(data) for name, data in files}


def test_every_file_gives_pixels_or_exactly_one_decoding_reason(results):
    assert len(results) >= 600
    for name, (pixels, reason) in results.items():
        assert (pixels is None) != (reason is None), name
        if pixels is not None:
            assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8, name
        else:
            assert reason in DECODE_REASONS, (name, reason)  # never "internal error", never a new text
    seen = {reason for _, reason in results.values() if reason}
    assert seen == DECODE_REASONS  # the corpus exercises every decoding reason


def test_valid_files_of_every_format_and_mode_decode(results):
    valid = {n: r for n, r in results.items() if n.startswith("valid/")}
    assert len(valid) >= 55
    assert {n: reason for n, (_, reason) in valid.items() if reason} == {}


@pytest.mark.parametrize("prefix,expected", [
    ("dds-unsupported/", reasons.UNSUPPORTED_FORMAT),  # Pillow raises NotImplementedError for these
    ("bomb/", reasons.IMAGE_TOO_LARGE),
    ("exif/", None),  # odd orientation values and corrupt EXIF blocks leave the image as stored
])
def test_families_with_one_answer(results, prefix, expected):
    family = {n: reason for n, (_, reason) in results.items() if n.startswith(prefix)}
    assert len(family) >= 6
    assert set(family.values()) == {expected}, family


@pytest.mark.parametrize("name", ["other/one-byte", "other/text", "other/html", "other/json", "other/svg",
                                  "other/pdf", "other/zip", "other/noise", "other/nul-bytes", "other/jpeg-soi-only"])
def test_files_without_an_image_signature_are_not_images(results, name):
    assert results[name] == (None, reasons.NOT_AN_IMAGE)


@pytest.mark.parametrize("name,reason", [
    ("other/empty", reasons.EMPTY_FILE),
    ("other/eps-no-ghostscript", reasons.UNSUPPORTED_FORMAT),  # a format whose helper program is missing
    ("other/png-signature-only", reasons.UNDECODABLE),  # PNG's signature, then nothing Pillow can read
    ("dds/luminance-32bit", reasons.UNSUPPORTED_FORMAT),
    ("bmp/jpeg-compression", reasons.UNSUPPORTED_FORMAT),
    ("bmp/2bpp", reasons.UNSUPPORTED_FORMAT),
    ("pcx/4bit-1plane", reasons.UNSUPPORTED_FORMAT),
    ("psd/rgb16", reasons.UNDECODABLE),
    ("dds/dxt1-short", reasons.TRUNCATED),
    ("dds/header-cut", reasons.TRUNCATED),
    ("dds/huge", reasons.IMAGE_TOO_LARGE),
    ("tga/cmap-without-map", reasons.UNDECODABLE),
])
def test_specific_reasons(results, name, reason):
    assert results[name] == (None, reason)


def test_truncations_of_valid_files_never_decode_silently_as_something_else(results):
    cuts = {n: reason for n, (_, reason) in results.items() if n.startswith("fuzz/") and "/cut-" in n}
    assert len(cuts) >= 150
    assert {reasons.TRUNCATED, reasons.UNDECODABLE} <= set(cuts.values()) <= DECODE_REASONS | {None}
    jpeg_halves = [reason for n, reason in cuts.items() if n.startswith("fuzz/jpeg-") and n.endswith(
        tuple(f"cut-{len(d) // 2}" for k, d in image_corpus.valid_files() if k.startswith("valid/jpeg-")))]
    assert jpeg_halves and set(jpeg_halves) == {reasons.TRUNCATED}


def test_a_strip_too_long_to_resize_is_refused_with_the_default_limits():
    strip = dict(image_corpus.bomb_files())["bomb/strip-60000x1"]
    assert outcome(strip, EvalPreset()) == (None, reasons.IMAGE_TOO_LARGE)  # 60,000 x 256 x 256 px once resized
    assert outcome(strip, EvalPreset(crop_size=1, resize_size=1))[1] is None  # at 1 px it is harmless


def _png_with_orientation(arr: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif.tobytes())  # lossless: pixels compare exactly
    return buf.getvalue()


# What a viewer shows for each EXIF orientation (EXIF 2.3, tag 0x0112), as numpy operations on the stored rows.
DISPLAY = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.rot90(a[:, ::-1], 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a[:, ::-1], -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_upright_pixels(orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    out = np.asarray(open_image(_png_with_orientation(stored, orientation), 1))
    np.testing.assert_array_equal(out, DISPLAY[orientation](stored))


def _raise_inside_pillow(exc: BaseException):
    """Raises ``exc`` from a callback that Pillow calls, so the traceback runs through Pillow's code."""
    def callback(_):
        raise exc
    Image.new("L", (1, 1)).point(callback)


@pytest.mark.parametrize("exc,reason", [
    (NotImplementedError("Unimplemented pixel format"), reasons.UNSUPPORTED_FORMAT),
    (EOFError(), reasons.TRUNCATED),
    (OSError("image file is truncated (3 bytes not processed)"), reasons.TRUNCATED),
    (ValueError("not enough image data"), reasons.TRUNCATED),
    (OSError("Unsupported BMP compression (4)"), reasons.UNSUPPORTED_FORMAT),
    (OSError("decoder jpeg2k not available"), reasons.UNSUPPORTED_FORMAT),
    (OSError("broken data stream when reading image file"), reasons.UNDECODABLE),
    (ValueError("Invalid dimensions"), reasons.UNDECODABLE),
    (SyntaxError("broken PNG file"), reasons.UNDECODABLE),
    (struct.error("unpack requires a buffer of 4 bytes"), reasons.UNDECODABLE),
    (IndexError("index out of range"), reasons.UNDECODABLE),
    (TypeError("'IFDRational' object cannot be interpreted as an integer"), reasons.UNDECODABLE),
    (ZeroDivisionError("division by zero"), reasons.UNDECODABLE),
    (KeyError("tile"), reasons.UNDECODABLE),
    (MemoryError(), reasons.IMAGE_TOO_LARGE),
    (Image.DecompressionBombError("Image size exceeds limit"), reasons.IMAGE_TOO_LARGE),
])
def test_each_exception_pillow_raises_has_a_named_reason(exc, reason):
    with pytest.raises(type(exc)) as raised:
        _raise_inside_pillow(exc)
    assert decode._decode_failure(raised.value, b"") == reason


def test_plantrays_own_bugs_are_not_disguised_as_bad_files(monkeypatch):
    def broken(img):
        raise TypeError("a bug in plantray")
    monkeypatch.setattr(decode, "_to_rgb", broken)
    data = dict(image_corpus.valid_files())["valid/png-RGB"]
    with pytest.raises(TypeError):
        open_image(data, 8)


def test_a_plantray_bug_reads_as_internal_error_in_the_loader(monkeypatch, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(dict(image_corpus.valid_files())["valid/png-RGB"])
    monkeypatch.setattr(decode, "_to_rgb", lambda img: 1 / 0)
    assert load_one(str(path), {}, EvalView(PRESET)) == (None, f"{reasons.INTERNAL_ERROR}: ZeroDivisionError")
