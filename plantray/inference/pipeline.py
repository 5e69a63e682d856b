"""One pipeline assembly: the loader's CPU tasks, then the model actor pool (classify, nightly, evaluate)."""

from __future__ import annotations

import logging

import ray

from plantray import storage
from plantray.images.loader import LoadOptions, View, load_batch
from plantray.inference.planner import Plan, Resources, plan_inference
from plantray.inference.predictor import Predictor

log = logging.getLogger(__name__)


def plan_for_cluster(options, crops: int = 1) -> Plan:
    """The plan for the connected cluster, once the cluster can run it (the autoscaler adds nodes for it).

    Plans from the options and what the cluster can become (:func:`plan_inference`), then waits up to
    ``options.resource_timeout`` seconds until the cluster can hold the plan's smallest pool and one task
    CPU at once; Ray Data's own actor-pool start (``DataContext.wait_for_min_actors_s``) gets the same bound.

    Args:
        options: the model options (:class:`plantray.commands.options.ModelOptions`).
        crops: crops per image (see :func:`plan_inference`).
    Returns:
        The :class:`Plan`.
    Raises:
        ConfigError: a plan the cluster can never run (``--device gpu`` without GPUs).
        ResourceTimeout: the cluster did not grant the plan in time; the message names both.
    """
    from plantray.cluster import wait_for_resources

    resources = Resources.of_cluster()
    plan = plan_inference(options, resources, crops)
    timeout = float(getattr(options, "resource_timeout", 600) or 0)
    waited = wait_for_resources(plan.bundles(), plan.describe(), lambda: Resources.of_cluster().describe(), timeout)
    if waited > 1:
        log.info("resources for %s granted after %.0f s", plan.describe(), waited)
    if timeout > 0:
        ray.data.DataContext.get_current().wait_for_min_actors_s = int(max(1, timeout))
    return plan


def decode(ds: ray.data.Dataset, view: View, load: LoadOptions, batch_size: int,
           num_cpus: float = 1.0) -> ray.data.Dataset:
    """The loader stage: rows with ``_source`` -> the same rows with ``_pixels`` and ``error``.

    Args:
        ds: rows with the resolved URI in ``_source``.
        view: what to make of each decoded image (centre crop, test crops, training view).
        load: limits and HTTP settings.
        batch_size: images per task batch.
        num_cpus: CPUs each task reserves: whole CPUs, like Ray Data's read tasks, so a node's free CPUs
            stay whole (see :mod:`plantray.inference.planner`) and Ray Data fuses read and decode.
    """
    return ds.map_batches(load_batch, fn_args=(view, load), batch_size=batch_size, batch_format="pyarrow",
                          zero_copy_batch=True, num_cpus=num_cpus)


def predict(ds: ray.data.Dataset, view: View, load: LoadOptions, plan: Plan, decode_batch_size: int,
            predictor: type[Predictor] = Predictor, **predictor_kwargs) -> ray.data.Dataset:
    """Decode tasks then model actors over rows with ``image_uri``/``_source``.

    Args:
        ds: the input rows.
        view: the loader's view; ``view.crops`` (default 1) crops per image reach the predictor.
        load: limits and HTTP settings of the loader.
        plan: actors, their resources, batch size and precision (:func:`plan_inference`).
        decode_batch_size: images per decode task batch.
        predictor: :class:`Predictor` or a variant.
        predictor_kwargs: the predictor's own arguments (``model_uri``, ``top_k``, ...).
    Returns:
        The lazy dataset of predictions (nothing runs until it is consumed).
    """
    ds = decode(ds, view, load, decode_batch_size, plan.decode_cpus)
    for key in ("model_uri", "embeddings"):  # the actors' working directory is not the command's
        if predictor_kwargs.get(key):
            predictor_kwargs[key] = storage.absolute(predictor_kwargs[key])
    return ds.map_batches(
        predictor,
        fn_constructor_kwargs=dict(use_gpu=plan.use_gpu, precision=plan.precision, threads=plan.threads,
                                   crops=getattr(view, "crops", 1), **predictor_kwargs),
        batch_size=plan.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        # Autoscaling pool: min_actors asked for at once (the autoscaler adds nodes for them), grown by Ray
        # Data towards max_actors (None: the cluster's limit) as resources allow.
        compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
        # SPREAD: model actors go to different nodes first, so losing one node never loses them all.
        num_cpus=plan.actor_cpus, num_gpus=plan.actor_gpus, scheduling_strategy="SPREAD")
