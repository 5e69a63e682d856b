"""One pipeline assembly: the loader's CPU tasks, then the model actor pool (classify, nightly, evaluate)."""

from __future__ import annotations

import ray

from plantray.images.loader import LoadOptions, View, load_batch
from plantray.inference.planner import Plan
from plantray.inference.predictor import Predictor


def decode(ds: ray.data.Dataset, view: View, load: LoadOptions, batch_size: int,
           num_cpus: float = 0.5) -> ray.data.Dataset:
    """The loader stage: rows with ``_source`` -> the same rows with ``_pixels`` and ``error``.

    Args:
        ds: rows with the resolved URI in ``_source``.
        view: what to make of each decoded image (centre crop, test crops, training view).
        load: limits and HTTP settings.
        batch_size: images per task batch.
        num_cpus: CPUs each task reserves (decoding waits on I/O part of the time).
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
    return ds.map_batches(
        predictor,
        fn_constructor_kwargs=dict(use_gpu=plan.use_gpu, precision=plan.precision, threads=plan.threads,
                                   crops=getattr(view, "crops", 1), **predictor_kwargs),
        batch_size=plan.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        # SPREAD: model actors go to different nodes first, so losing one node never loses them all.
        num_cpus=plan.actor_cpus, num_gpus=1 if plan.use_gpu else 0, scheduling_strategy="SPREAD")
