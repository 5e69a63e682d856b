"""Crash harness: run a plantray command as a process tree of its own, SIGKILL the whole tree when a
condition holds, and make sure nothing of it is left running.

The command runs in a new session (``start_new_session=True``). Submitted to a running Ray (``RAY_ADDRESS``,
the test session's), its process group is the driver alone: ``os.killpg(pgid, SIGKILL)`` is a driver crash
on a cluster that lives on (what a lost head pod or an OOM-killed ``ray job submit`` entrypoint leaves).
With its own embedded Ray, the group also holds the local Ray it starts (raylet, GCS, workers inherit the
group): the kill is a crash of driver and Ray alike, a laptop losing power. No clean-up handler runs either way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Outcome:
    """How a crash run ended: ``killed`` (the condition held and the tree was killed) or the exit code."""

    killed: bool
    returncode: int | None
    seconds: float
    log: str


def plantray_env(address: str | None = None, **extra: str) -> dict:
    """The environment of a plantray subprocess: this checkout's package, quiet Ray, plus ``extra``.

    Args:
        address: a running Ray to submit to (``RAY_ADDRESS``, as a user does with a cluster), typically the
            test session's (the ``ray_address`` fixture); None: the command starts its own embedded Ray.
    """
    env = dict(os.environ, PYTHONPATH=ROOT, RAY_DATA_DISABLE_PROGRESS_BARS="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", TQDM_DISABLE="1")
    env.pop("RAY_ADDRESS", None)
    if address:
        env["RAY_ADDRESS"] = address
    env.update(extra)
    return env


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``, from /proc (Linux).

    Zombies are left out: a killed process whose parent has not reaped it yet runs nothing.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int, timeout: float = 30.0) -> None:
    """SIGKILLs every process of group ``pgid`` and waits until none is left.

    Raises:
        AssertionError: processes of the group are still there after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"process group {pgid} still alive {timeout} s after SIGKILL")
        time.sleep(0.05)


def run_until(argv: list[str], condition: Callable[[], bool] | None, timeout: float, log_path: str,
              env: dict | None = None, poll: float = 0.05) -> Outcome:
    """Runs ``python -m plantray ARGV``; kills its whole tree as soon as ``condition()`` holds.

    The tree is the driver and, for a command that started its own embedded Ray, that Ray; a command
    connected to a running Ray (``RAY_ADDRESS``) loses only its driver, as a crashed driver on a cluster does.

    Args:
        argv: the plantray arguments.
        condition: polled every ``poll`` seconds; None runs to the end.
        timeout: seconds before the run is killed and the test fails.
        log_path: where stdout and stderr go.
        env: the environment (default :func:`plantray_env`).
    Returns:
        The outcome; the process group is gone when this returns.
    Raises:
        AssertionError: the run outlived ``timeout``, or its group survived the kill.
    """
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "plantray", *argv], cwd=ROOT, env=env or plantray_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = proc.pid  # a new session's leader: its pid is the group id
    killed = False
    try:
        while proc.poll() is None:
            if condition is not None and condition():
                kill_group(pgid)
                killed = True
                break
            if time.monotonic() - start > timeout:
                raise AssertionError(f"plantray {' '.join(argv)} still running after {timeout} s; log {log_path}")
            time.sleep(poll)
    finally:
        kill_group(pgid)  # whatever happened, nothing of the run outlives it (Ray left behind by a clean exit too)
        proc.wait(timeout=30)
    with open(log_path) as f:
        text = f.read()
    return Outcome(killed, None if killed else proc.returncode, time.monotonic() - start, text)


def file_appears(path: str) -> Callable[[], bool]:
    """Condition: ``path`` exists."""
    return lambda: os.path.exists(path)
