"""Connecting to Ray: the same code on a laptop (an embedded local Ray) and on a cluster; what the cluster can
add (the autoscaler's node types) and waiting, for a bounded time, until it grants a job's resources; counting
a job's progress as its actors work, for the console's progress line."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import ray

from plantray import console
from plantray.config import ConfigError

TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # read by Ray Train's controller (ray.train.v2 constants)
LOCAL_TRAIN_POLL_SECONDS = "0.5"


def ensure_ray(dashboard: bool = False, **init_kwargs) -> None:
    """Joins the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it) or starts a local Ray.

    Args:
        dashboard: start the embedded local Ray with its dashboard. Off by default: its processes took
            7-10% of a core during classify runs on a 2-core machine. A cluster's own settings stand.
        init_kwargs: passed to ``ray.init`` when a local Ray is started (tests, benchmarks).
    """
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = os.environ.get("RAY_ADDRESS") or None
        if address is None:  # options of a new local instance; a cluster refuses them
            init_kwargs.setdefault("include_dashboard", dashboard)
            # Ray Train's controller polls its workers every 2 s and each epoch's report waits for a poll:
            # on a laptop's short epochs (quickstart) that was ~2 s an epoch. A cluster keeps its own setting.
            os.environ.setdefault(TRAIN_POLL_ENV, LOCAL_TRAIN_POLL_SECONDS)
        console.say(f"joining the Ray cluster at {address}" if address else "starting a local Ray")
        ray.init(address=address, log_to_driver=False, configure_logging=False, **init_kwargs)
    ctx = ray.data.DataContext.get_current()
    # plantray draws its own progress line (:func:`counting`); Ray's, by operator name, only with -v.
    if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1" or console.level() != console.VERBOSE:
        ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    console.route_ray_logs()  # ray.data set up its console handler on import: its records go to the log


def started_here() -> bool:
    """Whether this process started the Ray it is connected to (an embedded local Ray: its size is fixed),
    rather than joining a cluster or a ``ray start`` instance."""
    node = getattr(ray._private.worker, "_global_node", None)  # Ray 2.58: the driver's node, head when started
    return ray.is_initialized() and node is not None and node.is_head()


class ResourceTimeout(ConfigError):
    """The cluster did not grant what a job asked for within ``--resource-timeout`` seconds."""


def autoscaler_node_types() -> list[tuple[str, float, float, int]] | None:
    """The node types the connected cluster's autoscaler can add: ``(name, CPUs, GPUs, max count)``.

    Returns:
        The types from the cluster config the autoscaler publishes in the GCS (Ray's autoscaler v2,
        KubeRay); None where an autoscaler runs without publishing it (Ray's v1 autoscaler, which
        ``ray up`` starts: it only leaves its status report); ``[]`` where no autoscaler runs.
    """
    import ray._private.state
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    config = ray._private.state.state.get_cluster_config()
    if config is not None and config.node_group_configs:
        return [(g.name, float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), int(g.max_count))
                for g in config.node_group_configs]
    return None if _internal_kv_get(DEBUG_AUTOSCALING_STATUS) else []


def wait_for_resources(bundles: list[dict[str, float]], asked: str, cluster: Callable[[], str],
                       timeout_s: float) -> float:
    """Blocks until the cluster can hold ``bundles`` at once, so that a job never hangs on a request.

    A placement group of the bundles is a resource demand the autoscaler sees (it adds nodes for it);
    once it is placed it is removed again and the job's own tasks and actors take its place.

    Args:
        bundles: resource dicts (``{"CPU": 1, "GPU": 1}``), e.g. :meth:`Plan.bundles`.
        asked: the request in words, for the message.
        cluster: what the cluster has and can add, in words, for the message (read when it is needed).
        timeout_s: seconds to wait; <= 0 waits without limit.
    Returns:
        The seconds waited.
    Raises:
        ResourceTimeout: not placed within ``timeout_s``; names ``asked`` and ``cluster``.
    """
    import time

    from ray.util.placement_group import placement_group, remove_placement_group

    start = time.monotonic()
    group = placement_group(bundles, strategy="PACK", name="plantray-resource-check")
    try:
        if not group.wait(timeout_seconds=timeout_s if timeout_s > 0 else 10**9):
            raise ResourceTimeout(
                f"the cluster could not provide {asked} within --resource-timeout {timeout_s:g} s; "
                f"it has {cluster()}. Add nodes of that shape (or raise max_workers), lower --num-actors / "
                f"--threads-per-actor, or use --device cpu")
    finally:
        remove_placement_group(group)
    return time.monotonic() - start


@ray.remote(num_cpus=0)
class ProgressCounter:
    """Rows done and failed so far, added to by a job's actors (model actors, training workers)."""

    def __init__(self):
        self.done, self.failed, self.note = 0, 0, ""

    def add(self, done: int, failed: int = 0, note: str | None = None) -> None:
        self.done += done
        self.failed += failed
        self.note = self.note if note is None else note

    def read(self) -> tuple[int, int, str]:
        return self.done, self.failed, self.note


@contextlib.contextmanager
def counting(progress: console.Progress, every_s: float = 0.5) -> Iterator[ray.actor.ActorHandle]:
    """A :class:`ProgressCounter` whose counts a driver thread shows on ``progress`` while the block runs.

    Workers call ``counter.add.remote(rows, failed)`` as they finish batches: the counts travel, never the
    rows, so the driver collects nothing. The counter lives on the driver's node (CPU 0), so losing another
    node never takes it; a worker whose ``add`` fails carries on.

    Args:
        progress: the console's progress line; its counts at the start are the base added to.
        every_s: seconds between two reads of the counter.
    Yields:
        The counter's actor handle, to pass to the workers.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    counter = ProgressCounter.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()
    base_done, base_failed = progress.done, progress.failed
    stop = threading.Event()

    def show() -> None:
        done, failed, note = ray.get(counter.read.remote())
        progress.update(base_done + done, base_failed + failed, note or None)

    def poll() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # the counter went away with a failed job
                show()

    thread = threading.Thread(target=poll, daemon=True, name="plantray-progress")
    thread.start()
    try:
        yield counter
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            show()
            ray.kill(counter)
