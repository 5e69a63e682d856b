"""Decoding and evaluation-time preprocessing of photographs, robust to whatever archives hold.

One decoder serves classify, train (evaluation split) and evaluate, so a model sees at inference
exactly the preprocessing its card records.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from plantray import reasons
from plantray.images.presets import DEFAULT_MAX_PIXELS


class ImageError(Exception):
    """A per-image failure; ``reason`` is the short text written to the ``error`` column."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}


def _to_rgb(img: Image.Image) -> Image.Image:
    """Converts any PIL mode (CMYK, greyscale, palette, alpha, 16-bit, float) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels on white, as a viewer would show them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(data: bytes, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decodes bytes to an upright RGB image whose shorter side is still >= ``min_side``.

    JPEGs are decoded in draft mode: libjpeg scales by 1/2..1/8 during decoding, several times
    faster for multi-megapixel photos, and never below what the later resize needs.

    Args:
        data: the file's bytes.
        min_side: the smallest shorter side the caller needs (draft mode never goes below it).
        max_pixels: larger images are refused before their pixels are decoded.
    Returns:
        An 8-bit RGB image, EXIF orientation applied.
    Raises:
        ImageError: with a reason from :mod:`plantray.reasons` (empty, not an image, unsupported format,
            truncated, too large, or otherwise undecodable). Anything else is a bug in plantray.
    """
    if not data:
        raise ImageError(reasons.EMPTY_FILE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels or _resized_pixels(width, height, min_side) > max_pixels:
                raise ImageError(reasons.IMAGE_TOO_LARGE)
            if img.format == "JPEG" and min(width, height) > 2 * min_side:
                scale = min_side / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Exception as e:  # Pillow's plugins raise nearly any type on odd files: name the cause
        reason = _decode_failure(e, data)
        if reason is None:
            raise
        raise ImageError(reason) from None


def _resized_pixels(width: int, height: int, min_side: int) -> float:
    """Pixels once the shorter side is ``min_side``: a 1 x 60,000 strip would become gigabytes."""
    return max(width, height) * min_side / max(1, min(width, height)) * min_side


# Pillow has no exception type per cause; its messages name it (checked against the corpus in the tests).
_TRUNCATED_WORDS = ("truncated", "expected to read", "incomplete", "not enough image data")
_UNSUPPORTED_WORDS = ("unsupported", "not supported", "not available", "not installed", "unknown pcx mode",
                      "ghostscript")
_PILLOW_DIR = os.path.dirname(PIL.__file__)


def _decode_failure(e: Exception, data: bytes) -> str | None:
    """The failure reason for an exception raised while decoding ``data``; None when plantray raised it."""
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError)):
        return reasons.IMAGE_TOO_LARGE
    if not _raised_in_pillow(e):
        return None  # a bug of ours: it must read as one ("internal error"), not as a bad file
    if isinstance(e, UnidentifiedImageError):
        return _unidentified(data[:16])
    if isinstance(e, NotImplementedError):  # e.g. DDS pixel formats Pillow knows of but cannot decode
        return reasons.UNSUPPORTED_FORMAT
    if isinstance(e, EOFError):
        return reasons.TRUNCATED
    message = str(e).lower()
    if isinstance(e, (OSError, ValueError)) and any(w in message for w in _TRUNCATED_WORDS):
        return reasons.TRUNCATED
    if isinstance(e, (OSError, ValueError)) and any(w in message for w in _UNSUPPORTED_WORDS):
        return reasons.UNSUPPORTED_FORMAT
    # Corrupt contents: OSError (broken data stream, decoder error), ValueError, SyntaxError, struct.error,
    # IndexError, TypeError, KeyError, ZeroDivisionError, OverflowError... from a plugin reading garbage.
    return reasons.UNDECODABLE


def _raised_in_pillow(e: Exception) -> bool:
    """Whether the exception came from inside Pillow (any frame between open_image and the raise)."""
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith(_PILLOW_DIR):
            return True
        tb = tb.tb_next
    return False


def _unidentified(prefix: bytes) -> str:
    """Why no plugin opened the file: no image magic at all, a format whose library is missing, or corrupt."""
    Image.init()
    verdicts = []
    for _, accept in Image.OPEN.values():
        if accept is not None:
            try:
                verdicts.append(accept(prefix))
            except (IndexError, TypeError, struct.error):  # some checks index past a short prefix
                continue
    if any(isinstance(v, str) for v in verdicts):  # Pillow's "... support not installed" answer
        return reasons.UNSUPPORTED_FORMAT
    # A known magic number whose plugin refused the header: a damaged file or a variant Pillow lacks.
    return reasons.UNDECODABLE if any(verdicts) else reasons.NOT_AN_IMAGE


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resizes so the shorter side equals ``size``, keeping the aspect ratio."""
    width, height = img.size
    scale = size / min(width, height)
    new = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new == (width, height):
        return img
    # reducing_gap: a fast box pre-shrink before the exact filter; same output quality.
    return img.resize(new, _RESAMPLE[interpolation], reducing_gap=3.0)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Crops the central ``size`` x ``size`` square."""
    width, height = img.size
    left, top = (width - size) // 2, (height - size) // 2
    return img.crop((left, top, left + size, top + size))
