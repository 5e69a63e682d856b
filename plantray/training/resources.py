"""A bounded wait for training's workers: fail with what was asked for and what the cluster has.

Ray Train V2 waits for its workers without end: a fixed-size run retries its placement group every
``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` seconds (60 by default) and an elastic run waits until
``min_workers`` fit. On an autoscaling cluster that wait is how nodes arrive, so it is right to wait,
but not forever: :class:`ResourceWait` runs inside the Train controller and stops the run when no
worker group has been running for ``timeout`` seconds (at start, or after a node was lost).
"""

from __future__ import annotations

import contextlib
import os
import time

import ray
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2._internal.execution.controller.state import (
    InitializingState,
    ReschedulingState,
    RestartingState,
    RunningState,
    SchedulingState,
)

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train's own placement-group wait
WAITING = (InitializingState, SchedulingState, ReschedulingState, RestartingState)


class ResourcesUnavailable(RuntimeError):
    """Training's workers could not be placed within ``--resource-timeout`` seconds."""


def describe(resources: dict) -> str:
    """``{"CPU": 2.0, "GPU": 0.0}`` -> ``CPU 2, GPU 0`` (memory and node-id entries left out)."""
    keys = [k for k in ("CPU", "GPU") if k in resources] or ["CPU"]
    extra = sorted(k for k in resources if k not in ("CPU", "GPU", "memory", "object_store_memory")
                   and not k.startswith(("node:", "accelerator_type")))
    return ", ".join(f"{k} {resources.get(k, 0):g}" for k in keys + extra)


def cluster_now() -> str:
    """What the connected cluster offers right now: totals, free, and live nodes."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    return (f"the cluster has {describe(ray.cluster_resources())} in total "
            f"({describe(ray.available_resources())} free) on {len(nodes)} node(s)")


class ResourceWait(ControllerCallback):
    """Controller callback: raises :class:`ResourcesUnavailable` after ``timeout`` s without running workers.

    Args:
        timeout: seconds without a running worker group before the run fails.
        asked: what the run asked for, for the message (e.g. ``1-4 worker(s) of CPU 1 each``).
    """

    def __init__(self, timeout: float, asked: str):
        self.timeout, self.asked = timeout, asked
        self.since: float | None = None

    def after_controller_state_update(self, previous_state, current_state) -> None:
        if isinstance(current_state, RunningState):
            self.since = None
            return
        if not isinstance(current_state, WAITING):
            return
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        if now - self.since > self.timeout:
            raise ResourcesUnavailable(
                f"training could not place its workers within --resource-timeout {self.timeout:g} s: it asked for "
                f"{self.asked}; {cluster_now()}. Add nodes (or let the autoscaler add them), lower "
                "--num-workers/--min-workers or --cpus-per-worker, or raise --resource-timeout")


@contextlib.contextmanager
def start_timeout(seconds: float):
    """Makes Ray Train retry a placement group every ``seconds`` (at most its 60 s default) during the block.

    :class:`ResourceWait` looks at the time between the controller's state changes, so a shorter
    placement-group wait keeps the bound close to ``--resource-timeout``. A value the user set stands.
    """
    if START_TIMEOUT_ENV in os.environ:
        yield
        return
    os.environ[START_TIMEOUT_ENV] = f"{max(5.0, min(60.0, seconds)):g}"
    try:
        yield
    finally:
        os.environ.pop(START_TIMEOUT_ENV, None)
