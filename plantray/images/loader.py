"""The one loader: image bytes from any URI -> decoded -> a view (centre crop, test crops or a training
view), or a failure reason. Every pipeline (classify, nightly, evaluate, train) decodes through here.

:func:`load_batch` is the Ray Data ``map_batches`` stage. Each input row comes out exactly once: with
``_pixels`` (the view's uint8 array as bytes) or with ``error`` set to a reason from
:mod:`plantray.reasons`. :func:`stack_pixels` turns a batch's ``_pixels`` back into one array.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
from PIL import Image

from plantray import reasons, storage
from plantray.columns import ERROR, PIXELS, SOURCE_COLUMN
from plantray.images.decode import ImageError, center_crop, open_image, resize_shorter
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, EvalPreset
from plantray.storage.http import FetchConfig, FetchError, HttpFetcher

_READ_THREADS = 16  # object stores and web servers answer in ~10-100 ms: overlap the waits


class View(Protocol):
    """What a pipeline makes of a decoded image (see ``EvalView``, ``CropView``, ``TrainView``)."""

    min_side: int  # decoding may shrink the image (JPEG draft mode) but never below this shorter side
    columns: tuple[str, ...]  # row columns the view reads (e.g. ``image_uri`` seeds random crops)

    def __call__(self, img: Image.Image, row: dict) -> np.ndarray:
        """uint8 pixels of one image: ``[S, S, 3]`` or ``[crops, S, S, 3]``."""


@dataclass(frozen=True)
class LoadOptions:
    """Limits and HTTP settings of the loader; one byte cap for local, object-store and HTTP reads.

    Frozen (hashable): it keys the per-process HTTP fetcher.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    http_timeout: float = 20.0
    http_per_host: int = 4
    image_cache: str | None = None

    def fetch_config(self) -> FetchConfig:
        """The HTTP fetcher's settings, capped at the same ``max_bytes`` as every other read."""
        return FetchConfig(timeout=self.http_timeout, per_host=self.http_per_host, cache=self.image_cache,
                           max_bytes=self.max_bytes)


class EvalView:
    """The model's evaluation preprocessing: shorter side to ``resize_size``, centre crop ``crop_size``."""

    columns: tuple[str, ...] = ()

    def __init__(self, preset: EvalPreset):
        self.preset, self.min_side = preset, preset.resize_size

    def __call__(self, img: Image.Image, row: dict | None = None) -> np.ndarray:
        p = self.preset
        return np.asarray(center_crop(resize_shorter(img, p.resize_size, p.interpolation), p.crop_size), np.uint8)


def preprocess(data: bytes, preset: EvalPreset) -> np.ndarray:
    """Bytes to the network's uint8 HWC input (normalisation happens on the model's device).

    Raises:
        ImageError: see :func:`plantray.images.decode.open_image`.
    """
    return EvalView(preset)(open_image(data, preset.resize_size, preset.max_pixels))


_FETCHERS: dict[LoadOptions, HttpFetcher] = {}


def _fetcher(options: LoadOptions) -> HttpFetcher:
    # One fetcher (connection pool, per-host caps) per Ray worker process, reused by its tasks.
    if options not in _FETCHERS:
        _FETCHERS[options] = HttpFetcher(options.fetch_config())
    return _FETCHERS[options]


