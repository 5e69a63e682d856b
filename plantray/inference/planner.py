"""Resource planning: how inference and training use the cluster."""

from __future__ import annotations

from dataclasses import dataclass

import ray
import ray.train

from plantray.config import ConfigError


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
    from plantray.storage.http import FetchConfig

    return FetchConfig(timeout=cfg.http_timeout, per_host=cfg.http_per_host, cache=cfg.image_cache)


def scaling(cfg) -> tuple[ray.train.ScalingConfig, int]:
    """Workers, the CPUs each reserves, and its torch threads.

    On CPU clusters a quarter of the CPUs (at least one) stays unreserved for decoding, but each worker
    runs as many threads as its fair share of the CPUs: decode tasks use their CPUs only part of the
    time, and a worker held to its reservation leaves the rest idle (on 2 CPUs, 1 worker got 1 thread
    and 0.53x the training-step ceiling; see bench/train_throughput.py).
    """
    cpus, gpus = cluster_resources()
    if cfg.use_gpu and gpus < cfg.num_workers:
        raise ConfigError(f"--use-gpu with --num-workers {cfg.num_workers} but the cluster has {gpus:g} GPUs")
    # At least one whole CPU stays free: Ray Data's read tasks ask for one each.
    share = min(0.75 * cpus, cpus - 1) / cfg.num_workers
    per_worker = cfg.cpus_per_worker or (1.0 if cfg.use_gpu else max(0.25, share))
    threads = per_worker if cfg.cpus_per_worker or cfg.use_gpu else min(cpus / cfg.num_workers, _node_cpus())
    return (ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                    resources_per_worker={"CPU": per_worker}), max(1, int(threads)))


def _node_cpus() -> float:
    """CPUs of the largest live node: no worker runs more threads than one node has."""
    return max(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"])
