"""Thumbnails of the review cards' images: a Ray Data stage, through plantray's one loader.

Each image is read with :func:`plantray.images.loader.read_image` (local, object storage, HTTP(S) with its
per-host caps and byte limit) and decoded with :func:`plantray.images.decode.open_image` (EXIF orientation
applied, any mode to RGB, JPEG draft mode, the pixel limit), exactly as classify reads it; then shrunk to fit
``size`` x ``size`` and saved as JPEG. A failure is the loader's reason (``not found``, ``http 404``...), so a
card whose picture cannot be made still shows, with the reason instead of the picture.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from PIL import Image

from plantray import reasons, storage
from plantray.images.decode import ImageError, open_image
from plantray.images.loader import LoadOptions, read_image

THUMBS, THUMB_ERRORS = "_thumbs", "_thumb_errors"
_READ_THREADS = 16  # as the loader: overlap the waits of object stores and web servers
_QUALITY = 82  # JPEG quality: small files, no visible blocking at thumbnail size


def thumbnail(uri: str | None, size: int, options: LoadOptions = LoadOptions()) -> tuple[bytes | None, str | None]:
    """One image's thumbnail: (JPEG bytes at most ``size`` on its longer side, None) or (None, reason).

    Never raises: a failure of plantray's own is ``internal error: <type>``, costing one picture, never the block.

    Args:
        uri: the image's resolved URI.
        size: the longer side's bound in pixels.
        options: the loader's byte, pixel and HTTP settings.
    """
    try:
        img = open_image(read_image(uri or "", options), size, options.max_pixels)
        img.thumbnail((size, size), Image.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=_QUALITY)
        return buf.getvalue(), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # a bug must cost one picture, never the block
        return None, f"{reasons.INTERNAL_ERROR}: {type(e).__name__}"


def add_thumbnails(table: pa.Table, size: int, options: LoadOptions = LoadOptions()) -> pa.Table:
    """``map_batches``: each card row's ``sources`` -> ``_thumbs`` (JPEG bytes or null per source) and
    ``_thumb_errors`` (null or the reason per source).

    Args:
        table: card rows (:data:`plantray.review.cards.CARD_SCHEMA`).
        size: the longer side's bound in pixels.
        options: the loader's settings.
    Returns:
        The rows with the two list columns added, one entry per source.
    """
    sources = table.column("sources").to_pylist()
    flat = [s for row in sources for s in (row or [])]

    def make(uri: str | None) -> tuple[bytes | None, str | None]:
        return thumbnail(uri, size, options)

    if len(flat) > 1 and any(storage.scheme(u or "") != "file" for u in flat):
        with ThreadPoolExecutor(min(_READ_THREADS, len(flat))) as pool:
            made = iter(list(pool.map(make, flat)))
    else:  # local files: decoding is CPU-bound, threads would only contend for the GIL
        made = iter([make(u) for u in flat])
    thumbs, errors = [], []
    for row in sources:
        results = [next(made) for _ in row or []]
        thumbs.append([r[0] for r in results])
        errors.append([r[1] for r in results])
    return (table.append_column(THUMBS, pa.array(thumbs, pa.list_(pa.binary())))
            .append_column(THUMB_ERRORS, pa.array(errors, pa.list_(pa.string()))))
