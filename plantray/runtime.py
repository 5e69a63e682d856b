"""Ray connection and resource planning: the same code on a laptop (embedded Ray) and a cluster.

``ensure_ray`` joins the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``) or a running
local one, and otherwise starts Ray in-process. ``plan_inference`` sizes the actor pool and batches
from what the cluster has, so flags are only needed to override.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

from plantray.config import ConfigError

log = logging.getLogger(__name__)

PRECISION_HELP = ("auto = bf16 where the device computes it natively (GPUs; CPUs with AVX512-BF16 or AMX), "
                  "else fp32; bench/precision.py measures speed and Top-1 agreement")


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


@dataclass
class Plan:
    """How an inference pipeline uses the cluster."""

    use_gpu: bool
    actors: int
    threads: int | None
    actor_cpus: float
    decode_cpus: float
    batch_size: int
    precision: str


def cluster_resources() -> tuple[float, float]:
    """Total (CPUs, GPUs) of the connected cluster."""
    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))


def plan_inference(cfg) -> Plan:
    """Sizes the model actor pool from cluster resources and the config's overrides.

    On GPUs: one actor per GPU, large batches, CPUs left to decoding. On CPUs: actors of
    ``threads_per_actor`` torch threads (default: a node's CPUs, up to 8) that reserve half of
    those CPUs, so the CPU tasks feeding them always find room.

    Raises:
        ConfigError: ``--device gpu`` on a cluster without GPUs.
    """
    cpus, gpus = cluster_resources()
    if cfg.device == "gpu" and gpus < 1:
        raise ConfigError("--device gpu but the Ray cluster has no GPUs; use --device cpu or add GPU nodes")
    use_gpu = gpus >= 1 and cfg.device != "cpu"
    precision = cfg.precision  # "auto" is resolved by each model actor for its own device
    if use_gpu:
        actors = cfg.num_actors or int(gpus)
        return Plan(True, actors, cfg.threads_per_actor, 1.0, 1.0, cfg.batch_size or 256, precision)
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
    per_node, smallest = max(1, int(max(node_cpus))), min(node_cpus)
    threads = cfg.threads_per_actor or min(per_node, 8)
    actors = cfg.num_actors or max(1, int(cpus // threads))
    # An actor reserves half its threads' CPUs, and never a node's last CPU: Ray Data's listing, read,
    # shuffle and write tasks ask for a whole CPU each and must always find one, or the pipeline starves.
    actor_cpus = max(0.25, min(float(max(1, min(threads, per_node) // 2)), smallest - 1))
    return Plan(False, actors, threads, actor_cpus, 0.5, cfg.batch_size or 16, precision)


def fetch_config(cfg):
    """HTTP fetch settings from a classify-like config."""
    from plantray.fetch import FetchConfig

    return FetchConfig(timeout=cfg.http_timeout, per_host=cfg.http_per_host, cache=cfg.image_cache)


def aggregate(cfg) -> dict:
    """Writes the per-occurrence table next to OUTPUT (``<output>_occurrences``)."""
    from plantray.darwincore import aggregate_occurrences

    return aggregate_occurrences(cfg.output, cfg.output.rstrip("/") + "_occurrences", top_k=cfg.top_k)
