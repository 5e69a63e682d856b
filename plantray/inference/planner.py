"""Resource planning, in one place: how inference actors and training workers use the cluster.

The rules are pure functions of a :class:`Resources` value, so they are tested from resource dicts
without Ray; :meth:`Resources.of_cluster` reads the connected cluster. One rule runs through them all:
long-lived actors (model actors, training workers) never reserve a node's last CPU, because Ray Data's
listing, read, shuffle and write tasks ask for a whole CPU each and must always find one.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import ConfigError

GPU_BATCH, CPU_BATCH = 256, 16  # images (crops) per forward when --batch-size is not given
MAX_CPU_THREADS = 8  # torch intra-op threads stop paying off beyond this on one actor
MIN_RESERVATION = 0.25  # the smallest CPU share an actor or worker reserves
TRAIN_CPU_RESERVATION = 0.5  # a CPU training worker's default share: fits a 1-CPU node beside decode tasks


@dataclass(frozen=True)
class Resources:
    """What a cluster offers: total CPUs and GPUs, and the CPUs of each live node."""

    cpus: float
    gpus: float
    node_cpus: tuple[float, ...]

    @classmethod
    def of_cluster(cls) -> Resources:
        """The connected Ray cluster's resources."""
        import ray

        total = ray.cluster_resources()
        nodes = tuple(float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"])
        return cls(float(total.get("CPU", 0)), float(total.get("GPU", 0)), nodes or (0.0,))


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


def reservable(cpus: float) -> float:
    """CPUs that long-lived actors may reserve out of ``cpus``: all but one (see the module docstring)."""
    return max(0.0, cpus - 1.0)


def plan_inference(options, resources: Resources, crops: int = 1) -> Plan:
    """Sizes the model actor pool and batches from the resources and the options' overrides.

    On GPUs: one actor per GPU, large batches, CPUs left to decoding. On CPUs: actors of
    ``threads_per_actor`` torch threads (default: a node's CPUs, up to 8) that reserve half of those
    CPUs, so the CPU tasks feeding them always find room.

    Args:
        options: ``device``, ``precision``, ``num_actors``, ``threads_per_actor``, ``batch_size`` (images
            per forward, each with all its crops; None = the default for the device).
        resources: the cluster (:meth:`Resources.of_cluster`).
        crops: crops per image, so a default batch holds the same number of crops whatever the TTA.
    Raises:
        ConfigError: ``--device gpu`` on a cluster without GPUs.
    """
    if options.device == "gpu" and resources.gpus < 1:
        raise ConfigError("--device gpu but the Ray cluster has no GPUs; use --device cpu or add GPU nodes")
    use_gpu = resources.gpus >= 1 and options.device != "cpu"
    default_batch = GPU_BATCH if use_gpu else CPU_BATCH
    batch = options.batch_size or max(1, default_batch // crops)
    precision = options.precision  # "auto" is resolved by each model actor for its own device
    if use_gpu:
        actors = options.num_actors or int(resources.gpus)
        return Plan(True, actors, options.threads_per_actor, 1.0, 1.0, batch, precision)
    per_node = max(1, int(max(resources.node_cpus)))
    threads = options.threads_per_actor or min(per_node, MAX_CPU_THREADS)
    actors = options.num_actors or max(1, int(resources.cpus // threads))
    half = float(max(1, min(threads, per_node) // 2))
    smallest = min(c for c in resources.node_cpus if c > 0) if any(resources.node_cpus) else 0.0
    actor_cpus = max(MIN_RESERVATION, min(half, reservable(smallest), reservable(resources.cpus) / actors))
    return Plan(False, actors, threads, actor_cpus, 0.5, batch, precision)


def train_scaling(num_workers: int | tuple[int, int], use_gpu: bool,
                  cpus_per_worker: float | None) -> tuple[int | tuple[int, int], dict[str, float]]:
    """What training asks Ray Train for: the worker count and each worker's resources.

    Nothing here reads the cluster: Ray Train places the workers where it can, and on an autoscaling
    cluster its resource request makes the autoscaler add nodes. By default a GPU worker reserves one CPU
    and a CPU worker half of one: at most one CPU, so a 1-CPU node can host a worker, and never the
    node's last one, so Ray Data's decode tasks (a quarter CPU each) always find room beside it (two
    1-CPU workers on a 2-CPU node left none, and the stream waited for ever). Each worker picks its torch
    threads from what it got (:func:`plantray.training.loop.worker_threads`).

    Args:
        num_workers: a fixed count, or ``(min, max)`` for elastic training.
        use_gpu: one GPU per worker.
        cpus_per_worker: CPUs reserved per worker (None = 1 with a GPU, else :data:`TRAIN_CPU_RESERVATION`).
    Returns:
        (``num_workers`` for ``ScalingConfig``, resources per worker).
    Raises:
        ConfigError: a count below 1, min above max, or CPUs per worker not above 0.
    """
    low, high = num_workers if isinstance(num_workers, tuple) else (num_workers, num_workers)
    if low < 1 or high < low:
        raise ConfigError(f"workers {low}-{high}: need 1 <= --min-workers <= --max-workers "
                          "(or --num-workers >= 1)")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker {cpus_per_worker} must be > 0")
    resources = {"CPU": float(cpus_per_worker or (1.0 if use_gpu else TRAIN_CPU_RESERVATION))}
    if use_gpu:
        resources["GPU"] = 1.0
    return num_workers, resources
