"""The one resource planner, from resource values alone (no Ray): inference actors and training workers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from plantray.config import ConfigError
from plantray.inference.planner import Resources, plan_inference, reservable, train_scaling


def options(**kw):
    base = dict(device="auto", precision="auto", num_actors=None, threads_per_actor=None, batch_size=None)
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
    ((1, 1), 2, 1, 0.25),         # 1-CPU nodes: never the node's last CPU, the smallest share instead
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
