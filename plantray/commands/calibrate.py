"""``plantray calibrate``: fit a temperature on a validation set and record it in the model card.

Temperature scaling (Guo et al. 2017): the validation images run through the same pipeline as
``plantray evaluate`` (loader tasks, then model actors; :func:`plantray.inference.pipeline.predict`)
with :class:`~plantray.inference.logits.LogitPredictor`, which returns each image's raw logits and its
true label's index. The driver streams those rows into one ``[N, crops, C]`` float32 array (the only
thing collected: 4 x N x crops x C bytes, e.g. 400 MB for 100,000 images of 1,000 species at one crop)
and finds the T > 0 that minimises the NLL. Only ``model_card.json`` is rewritten: the weights and their
SHA-256 stay, so ``model_sha256`` and nightly's "same model" key do not change (see notes/calibration.md).
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass

from plantray import console
from plantray.commands.options import ModelOptions, check_model_options, load_options
from plantray.commands.record import utc_now, write_run_record
from plantray.config import ConfigError, field
from plantray.images.presets import TTA_MODES

log = logging.getLogger(__name__)
RECORD_DIR = "calibration"  # MODEL/calibration/_plantray_run.json: beside the card, not over train's record


@dataclass
class CalibrateConfig(ModelOptions):
    """Settings of ``plantray calibrate``: the shared model options plus the validation set."""

    data: str = field("", required=True, help="validation set: a manifest (image_uri, scientificName) or an "
                      "ImageFolder tree, local or s3://; images of species the model does not know are left out")
    tta: str = field("center", choices=list(TTA_MODES), help="crops per image while fitting; classify and "
                     "nightly use the centre crop, so fit on it unless the model is used through evaluate's TTA")
    seed: int = field(0, help="seed of random-ten-crop")


def validate(cfg: CalibrateConfig):
    """Checks flags, model and validation set before work.

    Returns:
        (the artifact, the validation set as a :class:`~plantray.evaluation.score.TestSet`, its label filter).
    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray.evaluation.labelfilter import label_filter
    from plantray.evaluation.score import TestSet
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source

    check_model_options(cfg)
    artifact = load_artifact(cfg.model)
    counts = open_source(cfg.data, flag="--data").label_counts()
    kept, stats = label_filter(counts, artifact.labels, 0)
    if not kept:
        raise ConfigError(f"--data {cfg.data!r}: none of its labels is known to model {cfg.model!r}; check that "
                          "scientificName spellings match the model's labels.csv")
    return artifact, TestSet("validation", cfg.data, counts), (kept, stats)


def collect_logits(ds, capacity: int, crops: int, classes: int):
    """Streams LogitPredictor rows into numpy (never ``take_all``): the readable, known-label images.

    Args:
        ds: the lazy dataset of ``label_index``/``logits``/``error`` rows.
        capacity: at most this many images (the label filter's kept count).
        crops: crops per image.
        classes: the model's classes.
    Returns:
        (float32 logits ``[N, crops, C]``, int64 labels ``[N]``, unreadable images by reason).
    """
    import numpy as np
    import pyarrow.compute as pc

    from plantray.columns import ERROR, LABEL_INDEX, LOGITS

    logits = np.empty((capacity, crops, classes), np.float32)
    labels = np.empty(capacity, np.int64)
    unreadable: collections.Counter = collections.Counter()
    n = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=1024):
        unreadable.update(e for e in batch.column(ERROR).to_pylist() if e)
        good = batch.filter(pc.fill_null(pc.greater_equal(batch.column(LABEL_INDEX), 0), False))
        m = good.num_rows
        if n + m > capacity:
            raise RuntimeError(f"more validation rows ({n + m}) than the label count ({capacity})")
        values = good.column(LOGITS).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        logits[n:n + m] = values.reshape(m, crops, classes)
        labels[n:n + m] = good.column(LABEL_INDEX).to_numpy(zero_copy_only=False)
        n += m
    return logits[:n], labels[:n], dict(unreadable.most_common())


