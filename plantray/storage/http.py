"""Polite, robust HTTP(S) image fetching from institution servers (slow, rate-limited, sometimes down).

:class:`HttpFetcher` retries 5xx/429/408 and connection errors with jittered exponential backoff, honours
``Retry-After``, bounds redirects and body size, rejects non-image content types, caps concurrency per host
and optionally caches bytes under a URI prefix (local or object store, through :mod:`plantray.storage`).

Every failure is a :class:`FetchError` whose ``reason`` comes from :mod:`plantray.reasons` and is meant for a
row's ``error`` column, so one bad URL never kills a batch and each cause has one name whatever the source.
Concurrency cap: ``per_host`` bounds requests in flight to one host *within a process*; across a cluster the
bound is ``per_host`` x the number of processes fetching at once (Ray tasks or actors), so size the fetching
pool with that product in mind.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import timezone
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from plantray import __version__, reasons, storage

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 30.0
MAX_REDIRECTS = 10
CHUNK_BYTES = 64 * 1024
# 408 Request Timeout and 429 Too Many Requests are the only 4xx worth asking again.
RETRY_STATUS = {408, 429}
# Types servers send for images they do not label; everything else non-image/* is rejected.
BINARY_TYPES = {"application/octet-stream", "binary/octet-stream"}
DEFAULT_USER_AGENT = (f"plantray/{__version__} (+https://github.com/plantray/plantray; "
                      "biodiversity image classification)")


class FetchError(Exception):
    """A failed fetch; ``reason`` is a :mod:`plantray.reasons` text, e.g. ``"http 404"``, ``"timeout"``."""

    def __init__(self, reason: str, url: str = "", retryable: bool = False, retry_after: float | None = None):
        super().__init__(reason, url, retryable, retry_after)
        self.reason = reason
        self.url = url
        self.retryable = retryable
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After), if any

    def __str__(self) -> str:
        return f"{self.reason}: {self.url}" if self.url else self.reason


@dataclass(frozen=True)
class FetchConfig:
    """How to fetch images politely (frozen, so it is hashable and can key a per-process fetcher cache).

    ``timeout`` bounds connecting and each socket read (a stalled server), not the whole transfer; the body
    is bounded by ``max_bytes`` instead (by default the cap of local and object-store reads). ``cache`` is a
    URI prefix (``/path``, ``s3://bucket/x``) or None.
    """

    timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 60.0
    max_bytes: int = storage.DEFAULT_MAX_BYTES
    per_host: int = 4
    user_agent: str = DEFAULT_USER_AGENT
    cache: str | None = None

    def __post_init__(self) -> None:
        checks = [("timeout", self.timeout > 0, "a positive number of seconds"),
                  ("retries", self.retries >= 0, "0 or more"),
                  ("backoff", self.backoff >= 0, "0 or more seconds"),
                  ("max_retry_after", self.max_retry_after >= 0, "0 or more seconds"),
                  ("max_bytes", self.max_bytes > 0, "a positive byte count"),
                  ("per_host", self.per_host >= 1, "1 or more"),
                  ("user_agent", bool(self.user_agent), "a non-empty string")]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"FetchConfig.{name}={getattr(self, name)!r} is invalid: use {allowed}")


# Per-process registry so every fetcher copy in a process (Ray reuses workers) shares one cap per host.
_HOST_SEMAPHORES: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_HOST_LOCK = threading.Lock()


def _host_semaphore(url: str, limit: int) -> threading.BoundedSemaphore:
    host = urlsplit(url).netloc.lower()
    with _HOST_LOCK:
        return _HOST_SEMAPHORES.setdefault((host, limit), threading.BoundedSemaphore(limit))


def cache_path(prefix: str, url: str) -> str:
    """Where ``url``'s bytes live in the cache.

    Args:
        prefix: cache URI prefix (``cfg.cache``).
        url: the image URL.

    Returns:
        ``<prefix>/<sha256(url)[:2]>/<sha256(url)>``; the 2-character fan-out keeps directories small.
    """
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return f"{prefix.rstrip('/')}/{digest[:2]}/{digest}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date).

    Args:
        value: the header value, or None.
        now: current POSIX time (for tests); defaults to ``time.time()``.

    Returns:
        Non-negative seconds, or None when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _check_content_type(resp: requests.Response, url: str) -> None:
    media = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media and not media.startswith("image/") and media not in BINARY_TYPES:
        log.debug("%s: content type %s is not an image", url, media)
        raise FetchError(reasons.NOT_AN_IMAGE, url)


def _read_body(resp: requests.Response, url: str, max_bytes: int) -> bytes:
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError(reasons.FILE_TOO_LARGE, url)
    chunks, size = [], 0
    for chunk in resp.iter_content(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:  # Content-Length may be absent or lie; stop reading either way
            raise FetchError(reasons.FILE_TOO_LARGE, url)
        chunks.append(chunk)
    if size == 0:
        raise FetchError(reasons.EMPTY_FILE, url)
    return b"".join(chunks)


def _status_error(resp: requests.Response, url: str) -> FetchError:
    code = resp.status_code
    return FetchError(reasons.with_detail(reasons.HTTP_STATUS, code), url,
                      retryable=code >= 500 or code in RETRY_STATUS,
                      retry_after=parse_retry_after(resp.headers.get("Retry-After")))


def _request_error(exc: requests.RequestException, url: str) -> FetchError:
    """Maps a requests exception to a short reason; network trouble is retryable, bad URLs are not."""
    if isinstance(exc, requests.TooManyRedirects):
        return FetchError(reasons.TOO_MANY_REDIRECTS, url)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return FetchError(reasons.INVALID_URL, url)
    # A stall while streaming the body surfaces as ConnectionError(ReadTimeoutError).
    if isinstance(exc, requests.Timeout) or (exc.args and isinstance(exc.args[0], ReadTimeoutError)):
        return FetchError(reasons.TIMEOUT, url, retryable=True)
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return FetchError(reasons.CONNECTION_ERROR, url, retryable=True)
    return FetchError(reasons.with_detail(reasons.REQUEST_ERROR, f"({type(exc).__name__})"), url)


class HttpFetcher:
    """Fetches image bytes over HTTP(S) with retries, size/type checks, a per-host cap and an optional cache.

    Safe to call from many threads. Picklable: the ``requests.Session`` is created lazily in each process and
    dropped when pickled, so a fetcher can be shipped into Ray tasks and actors.
    """

    def __init__(self, cfg: FetchConfig):
        self.cfg = cfg
        self._init_lazy()

    def _init_lazy(self) -> None:
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.cfg = state["cfg"]
        self._init_lazy()

    @property
    def session(self) -> requests.Session:
        """The process-local pooled session (created on first use)."""
        with self._lock:
            if self._session is None:
                session = requests.Session()
                # Our own retry loop handles retries; the pool must hold every concurrent thread's connection.
                adapter = HTTPAdapter(pool_connections=16, pool_maxsize=max(16, self.cfg.per_host * 4),
                                      max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.max_redirects = MAX_REDIRECTS
                session.headers["User-Agent"] = self.cfg.user_agent
                self._session = session
            return self._session

    def fetch(self, url: str) -> bytes:
        """Fetches one URL's bytes, from the cache when ``cfg.cache`` holds them.

        Args:
            url: http(s) URL of an image.

        Returns:
            The body bytes.

        Raises:
            FetchError: with a :mod:`plantray.reasons` ``reason`` ("http 404", "timeout", "file too large", ...).
        """
        if self.cfg.cache:
            cached = self._cache_get(url)
            if cached is not None:
                return cached
        data = self._fetch_with_retries(url)
        if self.cfg.cache:
            self._cache_put(url, data)
        return data

    def _fetch_with_retries(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._fetch_once(url)
            except FetchError as err:
                if not err.retryable or attempt >= self.cfg.retries:
                    raise
                delay = self._delay(attempt, err.retry_after)
                log.debug("retrying %s in %.2fs after %s", url, delay, err.reason)
                time.sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server said when; believe it, within reason
            return min(retry_after, self.cfg.max_retry_after)
        # "Equal jitter": half fixed, half random, so a fleet of workers does not retry in lockstep.
        base = min(MAX_BACKOFF_S, self.cfg.backoff * 2**attempt)
        return base / 2 + random.uniform(0, base / 2)

    def _fetch_once(self, url: str) -> bytes:
        # The cap is taken for the first host only; a redirect to a CDN does not take a second slot.
        with _host_semaphore(url, self.cfg.per_host):
            try:
                with self.session.get(url, stream=True, timeout=self.cfg.timeout) as resp:
                    if resp.status_code != 200:
                        raise _status_error(resp, url)
                    _check_content_type(resp, url)
                    return _read_body(resp, url, self.cfg.max_bytes)
            except requests.RequestException as exc:
                raise _request_error(exc, url) from exc

    def _cache_get(self, url: str) -> bytes | None:
        path = cache_path(self.cfg.cache, url)
        try:
            return storage.read_bytes(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # the cache is an optimisation; a broken one must not fail the fetch
            log.warning("image cache read failed for %s: %s", path, exc)
            return None

    def _cache_put(self, url: str, data: bytes) -> None:
        path = cache_path(self.cfg.cache, url)
        try:
            storage.write_bytes(path, data)  # whole or not at all, so a reader never sees a partial image
        except Exception as exc:
            log.warning("image cache write failed for %s: %s", path, exc)
