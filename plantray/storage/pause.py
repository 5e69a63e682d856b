"""Seams for crash tests: a run announces a named point and waits there to be killed.

``PLANTRAY_PAUSE_AT=NAME`` (unset in every real run) names the point: ``staged:N`` and ``published:N`` in
classify's chunk commit, ``epoch:N`` after training epoch N's report. The announcement is the empty file
``_paused-<NAME>`` (``:`` as ``-``) in the run's output or checkpoint directory, so a test kills the run at
a known point instead of racing it.
"""

from __future__ import annotations

import os
import time

from plantray import storage

PAUSE_ENV = "PLANTRAY_PAUSE_AT"
WAIT_SECONDS = 60  # bounded, so a test that fails to kill the run does not leave it hanging


def requested_point() -> str | None:
    """The pause point this process's environment names (read on the driver: Ray workers get it passed)."""
    return os.environ.get(PAUSE_ENV) or None


def pause_point(name: str, uri: str, wanted: str | None = None) -> None:
    """Announces ``name`` under directory ``uri`` and waits, when it is the point asked for.

    Args:
        name: this point, e.g. ``staged:0``.
        uri: where the announcement goes.
        wanted: the point asked for; default: this process's ``PLANTRAY_PAUSE_AT``.
    """
    if (wanted if wanted is not None else requested_point()) != name:
        return
    storage.write_bytes(storage.join(uri, "_paused-" + name.replace(":", "-")), b"")
    time.sleep(WAIT_SECONDS)
