"""The one resource planner, from resource values alone (no Ray): inference actors and training workers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from plantray.config import ConfigError
from plantray.inference.planner import (
    NodeType,
    Resources,
    check_data_room,
    plan_inference,
    reservable,
    train_scaling,
)


def options(**kw):
    base = dict(device="auto", precision="auto", num_actors=None, threads_per_actor=None, batch_size=None,
                min_actors=1, max_actors=None)
    return SimpleNamespace(**{**base, **kw})


def test_gpu_cluster_one_actor_per_gpu_large_batches():
    plan = plan_inference(options(), Resources(cpus=32, gpus=4, node_cpus=(16, 16)))
    assert (plan.use_gpu, plan.actors, plan.batch_size, plan.actor_cpus) == (True, 4, 256, 1.0)


def test_device_cpu_ignores_gpus_and_device_gpu_needs_them():
    assert not plan_inference(options(device="cpu"), Resources(8, 1, (8,))).use_gpu
    with pytest.raises(ConfigError, match="--device gpu"):
        plan_inference(options(device="gpu"), Resources(8, 0, (8,)))


@pytest.mark.parametrize("nodes, actors, threads, actor_cpus", [
    ((2,), 1, 2, 1.0),            # the test machine: one actor, one CPU left for Ray Data's tasks
    ((16,), 2, 8, 4.0),           # threads capped at 8; each actor reserves half its threads
    ((1, 1), 1, 1, 1.0),          # 1-CPU nodes: one whole-CPU actor, the other node's CPU for the tasks
    ((4, 4, 4), 3, 4, 2.0),
])
def test_cpu_actors_leave_a_cpu_free(nodes, actors, threads, actor_cpus):
    plan = plan_inference(options(), Resources(float(sum(nodes)), 0, tuple(float(n) for n in nodes)))
    assert (plan.actors, plan.threads, plan.actor_cpus, plan.batch_size) == (actors, threads, actor_cpus, 16)
    # worked out by hand above; the rule they follow: all actors together keep one CPU unreserved
    assert plan.actors * plan.actor_cpus <= max(sum(nodes) - 1, 0.25 * plan.actors)


def test_overrides_and_crops_scale_the_default_batch():
    plan = plan_inference(options(num_actors=3, threads_per_actor=1), Resources(8, 0, (8,)), crops=10)
    assert (plan.actors, plan.threads, plan.batch_size) == (3, 1, 1)  # 16 crops' worth of 10-crop images
    assert plan_inference(options(batch_size=7), Resources(8, 0, (8,)), crops=10).batch_size == 7


def test_reservable_keeps_one_cpu():
    assert [reservable(c) for c in (0, 1, 2, 16)] == [0, 0, 1, 15]


@pytest.mark.parametrize("workers", [1, 2, 3, (1, 4), (2, 2)])
def test_train_asks_the_same_whatever_the_cluster(workers):
    # No cluster snapshot: the request is the flags'. Half a CPU a worker by default: a 1-CPU node hosts
    # one and keeps half a CPU for two decode tasks (0.25 CPU each).
    assert train_scaling(workers, False, None) == (workers, {"CPU": 0.5})


def test_train_gpu_and_explicit_cpus():
    assert train_scaling(2, True, None) == (2, {"CPU": 1.0, "GPU": 1.0})
    assert train_scaling(1, False, 3.0) == (1, {"CPU": 3.0})
    assert train_scaling((1, 8), True, 2.0) == ((1, 8), {"CPU": 2.0, "GPU": 1.0})


@pytest.mark.parametrize("workers, cpus, message", [(0, None, "workers 0-0"), ((3, 2), None, "workers 3-2"),
                                                     ((0, 2), None, "workers 0-2"), (1, 0.0, "--cpus-per-worker 0")])
def test_train_bad_counts(workers, cpus, message):
    with pytest.raises(ConfigError, match=message):
        train_scaling(workers, False, cpus)


# Training workers on a Ray of fixed size (the local one plantray started) must leave a whole CPU for Ray
# Data's read tasks, or the run waits for its first batch for ever (3 workers of 0.5 CPU on 2 CPUs did).
# Expected counts worked out by hand for 2 CPUs (and 1 CPU in the last case).
@pytest.mark.parametrize("workers, cpus, node, placed, fix", [
    (4, 0.5, 2, 4, "use --num-workers 2"), (3, 0.5, 2, 3, "use --num-workers 2"),
    ((1, 8), 0.5, 2, 4, "use --max-workers 2"), ((1, 3), 0.5, 2, 3, "use --max-workers 2"),
    (2, 1.0, 2, 2, "use --num-workers 1"), (1, 1.75, 2, 1, "lower --cpus-per-worker"),
    ((4, 8), 0.5, 2, 4, "lower --cpus-per-worker"), (1, 0.5, 1, 1, "train on a machine with more CPUs"),
    (2, 0.5, 2, None, None), (1, 1.0, 2, None, None), ((1, 2), 0.5, 2, None, None),
    (3, 1.0, 2, None, None),  # never placed at all: the bounded wait names the ask (tests/integration/test_train.py)
])
def test_training_workers_leave_a_cpu_for_reading(workers, cpus, node, placed, fix):
    if placed is None:
        check_data_room(workers, {"CPU": cpus}, float(node))
        return
    with pytest.raises(ConfigError) as e:
        check_data_room(workers, {"CPU": cpus}, float(node))
    assert str(e.value).startswith(f"{placed} training worker(s) of CPU {cpus:g} each would leave this local "
                                   f"Ray's {node} CPUs less than the 1 CPU that reading images takes: {fix}, ")


# What the cluster can become: a cold autoscaling cluster (the head has no CPUs, worker types at
# min_workers 0) is planned from the flags and the node types, never from the empty snapshot.

COLD = (0.0,)  # a head with CPU 0, nothing else up


def test_cold_cluster_with_unknown_node_types_gets_an_unbounded_whole_cpu_pool():
    plan = plan_inference(options(), Resources(0, 0, COLD, node_types=None))
    got = (plan.use_gpu, plan.min_actors, plan.max_actors, plan.actor_cpus, plan.threads)
    assert got == (False, 1, None, 1.0, None)
    assert plan.bundles() == [{"CPU": 1.0}, {"CPU": 1.0}]  # one actor and one task CPU


def test_cold_cluster_sized_from_its_node_types():
    types = (NodeType("cpu16", 16, 0, 4),)
    plan = plan_inference(options(), Resources(0, 0, COLD, types))
    # threads from the 16-CPU type (capped at 8), half of them reserved; 64 CPUs reachable -> 64 // 8 actors
    assert (plan.threads, plan.actor_cpus, plan.min_actors, plan.max_actors) == (8, 4.0, 1, 8)
    unlimited = plan_inference(options(), Resources(0, 0, COLD, (NodeType("cpu16", 16, 0, -1),)))
    assert unlimited.max_actors is None


def test_gpu_node_types_make_gpu_actors_and_device_gpu_waits_for_unknown_types():
    types = (NodeType("cpu", 16, 0, 16), NodeType("gpu", 4, 1, 6))
    plan = plan_inference(options(), Resources(0, 0, COLD, types))
    got = (plan.use_gpu, plan.actor_gpus, plan.actor_cpus, plan.max_actors, plan.batch_size)
    assert got == (True, 1.0, 1.0, 6, 256)
    assert plan.bundles() == [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0}]
    assert plan.describe() == "1 model actor with 1 GPU and 1 CPU each, and 1 CPU for Ray Data's read/decode tasks"
    # unknown types: auto stays on CPU, --device gpu asks (the autoscaler may have GPU nodes)
    assert not plan_inference(options(), Resources(0, 0, COLD, None)).use_gpu
    assert plan_inference(options(device="gpu"), Resources(0, 0, COLD, None)).use_gpu
    with pytest.raises(ConfigError, match="--device gpu"):
        plan_inference(options(device="gpu"), Resources(0, 0, COLD, (NodeType("cpu", 16, 0, 16),)))


def test_pool_flags():
    cold = Resources(0, 0, COLD, None)
    fixed = plan_inference(options(num_actors=3), cold)
    assert (fixed.min_actors, fixed.max_actors) == (3, 3)
    plan = plan_inference(options(min_actors=2, max_actors=5), cold)
    assert (plan.min_actors, plan.max_actors) == (2, 5)
    assert len(plan.bundles()) == 3 and plan.describe().startswith("2 model actors with 1 CPU each")


def test_a_one_cpu_cluster_reserves_no_cpu_for_its_actor():
    plan = plan_inference(options(), Resources(1, 0, (1,)))
    assert (plan.actor_cpus, plan.min_actors, plan.max_actors) == (0.0, 1, 1)
    assert plan.bundles() == [{"CPU": 1.0}]  # only the tasks' CPU


@pytest.mark.parametrize("nodes", [(1,), (1, 1), (1, 1, 1), (2,), (1, 2), (3, 1), (4, 4, 4), (16,), (0, 1, 1)])
@pytest.mark.parametrize("threads", [None, 1, 3, 8])
def test_no_node_shape_strands_a_task(nodes, threads):
    """Whole-CPU requests: every actor fits some node, and on a cluster that cannot grow the biggest pool
    still leaves a node with a whole free CPU for Ray Data's 1-CPU tasks (packed largest node first)."""
    plan = plan_inference(options(threads_per_actor=threads), Resources(float(sum(nodes)), 0, nodes))
    assert plan.actor_cpus == int(plan.actor_cpus) and plan.decode_cpus == 1.0
    assert plan.actor_cpus <= max(nodes)
    free = sorted(nodes, reverse=True)
    for _ in range(plan.max_actors if plan.actor_cpus else 0):  # first fit, as Ray would place them
        i = next(i for i, c in enumerate(free) if c >= plan.actor_cpus)
        free[i] -= plan.actor_cpus
    assert max(free) >= 1


def test_describe_the_cluster():
    types = (NodeType("cpu2", 2, 0, 3), NodeType("off", 8, 0, 0))
    assert Resources(0, 0, COLD, types).describe() == (
        "0 CPUs and 0 GPUs on 1 live node(s); the autoscaler can add: cpu2 (2 CPU, 0 GPU) x3")
    assert Resources(2, 0, (2,)).describe() == "2 CPUs and 0 GPUs on 1 live node(s); no autoscaling"
