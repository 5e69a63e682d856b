"""Machine identifications: the model stage of classify and nightly, with Darwin Core terms on every row."""

from __future__ import annotations

import functools

import ray

from plantray.darwincore.terms import add_terms
from plantray.images.loader import EvalView, LoadOptions
from plantray.images.presets import EvalPreset
from plantray.inference.pipeline import predict
from plantray.inference.planner import Plan


def identify(ds: ray.data.Dataset, artifact, plan: Plan, load: LoadOptions, decode_batch_size: int, *,
             top_k: int, rollup_threshold: float, now_iso: str, prior=None,
             min_confidence: float = 0.0, embeddings: str | None = None, progress=None) -> ray.data.Dataset:
    """Input rows -> one identification per row: the model's centre crop, ranked names, roll-up, terms.

    Args:
        ds: rows with ``image_uri`` and ``_source``.
        artifact: the loaded model (its card names the preprocessing and the identifier).
        plan: from :func:`plantray.inference.planner.plan_inference`.
        load: the loader's limits and HTTP settings.
        decode_batch_size: images per decode task.
        top_k: ranked names kept.
        rollup_threshold: below this top-1 probability, the genus or family that clears it.
        now_iso: the run's ``dateIdentified``.
        prior: a location prior (:class:`plantray.inference.prior.Prior`), or None.
        min_confidence: below it at every rank, no name (an honest "unknown"; implies the roll-up at it).
        embeddings: where the model actors write the images' penultimate-layer vectors (None: not written).
        progress: a :class:`plantray.cluster.ProgressCounter` the model actors report their batches to, or None.
    Returns:
        The lazy dataset of prediction rows.
    """
    view = EvalView(EvalPreset.from_dict(artifact.card["input"]))
    return predict(ds, view, load, plan, decode_batch_size, model_uri=artifact.uri, top_k=top_k,
                   rollup_threshold=rollup_threshold, prior=prior, min_confidence=min_confidence,
                   embeddings=embeddings, progress=progress,
                   finish=functools.partial(add_terms, model_card=artifact.card, now_iso=now_iso,
                                            min_confidence=min_confidence))
