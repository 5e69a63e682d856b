"""Connecting to Ray: the same code on a laptop (an embedded local Ray) and on a cluster."""

from __future__ import annotations

import os

import ray


def ensure_ray(**init_kwargs) -> None:
    """Connects to (or starts) Ray once per process; quiet progress bars when not on a terminal."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False,
                 configure_logging=False, **init_kwargs)
    ctx = ray.data.DataContext.get_current()
    if os.environ.get("RAY_DATA_DISABLE_PROGRESS_BARS") == "1":
        ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
