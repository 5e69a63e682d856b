"""One pipeline assembly: decode tasks, then model actors."""

from __future__ import annotations

import ray

from plantray.images.loader import decode_batch
from plantray.images.presets import EvalPreset
from plantray.inference.planner import Plan, fetch_config
from plantray.inference.predictor import Predictor


def predict_stages(ds, cfg, artifact, plan: Plan, now_iso: str):
    """Decode tasks then model actors over rows with ``image_uri``/``_source`` (classify and nightly).

    ``cfg`` is any config with classify's model/decode/fetch fields.
    """
    preset = EvalPreset.from_dict(artifact.card["input"], max_pixels=cfg.max_pixels)
    ds = ds.map_batches(decode_batch, fn_args=(preset, cfg.max_bytes, fetch_config(cfg)),
                        batch_size=cfg.decode_batch_size, batch_format="pyarrow", zero_copy_batch=True,
                        num_cpus=plan.decode_cpus)
    return ds.map_batches(
        Predictor,
        fn_constructor_kwargs=dict(model_uri=cfg.model, top_k=cfg.top_k, use_gpu=plan.use_gpu,
                                   precision=plan.precision, threads=plan.threads, now_iso=now_iso,
                                   rollup_threshold=cfg.rollup_threshold),
        batch_size=plan.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        # SPREAD: model actors go to different nodes first, so losing one node never loses them all.
        num_cpus=plan.actor_cpus, num_gpus=1 if plan.use_gpu else 0, scheduling_strategy="SPREAD")
