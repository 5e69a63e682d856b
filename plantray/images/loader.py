"""The CPU stage of every pipeline: read image bytes from any URI and decode them, per row, softly.

Runs inside Ray Data tasks (``map_batches`` with ``batch_format="pyarrow"``). Each input row comes
out exactly once: either with ``_pixels`` (uint8 HWC bytes) or with ``error`` set.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa

from plantray import storage
from plantray.columns import ERROR, PIXELS, SOURCE_COLUMN
from plantray.config import ConfigError
from plantray.images.decode import ImageError, preprocess
from plantray.images.presets import DEFAULT_MAX_BYTES, EvalPreset

_READ_THREADS = 16  # object stores and web servers answer in ~10-100 ms: overlap the waits


def read_image(uri: str, max_bytes: int = DEFAULT_MAX_BYTES, fetcher=None) -> bytes:
    """Reads one image's bytes from a local path, object storage or HTTP(S).

    Raises:
        ImageError: not found, unsupported scheme, file too large, or a read/fetch failure.
    """
    if not uri:
        raise ImageError("no image uri")
    proto = storage.scheme(uri)
    if proto in storage.HTTP_SCHEMES:
        return _fetch_http(uri, fetcher)
    if proto != "file" and proto not in storage.REMOTE_SCHEMES:
        raise ImageError(f"unsupported scheme {proto}")
    try:
        data = storage.read_bytes(uri, max_bytes=max_bytes)
    except (FileNotFoundError, IsADirectoryError):
        raise ImageError("not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except ConfigError:
        raise ImageError(f"unsupported scheme {proto} (filesystem package not installed)") from None
    except OSError as e:
        raise ImageError(f"read error: {type(e).__name__}") from None
    if len(data) > max_bytes:
        raise ImageError("file too large")
    return data


def _fetch_http(uri: str, fetcher) -> bytes:
    from plantray.storage.http import FetchError

    fetcher = fetcher or _fetcher(None)
    try:
        return fetcher.fetch(uri)
    except FetchError as e:
        raise ImageError(e.reason) from None


def load_one(uri: str, preset: EvalPreset, max_bytes: int, fetcher=None) -> tuple[bytes | None, str | None]:
    """Reads and preprocesses one image; returns (pixels, None) or (None, reason). Never raises."""
    try:
        return preprocess(read_image(uri, max_bytes, fetcher), preset).tobytes(), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # a bug or an exotic failure must still not lose the row
        return None, f"internal error: {type(e).__name__}"


_FETCHERS: dict = {}


def _fetcher(fetch_config):
    # One fetcher (connection pool, per-host caps) per Ray worker process, reused by its tasks.
    from plantray.storage.http import FetchConfig, HttpFetcher

    key = repr(fetch_config)
    if key not in _FETCHERS:
        _FETCHERS[key] = HttpFetcher(fetch_config or FetchConfig())
    return _FETCHERS[key]


def decode_batch(table: pa.Table, preset: EvalPreset, max_bytes: int = DEFAULT_MAX_BYTES,
                 fetch_config=None) -> pa.Table:
    """``map_batches`` function: adds ``_pixels`` and ``error`` to a pyarrow batch.

    Args:
        table: rows with the resolved URI in ``_source``.
        preset: the model's evaluation preprocessing.
        max_bytes: larger files become ``file too large`` rows.
        fetch_config: settings for HTTP(S) sources (:class:`plantray.fetch.FetchConfig`, hashable).
    Returns:
        The same rows with ``_pixels`` (uint8 HWC bytes or null) and ``error`` (null or reason).
    """
    uris = table.column(SOURCE_COLUMN).to_pylist()
    fetcher = _fetcher(fetch_config) if any(storage.scheme(u or "") in storage.HTTP_SCHEMES for u in uris) else None

    def load(uri):
        return load_one(uri, preset, max_bytes, fetcher)

    if len(uris) > 1 and any(storage.scheme(u or "") != "file" for u in uris):
        with ThreadPoolExecutor(min(_READ_THREADS, len(uris))) as pool:
            results = list(pool.map(load, uris))
    else:
        results = [load(u) for u in uris]
    pixels = pa.array([r[0] for r in results], pa.binary())
    errors = pa.array([r[1] for r in results], pa.string())
    return table.append_column(PIXELS, pixels).append_column(ERROR, errors)