def calibrate(cfg: CalibrateConfig) -> dict:
    """Runs ``plantray calibrate``; returns the summary (also MODEL/calibration/_plantray_run.json).

    Args:
        cfg: the job's settings.
    Returns:
        The card's new ``calibration`` section plus ``model``, ``sha256``, ``previous_temperature``,
        ``unreadable`` and ``seconds``.
    Raises:
        ConfigError: bad flags, model or validation set (before work), or no readable validation image.
    """
    from plantray import storage

    artifact, test, filt = validate(cfg)
    console.headline(f"calibrating {cfg.model} on {cfg.data}")
    # Ray (and with it torch) only once every check has passed: refusals stay quick and light.
    from plantray.cluster import counting, ensure_ray
    from plantray.evaluation.calibration import figures, fit_temperature
    from plantray.evaluation.labelfilter import kept_rows
    from plantray.images.crops import CropView, n_crops
    from plantray.inference.logits import LogitPredictor
    from plantray.inference.pipeline import predict
    from plantray.inference.planner import Resources, plan_inference
    from plantray.model.artifact import write_calibration

    ensure_ray(cfg.dashboard)
    started, start = utc_now(), time.perf_counter()
    crops = n_crops(cfg.tta)
    plan = plan_inference(cfg, Resources.of_cluster(), crops=crops)
    with console.Progress("scoring the validation images", total=filt[1]["images"]["kept"]) as line, \
            counting(line) as counter:
        ds = predict(kept_rows([test], {test.name: filt}), CropView(artifact.preset, cfg.tta, cfg.seed),
                     load_options(cfg), plan, cfg.decode_batch_size, predictor=LogitPredictor, model_uri=cfg.model,
                     progress=counter)
        logits, true, unreadable = collect_logits(ds, filt[1]["images"]["kept"], crops, len(artifact.labels))
    if len(true) == 0:
        raise ConfigError(f"--data {cfg.data!r}: no readable image of a known species ({unreadable}); nothing to "
                          "fit a temperature on")
    temperature = fit_temperature(logits, true)
    before, after = figures(logits, true, 1.0), figures(logits, true, temperature)
    calibration = {"method": "temperature", "temperature": temperature,
                   "validation": {"uri": cfg.data, "images": int(len(true)), "tta": cfg.tta},
                   "nll_before": before["nll"], "nll_after": after["nll"], "ece_before": before["ece"],
                   "ece_after": after["ece"], "fitted_at": utc_now()}
    write_calibration(cfg.model, calibration)
    summary = {"model": cfg.model, "sha256": artifact.sha256, "previous_temperature": artifact.temperature
               if artifact.calibration else None, **calibration, "unreadable": unreadable,
               "seconds": round(time.perf_counter() - start, 2)}
    write_run_record(storage.join(cfg.model, RECORD_DIR), "calibrate", cfg, summary, started)
    log.info("temperature %.4g fitted on %d images: NLL %.4f -> %.4f", temperature, len(true), before["nll"],
             after["nll"])
    return summary


def after_training(train_cfg) -> dict:
    """``plantray train --val``: calibrates the model just written on the same validation set.

    Args:
        train_cfg: the TrainConfig (``output``, ``val``, ``use_gpu``, ``max_pixels``, ``decode_batch_size``).
    Returns:
        :func:`calibrate`'s summary.
    """
    return calibrate(CalibrateConfig(model=train_cfg.output, data=train_cfg.val, max_pixels=train_cfg.max_pixels,
                                     device="gpu" if train_cfg.use_gpu else "cpu",
                                     decode_batch_size=train_cfg.decode_batch_size))


def format_summary(summary: dict) -> str:
    """The lines printed by the CLI."""
    v = summary["validation"]
    return (f"temperature {summary['temperature']:.4g} fitted on {v['images']} images of {v['uri']} "
            f"({summary['seconds']} s) -> {summary['model']}/model_card.json\n"
            f"  NLL {summary['nll_before']:.4f} -> {summary['nll_after']:.4f}   "
            f"ECE {summary['ece_before']:.4f} -> {summary['ece_after']:.4f} (15 bins)")


CONFIG = CalibrateConfig
run = calibrate
