"""Resource planning, in one place: how inference actors and training workers use the cluster.

The rules are pure functions of a :class:`Resources` value, so they are tested from resource dicts
without Ray; :meth:`Resources.of_cluster` reads the connected cluster: the nodes up now and, where the
autoscaler publishes them, the node types it can add.

Inference is sized from the flags and from what the cluster can become, never from what happens to be up
when the job starts (a cold autoscaling cluster has no CPUs at all then). The model runs in an autoscaling
actor pool (``ActorPoolStrategy(min_size, max_size)``): ``min_actors`` actors are asked for at once, and a
request no live node can grant is what makes Ray's autoscaler add a node; Ray Data grows the pool towards
``max_actors`` as the cluster's CPUs and GPUs allow. ``max_actors`` is None (no bound but the cluster's)
where the cluster can grow without a known limit.

The rule that keeps every stage schedulable on every node shape: **every request is whole CPUs**. Model
actors ask for 1 or more whole CPUs (and 1 GPU on GPUs), decode tasks for 1 CPU (so Ray Data fuses them
with its read tasks, which ask for 1 CPU too). A node's free CPUs are then always whole, so a task that
needs one CPU runs as soon as any CPU is free; with fractional actors, two 1-CPU nodes each kept 0.75 CPU
free and Ray Data's 1-CPU read task waited forever. How many actors run beside the tasks is Ray Data's
resource manager's call (it reserves resources for every operator); the planner only caps the pool on a
cluster that cannot grow, so that the actors there leave one CPU unreserved. The one shape where a whole
CPU cannot be spared, a cluster that can never have more than 1 CPU, gets an actor that reserves none
(it shares the CPU with the tasks, which then always find it free).

A job that cannot get its ``min_actors`` (plus one CPU for Ray Data's tasks) within ``--resource-timeout``
seconds fails with :class:`plantray.cluster.ResourceTimeout`, naming the request and the cluster
(:meth:`Plan.bundles`, :meth:`Plan.describe`, :meth:`Resources.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import ConfigError

GPU_BATCH, CPU_BATCH = 256, 16  # images (crops) per forward when --batch-size is not given
MAX_CPU_THREADS = 8  # torch intra-op threads stop paying off beyond this on one actor
MIN_RESERVATION = 0.25  # the smallest CPU share a training worker reserves
TRAIN_CPU_RESERVATION = 0.5  # a CPU training worker's default share: fits a 1-CPU node beside decode tasks
TASK_CPUS = 1.0  # what each of Ray Data's read/decode/write tasks asks for (see the module docstring)


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler can add: its resources and how many of it (-1: no limit)."""

    name: str
    cpus: float
    gpus: float
    max_count: int