def read_image(uri: str, options: LoadOptions = LoadOptions()) -> bytes:
    """Reads one image's bytes from a local path, object storage or HTTP(S).

    Raises:
        ImageError: not found, unsupported scheme, file too large, or a read/fetch failure.
    """
    if not uri:
        raise ImageError(reasons.NO_URI)
    proto = storage.scheme(uri)
    if proto in storage.HTTP_SCHEMES:
        try:
            return _fetcher(options).fetch(uri)
        except FetchError as e:
            raise ImageError(e.reason) from None
    if proto != "file" and proto not in storage.REMOTE_SCHEMES:
        raise ImageError(reasons.with_detail(reasons.UNSUPPORTED_SCHEME, proto))
    try:
        data = storage.read_bytes(uri, max_bytes=options.max_bytes)
    except (FileNotFoundError, IsADirectoryError):
        raise ImageError(reasons.NOT_FOUND) from None
    except PermissionError:
        raise ImageError(reasons.PERMISSION_DENIED) from None
    except storage.MissingFilesystem:
        raise ImageError(f"{reasons.UNSUPPORTED_SCHEME} {proto} ({reasons.MISSING_FILESYSTEM})") from None
    except OSError as e:
        raise ImageError(f"{reasons.READ_ERROR}: {type(e).__name__}") from None
    if len(data) > options.max_bytes:
        raise ImageError(reasons.FILE_TOO_LARGE)
    return data


def load_one(uri: str, row: dict, view: View, options: LoadOptions = LoadOptions()) -> tuple[bytes | None, str | None]:
    """Reads, decodes and views one image; returns (pixel bytes, None) or (None, reason). Never raises."""
    try:
        img = open_image(read_image(uri, options), view.min_side, options.max_pixels)
        return np.ascontiguousarray(view(img, row), np.uint8).tobytes(), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # a bug must cost one row, never the block
        return None, f"{reasons.INTERNAL_ERROR}: {type(e).__name__}"


def load_batch(table: pa.Table, view: View, options: LoadOptions = LoadOptions()) -> pa.Table:
    """``map_batches`` stage: adds ``_pixels`` and ``error`` to a pyarrow batch.

    Args:
        table: rows with the resolved URI in ``_source`` and the columns ``view.columns`` names.
        view: what to make of each decoded image.
        options: byte/pixel limits and HTTP settings.
    Returns:
        The same rows with ``_pixels`` (the view's uint8 array as bytes, or null) and ``error`` (null or
        a reason from :mod:`plantray.reasons`).
    """
    uris = table.column(SOURCE_COLUMN).to_pylist()
    present = [c for c in view.columns if c in table.column_names]  # e.g. no ``tag`` column: row.get -> None
    rows = table.select(present).to_pylist() if present else [{}] * len(uris)

    def load(i: int) -> tuple[bytes | None, str | None]:
        return load_one(uris[i], rows[i], view, options)

    if len(uris) > 1 and any(storage.scheme(u or "") != "file" for u in uris):
        with ThreadPoolExecutor(min(_READ_THREADS, len(uris))) as pool:
            results = list(pool.map(load, range(len(uris))))
    else:  # local files: decoding is CPU-bound, threads would only contend for the GIL
        results = [load(i) for i in range(len(uris))]
    pixels = pa.array([r[0] for r in results], pa.binary())
    errors = pa.array([r[1] for r in results], pa.string())
    return table.append_column(PIXELS, pixels).append_column(ERROR, errors)


def stack_pixels(pixels: pa.Array | pa.ChunkedArray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The valid rows of a ``_pixels`` column as one uint8 array, plus their row indices.

    Args:
        pixels: the column :func:`load_batch` wrote.
        shape: one row's array shape, e.g. ``(S, S, 3)`` or ``(crops, S, S, 3)``.
    Returns:
        (uint8 ``[V * rows_per_image, ...]`` where a row of shape ``(n, ...)`` contributes n entries,
        int indices of the V valid rows).
    """
    if isinstance(pixels, pa.ChunkedArray):
        pixels = pixels.combine_chunks()
    per_row = shape if len(shape) == 3 else shape[1:]
    n = 1 if len(shape) == 3 else shape[0]
    valid = np.flatnonzero(pixels.is_valid().to_numpy(zero_copy_only=False))
    if len(valid) == 0:
        return np.zeros((0, *per_row), np.uint8), valid
    data = bytearray().join(pixels.take(pa.array(valid)).to_pylist())  # writable: torch takes it without a copy
    return np.frombuffer(data, np.uint8).reshape(len(valid) * n, *per_row), valid
