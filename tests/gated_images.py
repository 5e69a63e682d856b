"""A real HTTP image server on 127.0.0.1 that holds most of its images back until the test says so.

Fault tests use it to kill a node while a run is provably mid-stream: the first ``free`` images are served at
once, every later request waits at a gate until :meth:`GatedImages.release` (or ``hold`` seconds), so the run
cannot finish before the fault, however fast the machine is, and :meth:`GatedImages.held` says when it is waiting.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import jpeg_bytes


class GatedImages(ThreadingHTTPServer):
    """Serves ``/img/NNNN.jpg`` (noise JPEGs of ``size``): the first ``free`` at once, the rest after the gate."""

    daemon_threads = True

    def __init__(self, n: int, free: int, hold: float, size: tuple[int, int] = (40, 36)):
        self.images = [jpeg_bytes(*size, seed=i) for i in range(n)]
        self.free, self.hold = free, hold
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0  # requests held at the gate right now
        super().__init__(("127.0.0.1", 0), _GateHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/img/{i:04d}.jpg"

    def urls(self) -> list[str]:
        return [self.url(i) for i in range(len(self.images))]

    def held(self) -> int:
        """How many requests wait at the gate now."""
        with self.lock:
            return self.waiting

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):  # a killed node's fetches close their sockets early
        pass


class _GateHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        server: GatedImages = self.server
        name = self.path.rsplit("/", 1)[-1]
        i = int(name.split(".")[0]) if name.endswith(".jpg") and name[:4].isdigit() else -1
        if not 0 <= i < len(server.images):
            self.send_error(404)
            return
        if i >= server.free:
            with server.lock:
                server.waiting += 1
            server.gate.wait(server.hold)
            with server.lock:
                server.waiting -= 1
        body = server.images[i]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
