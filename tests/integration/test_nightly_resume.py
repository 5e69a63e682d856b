"""``plantray nightly`` killed with SIGKILL at several points, then re-run with the same run id: every key
committed exactly once, and at most one chunk of work lost.

Each run is its own process in its own session (``start_new_session=True``). The runs submit to the test
session's Ray (``RAY_ADDRESS``), so a kill is a driver crash on a cluster that lives on; one case runs with
an embedded local Ray in a private temp dir instead, so killing the session kills the driver and its Ray
alike. The table is read with ``deltalake`` directly, independent of plantray's code.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from plantray.cli import main
from tests.helpers import jpeg_bytes, tiny_model, write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, COMMIT_EVERY, RUN = 6, 2, "night-1"
CHUNKS = -(-N // COMMIT_EVERY)  # ceil(6 / 2) = 3 chunks

# The subprocess: optionally dies (SIGKILL of its whole session) right before committing chunk KILL_CHUNK.
_SCRIPT = """
import os, signal, sys
from plantray.commands import nightly
kill_chunk = int(os.environ.get("KILL_BEFORE_COMMIT", "-1"))
def die(entry):
    if entry["chunk"] == kill_chunk:
        os.killpg(os.getpgrp(), signal.SIGKILL)
nightly._before_commit = die
from plantray.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model = str(root / "m")
    tiny_model(model, seed=0)
    # Images picked so that each of the 3 chunks holds 2 (every kill point exists whatever the tmp path).
    uris, per_chunk, i = [], collections.Counter(), 0
    while len(uris) < N:
        uri = str(root / "imgs" / f"{i}.jpg")
        chunk = _chunk_sizes([uri]).most_common(1)[0][0]
        if per_chunk[chunk] < COMMIT_EVERY:
            per_chunk[chunk] += 1
            uris.append(uri)
        i += 1
    for i, uri in enumerate(uris):
        write(uri, jpeg_bytes(40 + i, 36, seed=i))
    manifest = str(root / "in.parquet")
    pq.write_table(pa.table({"image_uri": uris}), manifest)
    return model, manifest, uris


def _chunk_sizes(uris: list[str]) -> collections.Counter:
    """Rows per chunk, recomputed here: BLAKE2b-64 (little endian) of the key modulo the chunk count."""
    return collections.Counter(int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little")
                               % CHUNKS for u in uris)


def _session_pids(sid: int, ray_tmp: str) -> list[int]:
    """Processes still alive that the run started: in session ``sid``, or naming its private Ray temp dir
    (in case a Ray process left the session)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
            except OSError:
                continue
            if fields[0] != "Z" and (int(fields[3]) == sid or ray_tmp in cmdline):
                pids.append(int(name))
    return pids


def _kill_session(sid: int, ray_tmp: str) -> None:
    """SIGKILLs every process of the run (by session id and by its Ray temp dir) until none is left."""
    for _ in range(50):
        pids = [p for p in _session_pids(sid, ray_tmp) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"processes of session {sid} survived SIGKILL: {_session_pids(sid, ray_tmp)}")


def _argv(model: str, manifest: str, table: str) -> list[str]:
    return ["nightly", "--model", model, "--input", manifest, "--table", table, "--run-id", RUN,
            "--commit-every", str(COMMIT_EVERY), "--decode-batch-size", "2"]


def _start(model: str, manifest: str, table: str, ray_tmp: str, address: str | None,
           kill_chunk: int = -1) -> subprocess.Popen:
    """Starts the run: on the Ray at ``address``, or (None) on an embedded Ray in ``ray_tmp``."""
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_TMPDIR": ray_tmp, "KILL_BEFORE_COMMIT": str(kill_chunk)}
    env.pop("RAY_ADDRESS", None)
    if address:
        env["RAY_ADDRESS"] = address
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, *_argv(model, manifest, table)], env=env, cwd=ROOT,
                            start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc: subprocess.Popen, ray_tmp: str, ready, timeout: float = 600) -> None:
    """Polls ``ready()`` until true, then SIGKILLs the run's whole session."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before the kill point:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            _kill_session(proc.pid, ray_tmp)
            raise AssertionError("kill point never reached")
        time.sleep(0.02)
    _kill_session(proc.pid, ray_tmp)
    proc.wait()


