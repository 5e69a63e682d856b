"""Decoding and evaluation-time preprocessing of photographs, robust to whatever archives hold.

One decoder serves classify, train (evaluation split) and evaluate, so a model sees at inference
exactly the preprocessing its card records.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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

    Raises:
        ImageError: empty, not an image, truncated, too large, or otherwise undecodable.
    """
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError("image too large")
            if img.format == "JPEG" and min(width, height) > 2 * min_side:
                scale = min_side / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("image too large") from None
    except OSError as e:
        raise ImageError("truncated image" if "truncated" in str(e).lower() else "undecodable image") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError):
        raise ImageError("undecodable image") from None


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
