"""The console as a user sees it: plantray's own lines, a progress line per long stage, the summary, and no
Ray-internal line; Ray's logs in a file the run record names; -q keeps only the summary."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from tests.helpers import jpeg_bytes, tiny_model, write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What a log record looks like (Ray's "2026-01-01 12:00:00,123\tINFO file.py:12 -- ...", its C++ core's
# "[2026-01-01 12:00:00,123 E 123 123] core_worker.cc:...", Python's "WARNING name: ...").
LOG_LINE = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\b(INFO|WARNING|DEBUG)\b|\.(py|cc):\d+")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny model and a manifest of 6 images, 1 of them broken."""
    root = tmp_path_factory.mktemp("console")
    tiny_model(str(root / "m"))
    for i in range(5):
        write(str(root / "img" / f"{i}.jpg"), jpeg_bytes(seed=i))
    write(str(root / "img" / "broken.jpg"), b"not an image")
    (root / "in.csv").write_text("image_uri\n" + "".join(f"img/{i}.jpg\n" for i in range(5)) + "img/broken.jpg\n")
    return root


def _classify_cmd(job, out: str, *flags: str, address: str | None = None) -> tuple[list[str], dict]:
    env = {**os.environ, "PYTHONPATH": ROOT, "PLANTRAY_PROGRESS_INTERVAL": "0.5"}
    env.pop("RAY_DATA_DISABLE_PROGRESS_BARS", None)
    env.pop("RAY_ADDRESS", None)
    if address:
        env["RAY_ADDRESS"] = address
    return [sys.executable, "-m", "plantray", *flags, "classify", "--model", str(job / "m"), "--input",
            str(job / "in.csv"), "--output", out, "--num-actors", "1"], env


def classify(job, out: str, *flags: str, address: str | None = None) -> subprocess.CompletedProcess:
    """``plantray classify`` in its own process, stdout a pipe (as under CI or ``ray job submit``), starting its
    own local Ray or (``address``) joining a running one."""
    cmd, env = _classify_cmd(job, out, *flags, address=address)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def classify_on_a_terminal(job, out: str, address: str) -> tuple[int, bytes]:
    """``plantray classify`` with stdout and stderr a pseudo-terminal, as a person at a shell sees it: the exit
    status and every byte written to the terminal, up to the process's exit."""
    cmd, env = _classify_cmd(job, out, address=address)
    main, side = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=side, stderr=side, env=env)
    os.close(side)
    seen, deadline = bytearray(), time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not chunk:
                    break
                seen += chunk
        return proc.wait(timeout=60), bytes(seen)
    finally:
        proc.kill()
        os.close(main)


@pytest.mark.slow
def test_the_console_is_plantrays_and_ray_logs_go_to_a_file(job, tmp_path):
    out = str(tmp_path / "preds")
    done = classify(job, out)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("classifying ") and out in lines[0]
    assert not [x for x in lines + done.stderr.splitlines() if LOG_LINE.search(x)], done.stdout + done.stderr
    progress = [x for x in lines if x.startswith("  classifying: ")]
    assert progress and "6/6 images (100%)" in progress[-1] and "1 failed" in progress[-1], lines
    assert lines[-2].startswith("classified 5/6 images")  # the summary, then the failure by reason
    assert done.stderr == ""
    record = json.loads(open(os.path.join(out, "_plantray_run.json")).read())
    log = open(record["log"]).read()
    assert record["log"] == os.path.join(out, "_plantray.log")
    assert "ray" in log.lower() and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", log)  # the records are there
    assert record["ray_logs"].endswith("/logs")


@pytest.mark.slow
def test_quiet_prints_only_the_summary(job, tmp_path, ray_address):
    done = classify(job, str(tmp_path / "preds"), "-q", address=ray_address)  # joining the session's Ray
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("classified 5/6 images") and done.stderr == ""


@pytest.mark.slow
def test_a_terminal_gets_nothing_after_the_last_line(job, tmp_path, ray_address):
    # Ray's CLI logger calls colorama's init on import, which writes ESC[0m to a terminal at exit: after
    # plantray's last line it showed as a stray "^[[0m" (in logs of a terminal session, or `script`).
    status, seen = classify_on_a_terminal(job, str(tmp_path / "preds"), ray_address)
    assert status == 0, seen[-3000:].decode(errors="replace")
    last = seen.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    assert b"\x1b" not in last and last.rstrip().endswith(b"not an image"), seen[-600:]