def _committed_rows(table: str) -> pa.Table | None:
    if not os.path.isdir(os.path.join(table, "_delta_log")):
        return None
    return DeltaTable(table).to_pyarrow_table()


def _uncommitted_rows(table: str) -> int:
    """Rows in the run's data files that no Delta commit references (a file cut short counts 0)."""
    base = os.path.join(table, "data", RUN)
    committed = set()
    if os.path.isdir(os.path.join(table, "_delta_log")):
        committed = {os.path.realpath(p) for p in DeltaTable(table).file_uris()}
    rows = 0
    for d, _, names in os.walk(base):
        for name in names:
            path = os.path.join(d, name)
            if name.endswith(".parquet") and os.path.realpath(path) not in committed:
                try:
                    rows += pq.ParquetFile(path).metadata.num_rows
                except (pa.ArrowInvalid, OSError):
                    pass
    return rows


def _chunk_files(table: str, chunk: int) -> bool:
    base = os.path.join(table, "data", RUN)
    if not os.path.isdir(base):
        return False
    dirs = [os.path.join(base, a, f"{chunk:06d}") for a in os.listdir(base)]
    return any(n.endswith(".parquet") for d in dirs if os.path.isdir(d) for n in os.listdir(d))


@pytest.mark.slow
# The driver killed on a running Ray at two points, and driver and its embedded Ray killed together at the
# third (a driver-only kill at that point proves nothing the other two do not: the table sees the same files).
@pytest.mark.parametrize("point", ["after_first_commit", "writing_second_chunk",
                                   "before_second_commit, embedded Ray"])
def test_kill_and_resume(setup, tmp_path, point, ray_address, capsys):
    model, manifest, uris = setup
    table = str(tmp_path / "table")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    address = None if point.endswith("embedded Ray") else ray_address
    if point.startswith("before_second_commit"):
        proc = _start(model, manifest, table, ray_tmp, address, kill_chunk=1)
        proc.wait(timeout=900)
        _kill_session(proc.pid, ray_tmp)  # the run killed its own session; make sure nothing is left
        assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    else:
        proc = _start(model, manifest, table, ray_tmp, address)
        if point == "after_first_commit":
            _wait_for(proc, ray_tmp, lambda: os.path.exists(os.path.join(table, "_delta_log", f"{1:020d}.json")))
        else:
            _wait_for(proc, ray_tmp, lambda: _chunk_files(table, 1))

    before = _committed_rows(table)
    committed = 0 if before is None else before.num_rows
    lost = _uncommitted_rows(table)  # classified and written by the killed run, in no commit
    assert not os.path.exists(os.path.join(table, "_runs", RUN, "_plantray_run.json"))

    # The same command again (here in the test's process, on the same Ray): it finishes the run.
    capsys.readouterr()
    assert main(_argv(model, manifest, table)) == 0, capsys.readouterr()

    rows = DeltaTable(table).to_pyarrow_table()
    keys = rows.column("image_uri").to_pylist()
    assert sorted(keys) == sorted(uris) and len(set(keys)) == len(keys)  # every key exactly once
    assert DeltaTable(table).transaction_version(RUN) == CHUNKS - 1  # chunks 0, 1, 2 each committed once
    summary = json.loads(open(os.path.join(table, "_runs", RUN, "_plantray_run.json")).read())["summary"]
    redone = summary["counts"]["new_this_attempt"]
    assert redone == N - committed  # the re-run classified only what was not committed
    sizes = _chunk_sizes(uris)
    assert committed >= sizes[0]  # every kill point lies after chunk 0's commit
    # Work lost = rows the killed run classified but did not commit: at most the chunk in flight (chunk 1).
    assert sizes == {0: 2, 1: 2, 2: 2}
    assert lost <= sizes[1], (lost, sizes)
    if point.startswith("before_second_commit"):  # killed with chunk 1 written in full: exactly that is lost
        assert lost == sizes[1], lost
    print(f"\nRESUME {point}: committed before kill {committed}/{N}, re-run classified {redone}, "
          f"chunk sizes {dict(sorted(sizes.items()))}, lost {lost}")

    # The completed run id is now a no-op.
    capsys.readouterr()
    assert main(_argv(model, manifest, table)) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out, out
