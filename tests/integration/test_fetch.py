"""HttpFetcher against a real ThreadingHTTPServer on 127.0.0.1: retries, limits, caps and the image cache."""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from plantray.images.presets import DEFAULT_MAX_BYTES
from plantray.storage.http import FetchConfig, FetchError, HttpFetcher, parse_retry_after


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 120, 30)).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg()


class _State:
    """What the server saw: per-path request times, headers, and the peak number in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {}
        self.user_agents: list[str] = []
        self.in_flight = 0
        self.peak = 0
        self.rate_limited: list[int] = []  # /ratelimited: the status of each request, in the order they came
        self.not_before: float | None = None  # /ratelimited: when its last Retry-After lets a client back in

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.times.get(path, []))


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, code: int, body: bytes = b"", ctype: str = "image/jpeg", headers=(), length=True):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            if length:
                self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            with state.lock:
                seen = state.times.setdefault(self.path, [])
                seen.append(time.monotonic())
                n = len(seen)
                state.user_agents.append(self.headers.get("User-Agent", ""))
                state.in_flight += 1
                state.peak = max(state.peak, state.in_flight)
            try:
                self.route(n)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def route(self, n: int) -> None:
            p = self.path
            if p == "/img.jpg":
                self._send(200, JPEG)
            elif p == "/missing":
                self._send(404, b"nope", "text/plain")
            elif p == "/flaky":
                self._send(500, b"", "text/plain") if n == 1 else self._send(200, JPEG)
            elif p == "/ratelimited":  # a rate limiter: 429 for every request before its Retry-After has passed
                with state.lock:
                    allowed = state.not_before is not None and time.monotonic() >= state.not_before
                    if not allowed:
                        state.not_before = time.monotonic() + 1
                    state.rate_limited.append(200 if allowed else 429)
                if allowed:
                    self._send(200, JPEG)
                else:
                    self._send(429, b"", "text/plain", headers=[("Retry-After", "1")])
            elif p == "/down":
                self._send(500, b"", "text/plain")
            elif p == "/slow":
                time.sleep(2)
                self._send(200, JPEG)
            elif p == "/stall":  # headers and a little body, then nothing
                self._send(200, b"", headers=[("Content-Length", "5000")], length=False)
                self.wfile.write(JPEG[:10])
                self.wfile.flush()
                time.sleep(2)
            elif p == "/page.html":
                self._send(200, b"<html>hi</html>", "text/html; charset=utf-8")
            elif p == "/empty":
                self._send(200, b"")
            elif p == "/big":
                self._send(200, b"x" * 10_000)
            elif p == "/big-nolength":  # HTTP/1.0 close-delimited body: only streaming can catch it
                self._send(200, b"x" * 10_000, length=False)
            elif p == "/redirect":
                self._send(302, b"", "text/plain", headers=[("Location", "/img.jpg")])
            elif p == "/loop":
                self._send(302, b"", "text/plain", headers=[("Location", "/loop")])
            elif p.startswith("/hold"):
                time.sleep(0.3)
                self._send(200, JPEG)
            else:
                self._send(404, b"", "text/plain")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients that time out close sockets early
        pass


@pytest.fixture
def server():
    """(base URL, state) of a fresh threaded HTTP server on 127.0.0.1."""
    state = _State()
    srv = _QuietServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", state
    srv.shutdown()
    srv.server_close()


def _fetcher(**kw) -> HttpFetcher:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("timeout", 5.0)
    return HttpFetcher(FetchConfig(**kw))


def _reason(fetcher: HttpFetcher, url: str) -> str:
    with pytest.raises(FetchError) as info:
        fetcher.fetch(url)
    return info.value.reason


def _fetch_all(fetcher: HttpFetcher, urls: list[str], threads: int) -> list:
    """Drives ``fetcher.fetch`` from a thread pool as a batch stage does: bytes or the FetchError, in order."""
    def one(url: str):
        try:
            return fetcher.fetch(url)
        except FetchError as err:
            return err

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, urls))


def test_jpeg_bytes_and_user_agent(server):
    base, state = server
    assert _fetcher().fetch(base + "/img.jpg") == JPEG
    assert "plantray" in state.user_agents[0]


def test_404_is_not_retried(server):
    base, state = server
    assert _reason(_fetcher(retries=3), base + "/missing") == "http 404"
    assert state.count("/missing") == 1


def test_500_then_200_succeeds_after_one_retry(server):
    base, state = server
    assert _fetcher(retries=3).fetch(base + "/flaky") == JPEG
    assert state.count("/flaky") == 2


def test_429_honours_retry_after(server):
    base, state = server
    assert _fetcher(retries=2, backoff=0.01).fetch(base + "/ratelimited") == JPEG
    # One retry, and it came when the server's Retry-After allowed it: a client that retried on its own
    # 0.01 s backoff would have met 429 again (and, out of retries, failed).
    assert state.rate_limited == [429, 200]


def test_always_500_gives_up_after_retries(server):
    base, state = server
    assert _reason(_fetcher(retries=2), base + "/down") == "http 500"
    assert state.count("/down") == 3


@pytest.mark.parametrize("path", ["/slow", "/stall"])
def test_timeout(server, path):
    base, _ = server
    assert _reason(_fetcher(timeout=0.5, retries=0), base + path) == "timeout"


def test_html_is_not_an_image(server):
    base, state = server
    assert _reason(_fetcher(), base + "/page.html") == "not an image"
    assert state.count("/page.html") == 1


@pytest.mark.parametrize("path", ["/big", "/big-nolength"])
def test_too_large(server, path):
    base, _ = server
    assert _reason(_fetcher(max_bytes=1000), base + path) == "file too large"


def test_body_at_the_cap_passes(server):
    base, _ = server
    assert _fetcher(max_bytes=10_000).fetch(base + "/big") == b"x" * 10_000


def test_empty_body_is_an_empty_file(server):
    base, _ = server
    assert _reason(_fetcher(), base + "/empty") == "empty file"


def test_default_cap_is_the_one_byte_cap():
    # The same 64 MiB as local and object-store reads, so one --max-bytes governs every source.
    assert FetchConfig().max_bytes == DEFAULT_MAX_BYTES == 64 * 1024**2


def test_redirects_followed_and_bounded(server):
    base, state = server
    assert _fetcher().fetch(base + "/redirect") == JPEG
    assert state.count("/img.jpg") == 1
    assert _reason(_fetcher(), base + "/loop") == "too many redirects"


def test_connection_refused(server):
    srv = _QuietServer(("127.0.0.1", 0), _handler(_State()))
    port = srv.server_address[1]
    srv.server_close()  # nothing listens there now
    assert _reason(_fetcher(retries=1), f"http://127.0.0.1:{port}/img.jpg") == "connection error"


def test_per_host_cap(server):
    base, state = server
    fetcher = _fetcher(per_host=2)
    urls = [f"{base}/hold/{i}" for i in range(6)]
    results = _fetch_all(fetcher, urls, threads=6)
    assert results == [JPEG] * 6
    assert state.peak == 2  # reached, never exceeded


def test_threaded_fetches_keep_order_and_errors(server):
    base, _ = server
    results = _fetch_all(_fetcher(retries=0), [base + "/img.jpg", base + "/missing", base + "/page.html"], 3)
    assert results[0] == JPEG
    assert [r.reason for r in results[1:]] == ["http 404", "not an image"]
    assert _fetch_all(_fetcher(), [], 4) == []


def test_pickled_fetcher_still_works(server):
    base, _ = server
    fetcher = _fetcher()
    fetcher.fetch(base + "/img.jpg")  # session now exists; pickling must drop it
    clone = pickle.loads(pickle.dumps(fetcher))
    assert clone.fetch(base + "/img.jpg") == JPEG
    err = pickle.loads(pickle.dumps(FetchError("http 404", "u")))
    assert err.reason == "http 404"


def test_local_cache(server, tmp_path):
    base, state = server
    url = base + "/img.jpg"
    fetcher = _fetcher(cache=str(tmp_path / "cache"))
    assert fetcher.fetch(url) == fetcher.fetch(url) == JPEG
    assert state.count("/img.jpg") == 1
    digest = hashlib.sha256(url.encode()).hexdigest()
    assert (tmp_path / "cache" / digest[:2] / digest).read_bytes() == JPEG
    assert [p.name for p in (tmp_path / "cache" / digest[:2]).iterdir()] == [digest]  # no tmp left over


def test_failures_are_not_cached(server, tmp_path):
    base, state = server
    fetcher = _fetcher(cache=str(tmp_path / "cache"), retries=0)
    for _ in range(2):
        assert _reason(fetcher, base + "/missing") == "http 404"
    assert state.count("/missing") == 2


def test_s3_cache(server, s3):
    base, state = server
    url = base + "/img.jpg"
    prefix = f"s3://plantray-test/cache-{uuid.uuid4().hex}"
    assert _fetcher(cache=prefix).fetch(url) == JPEG
    assert _fetcher(cache=prefix).fetch(url) == JPEG  # a fresh fetcher: the hit comes from S3
    assert state.count("/img.jpg") == 1
    digest = hashlib.sha256(url.encode()).hexdigest()
    assert s3.cat_file(f"{prefix}/{digest[:2]}/{digest}") == JPEG


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("field,value", [("timeout", 0), ("retries", -1), ("per_host", 0), ("max_bytes", 0)])
def test_bad_config_fails_loudly(field, value):
    with pytest.raises(ValueError, match=field):
        FetchConfig(**{field: value})