@dataclass(frozen=True)
class Resources:
    """What a cluster offers now (total CPUs and GPUs, the CPUs of each live node) and can add.

    ``node_types``: the worker types the autoscaler can add; ``()`` for a cluster that cannot grow, None
    for one whose autoscaler runs but does not publish its node types (Ray's v1 autoscaler).
    """

    cpus: float
    gpus: float
    node_cpus: tuple[float, ...]
    node_types: tuple[NodeType, ...] | None = ()

    @classmethod
    def of_cluster(cls) -> Resources:
        """The connected Ray cluster: its live nodes and the autoscaler's node types."""
        import ray

        from plantray.cluster import autoscaler_node_types

        total = ray.cluster_resources()
        nodes = tuple(float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"])
        types = autoscaler_node_types()
        node_types = None if types is None else tuple(NodeType(*t) for t in types)
        return cls(float(total.get("CPU", 0)), float(total.get("GPU", 0)), nodes or (0.0,), node_types)

    @property
    def can_grow(self) -> bool:
        """Whether the autoscaler can add nodes (or might: its node types are unknown)."""
        return self.node_types is None or any(t.max_count != 0 for t in self.node_types)

    def reach(self, key: str) -> float | None:
        """The most CPUs (``key="cpus"``) or GPUs the cluster can have; None if unbounded or unknown."""
        now = getattr(self, key)
        if self.node_types is None:
            return None
        added = [(getattr(t, key), t.max_count) for t in self.node_types if getattr(t, key) > 0 and t.max_count]
        if any(count < 0 for _, count in added):
            return None
        return now + sum(amount * count for amount, count in added)

    def largest_node_cpus(self) -> float:
        """CPUs of the largest node up now or addable; 0 when no node with CPUs is known."""
        return max([*self.node_cpus, *(t.cpus for t in self.node_types or ())], default=0.0)

    def gpus_possible(self) -> bool:
        """Whether GPUs are up or can be added (known GPU node types, or unknown node types)."""
        return self.gpus >= 1 or self.node_types is None or any(t.gpus >= 1 for t in self.node_types)

    def describe(self) -> str:
        """The cluster in words, for messages: what is up and what the autoscaler can add."""
        up = f"{self.cpus:g} CPUs and {self.gpus:g} GPUs on {len(self.node_cpus)} live node(s)"
        if self.node_types is None:
            return f"{up}; an autoscaler runs but does not publish its node types (see `ray status`)"
        types = [f"{t.name} ({t.cpus:g} CPU, {t.gpus:g} GPU) x{'any' if t.max_count < 0 else t.max_count}"
                 for t in self.node_types if t.max_count]
        return f"{up}; the autoscaler can add: {', '.join(types)}" if types else f"{up}; no autoscaling"


@dataclass
class Plan:
    """How an inference pipeline uses the cluster: an actor pool of ``min_actors``..``max_actors``.

    ``max_actors`` None: as many as Ray Data's resource manager and the cluster allow. ``actor_gpus`` is
    1 on GPUs, else 0; ``actor_cpus`` and ``decode_cpus`` are whole CPUs (0 only on a 1-CPU cluster).
    """

    use_gpu: bool
    min_actors: int
    max_actors: int | None
    threads: int | None
    actor_cpus: float
    actor_gpus: float
    decode_cpus: float
    batch_size: int
    precision: str

    @property
    def actors(self) -> int:
        """The largest the pool may grow to (``min_actors`` when unbounded: the count known for sure)."""
        return self.max_actors if self.max_actors is not None else self.min_actors

    def bundles(self) -> list[dict[str, float]]:
        """What the pipeline needs before it can make progress: ``min_actors`` actors and one task CPU."""
        actor = {k: v for k, v in (("CPU", self.actor_cpus), ("GPU", self.actor_gpus)) if v > 0}
        return [actor] * self.min_actors * bool(actor) + [{"CPU": TASK_CPUS}]

    def describe(self) -> str:
        """The request in words, e.g. ``1 model actor with 1 GPU and 1 CPU, and 1 CPU for Ray Data's tasks``."""
        parts = [f"{v:g} {k}" for k, v in (("GPU", self.actor_gpus), ("CPU", self.actor_cpus)) if v > 0]
        actors = f"{self.min_actors} model actor{'s' * (self.min_actors != 1)}"
        return (f"{actors} with {' and '.join(parts) or 'no reserved CPU'} each, "
                f"and {TASK_CPUS:g} CPU for Ray Data's read/decode tasks")


def reservable(cpus: float) -> float:
    """CPUs that long-lived actors may reserve out of ``cpus``: all but one (see the module docstring)."""
    return max(0.0, cpus - 1.0)


def _pool_size(options, fixed_max: int | None) -> tuple[int, int | None]:
    """(min, max) actors: ``--num-actors`` fixes both; else ``--min-actors`` (1) to ``--max-actors``."""
    if options.num_actors:
        return options.num_actors, options.num_actors
    low = getattr(options, "min_actors", None) or 1
    high = getattr(options, "max_actors", None) or fixed_max
    return low, None if high is None else max(low, high)


def _gpu_plan(options, resources: Resources, batch: int) -> Plan:
    """One GPU and one whole CPU per actor; as many actors as the cluster can have GPUs."""
    reach = resources.reach("gpus")
    low, high = _pool_size(options, None if reach is None else max(1, int(reach)))
    return Plan(True, low, high, options.threads_per_actor, 1.0, 1.0, TASK_CPUS, batch, options.precision)


def _cpu_plan(options, resources: Resources, batch: int) -> Plan:
    """Whole-CPU actors of ``threads`` torch threads reserving half of them (see the module docstring)."""
    largest = resources.largest_node_cpus()
    threads = options.threads_per_actor or (min(int(largest), MAX_CPU_THREADS) if largest >= 1 else None)
    actor_cpus = float(max(1, (threads or 1) // 2))
    if largest >= 1:
        actor_cpus = min(actor_cpus, float(int(largest)))  # an actor larger than every node never starts
    reach = resources.reach("cpus")
    fixed_max = None
    if reach is not None:  # a cluster that cannot grow (or only so far): keep one CPU for the tasks
        # a 1-CPU cluster: the actor shares the CPU with the tasks (reserving it would strand them)
        actor_cpus = min(actor_cpus, float(int(reservable(reach)))) if reach > TASK_CPUS else 0.0
        fits = int(reservable(reach) // actor_cpus) if actor_cpus else 1
        fixed_max = max(1, min(int(reach // (threads or 1)), fits))
    low, high = _pool_size(options, fixed_max)
    return Plan(False, low, high, threads, actor_cpus, 0.0, TASK_CPUS, batch, options.precision)


def plan_inference(options, resources: Resources, crops: int = 1) -> Plan:
    """Sizes the model actor pool and batches from the options and what the cluster can become.

    On GPUs (``--device gpu``, or ``auto`` where GPUs are up or a known node type has them): actors of
    1 GPU and 1 CPU, up to the GPUs the cluster can have, large batches. On CPUs: actors of ``threads``
    torch threads (default: the largest node's CPUs, up to 8; unknown on a cold cluster, where each actor
    runs as many threads as CPUs it reserves) reserving half of them in whole CPUs.

    Args:
        options: ``device``, ``precision``, ``num_actors`` (fixes the pool), ``min_actors``,
            ``max_actors``, ``threads_per_actor``, ``batch_size`` (images per forward, each with all its
            crops; None = the default for the device).
        resources: the cluster (:meth:`Resources.of_cluster`).
        crops: crops per image, so a default batch holds the same number of crops whatever the TTA.
    Returns:
        The :class:`Plan`.
    Raises:
        ConfigError: ``--device gpu`` on a cluster that has no GPUs and cannot add any.
    """
    if options.device == "gpu" and not resources.gpus_possible():
        raise ConfigError("--device gpu but the Ray cluster has no GPUs and no GPU node type to add; "
                          "use --device cpu or add GPU nodes")
    use_gpu = options.device == "gpu" or (options.device == "auto" and resources.gpus >= 1) or (
        options.device == "auto" and any(t.gpus >= 1 for t in resources.node_types or ()))
    batch = options.batch_size or max(1, (GPU_BATCH if use_gpu else CPU_BATCH) // crops)
    # precision "auto" is resolved by each model actor for its own device
    return (_gpu_plan if use_gpu else _cpu_plan)(options, resources, batch)


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


def check_data_room(num_workers: int | tuple[int, int], resources_per_worker: dict[str, float],
                    cpus: float) -> None:
    """Refuses training workers that would leave a Ray of fixed size less than one CPU for reading images.

    Ray Data's read tasks ask for a whole CPU (:data:`TASK_CPUS`): beside workers holding more than
    ``cpus - 1`` they never start, and the run waits for its first batch for ever. Call it only for a Ray whose
    size is known and fixed (the local one plantray started): a cluster's nodes may still be coming. Workers
    that can never be placed at all are left to the bounded wait of
    :class:`plantray.training.resources.ResourceWait`, which names the ask.

    Args:
        num_workers: the count asked for, or ``(min, max)``: elastic training starts as many as fit.
        resources_per_worker: what each worker reserves (:func:`train_scaling`).
        cpus: the Ray's CPUs.
    Raises:
        ConfigError: naming the workers' share, the Ray's CPUs and how many workers fit.
    """
    low, high = num_workers if isinstance(num_workers, tuple) else (num_workers, num_workers)
    each = resources_per_worker.get("CPU", 0.0)
    placed = min(high, int(cpus // each)) if each else high  # what Ray Train can start here
    if placed < low or placed * each + TASK_CPUS <= cpus:
        return
    elastic = isinstance(num_workers, tuple)
    fits = int((cpus - TASK_CPUS) // each) if each else high
    if fits >= (low if elastic else 1):  # an elastic run keeps its --min-workers
        fix = f"use {'--max-workers' if elastic else '--num-workers'} {fits}"
    elif cpus - TASK_CPUS >= MIN_RESERVATION * low:
        fix = "lower --cpus-per-worker"
    else:
        fix = "train on a machine with more CPUs"
    raise ConfigError(f"{placed} training worker(s) of CPU {each:g} each would leave this local Ray's {cpus:g} "
                      f"CPUs less than the {TASK_CPUS:g} CPU that reading images takes: {fix}, or run on a "
                      "cluster (RAY_ADDRESS)")
