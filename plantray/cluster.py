"""Connecting to Ray: the same code on a laptop (an embedded local Ray) and on a cluster."""

from __future__ import annotations

import os

import ray


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
        ray.init(address=address, log_to_driver=False, configure_logging=False, **init_kwargs)
    ctx = ray.data.DataContext.get_current()
    if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1":
        ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
