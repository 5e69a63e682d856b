"""``plantray quickstart``: the whole pipeline on embedded defaults, in a few minutes on 2 CPU cores.

synthesise a PlantNet-like dataset -> train (Ray Train) -> evaluate with ten-crop into a Table-1
report -> classify an unseen set into Parquet, printing where each output is. A small network at a
small input size keeps it quick on a laptop; the same commands with ``--arch resnet50
--image-size 224 --init imagenet`` are the paper's recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from plantray.commands.options import RayOptions
from plantray.commands.record import utc_now, write_run_record
from plantray.config import ConfigError, field

log = logging.getLogger(__name__)


@dataclass
class QuickstartConfig(RayOptions):
    """Settings of ``plantray quickstart``."""

    out: str = field("quickstart", help="directory for every output (replaced if it exists)")
    species: int = field(8, help="synthetic species")
    images_per_species: int = field(30, help="training images per species")
    arch: str = field("resnet18", help="torchvision architecture")
    image_size: int = field(64, help="network input size")
    epochs: int = field(12, help="training epochs")
    num_workers: int = field(2, help="Ray Train workers")
    seed: int = field(0, help="seed of data and training")


def quickstart(cfg: QuickstartConfig) -> dict:
    """Runs synth -> train -> evaluate -> classify under ``cfg.out``; returns the output locations."""
    from plantray import storage
    from plantray.cluster import ensure_ray
    from plantray.commands.classify import ClassifyConfig, classify, format_summary
    from plantray.commands.evaluate import EvaluateConfig, evaluate
    from plantray.commands.evaluate import format_summary as format_report
    from plantray.commands.synth import SynthConfig, synthesize
    from plantray.commands.train import TrainConfig, train

    if cfg.epochs < 1 or cfg.species < 2:
        raise ConfigError("quickstart needs --epochs >= 1 and --species >= 2")
    storage.remove(cfg.out)
    data, model = storage.join(cfg.out, "data"), storage.join(cfg.out, "model")
    report, predictions = storage.join(cfg.out, "report"), storage.join(cfg.out, "predictions")
    ensure_ray(cfg.dashboard)
    started = utc_now()

    print(f"[1/4] synthesising {cfg.species} species into {data}", flush=True)
    synthesize(SynthConfig(out=data, species=cfg.species, images_per_species=cfg.images_per_species,
                           seed=cfg.seed))
    print(f"[2/4] training {cfg.arch} at {cfg.image_size}px for {cfg.epochs} epochs -> {model}", flush=True)
    train(TrainConfig(data=storage.join(data, "train.parquet"), output=model, arch=cfg.arch, init="random",
                      epochs=cfg.epochs, num_workers=cfg.num_workers, image_size=cfg.image_size,
                      lr=3e-3, seed=cfg.seed, data_license="CC0-1.0 (synthetic)",
                      data_citation="plantray synth"))
    print(f"[3/4] evaluating with ten-crop (labels with > 12 training images) -> {report}", flush=True)
    summary = evaluate(EvaluateConfig(model=model, test=[f"synth-test={storage.join(data, 'test.parquet')}"],
                                      tta="ten-crop", min_train_images=12, output=report))
    print(format_report(summary), flush=True)
    print(f"[4/4] classifying the unseen set -> {predictions}", flush=True)
    print(format_summary(classify(ClassifyConfig(model=model, input=storage.join(data, "unseen.parquet"),
                                                 output=predictions))), flush=True)
    outputs = {"data": data, "model": model, "report": storage.join(report, "report.md"), "predictions": predictions}
    print("\nOutputs:\n" + "\n".join(f"  {k:<12} {v}" for k, v in outputs.items()))
    write_run_record(cfg.out, "quickstart", cfg, outputs, started)
    return outputs


def format_summary(outputs: dict) -> str:
    """The CLI's closing line (the outputs were already listed)."""
    return f"quickstart done: open {outputs['report']} and query {outputs['predictions']}"


CONFIG = QuickstartConfig
run = quickstart
