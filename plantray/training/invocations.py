"""The wall time of a training run across every invocation that worked on it.

A run (``--storage/--name``) may take several invocations: one killed half-way, the next resuming from
its checkpoint. Each invocation keeps its own entry in ``<run dir>/_plantray_invocations.json``, rewritten
every few seconds by a background thread, so a SIGKILLed invocation still leaves its time there (up to
one beat short). The model card's ``duration_seconds`` is the sum of all entries.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

from plantray import storage

log = logging.getLogger(__name__)
LEDGER = "_plantray_invocations.json"
BEAT_SECONDS = 2.0  # how much of a killed invocation's time can go unrecorded


def read_ledger(run_dir: str) -> list[dict]:
    """The invocations recorded for a run (empty when none)."""
    uri = storage.join(run_dir, LEDGER)
    if not storage.exists(uri):
        return []
    try:
        return json.loads(storage.read_bytes(uri))["invocations"]
    except (ValueError, KeyError) as e:  # edited by hand or by another tool: lose the time, not the run
        log.warning("ignoring unreadable %s (%s)", uri, e)
        return []


class InvocationClock:
    """Times this invocation and records it beside the earlier ones, every ``beat`` seconds.

    Usage: ``with InvocationClock(run_dir) as clock: ...; total = clock.total()``.
    """

    def __init__(self, run_dir: str, beat: float = BEAT_SECONDS):
        self.uri = storage.join(run_dir, LEDGER)
        self.earlier = read_ledger(run_dir)
        self.entry = {"id": uuid.uuid4().hex[:12], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "seconds": 0.0, "finished": False}
        self.beat, self._start = beat, time.perf_counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="invocation-clock")

    def __enter__(self) -> InvocationClock:
        self.record()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.record(finished=exc[0] is None)

    def elapsed(self) -> float:
        """Seconds of this invocation so far."""
        return time.perf_counter() - self._start

    def total(self) -> float:
        """Seconds of every invocation of the run, this one up to now included."""
        return sum(e["seconds"] for e in self.earlier) + self.elapsed()

    def invocations(self) -> int:
        """How many invocations worked on the run, this one included."""
        return len(self.earlier) + 1

    def record(self, finished: bool = False) -> None:
        """Writes the ledger with this invocation's time so far."""
        with self._lock:
            self.entry.update(seconds=round(self.elapsed(), 3), finished=finished)
            body = json.dumps({"invocations": [*self.earlier, self.entry]}, indent=1).encode()
            try:
                storage.write_bytes(self.uri, body)
            except OSError as e:  # a slow or failing store costs the duration's accuracy, never the run
                log.warning("could not record the run's time in %s: %s", self.uri, e)

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self.record()
