"""``plantray quickstart``: the whole pipeline on embedded defaults, in a few minutes on 2 CPU cores.

synthesise a PlantNet-like dataset -> train (Ray Train) -> evaluate with ten-crop into a Table-1
report -> classify an unseen set into Parquet, printing where each output is. A small network at a
small input size keeps it quick on a laptop; the same commands with ``--arch resnet50
--image-size 224 --init imagenet`` are the paper's recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from plantray import console
from plantray.commands.options import RayOptions
from plantray.commands.record import OUTPUT_MARKER, RUN_RECORD, made_by, mark_output, utc_now, write_run_record
from plantray.config import ConfigError, field

log = logging.getLogger(__name__)
# What quickstart writes under --out: the only names it ever deletes there (a rerun replaces them).
OWN_ENTRIES = ("data", "model", "report", "predictions", RUN_RECORD, OUTPUT_MARKER)


@dataclass
class QuickstartConfig(RayOptions):
    """Settings of ``plantray quickstart``."""

    out: str = field("quickstart", help="directory for every output: new or empty, or one an earlier quickstart "
                     "made (its outputs are replaced; nothing else there is touched)")
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

    if cfg.epochs < 1 or cfg.species < 2:
        raise ConfigError("quickstart needs --epochs >= 1 and --species >= 2")
    claim_out(cfg.out)
    # Ray (and with it torch) only once --out is known to be ours: a refusal stays quick and light.
    from plantray.cluster import ensure_ray
    from plantray.commands.classify import ClassifyConfig, classify, format_summary
    from plantray.commands.evaluate import EvaluateConfig, evaluate
    from plantray.commands.evaluate import format_summary as format_report
    from plantray.commands.synth import SynthConfig, synthesize
    from plantray.commands.train import TrainConfig, train

    data, model = storage.join(cfg.out, "data"), storage.join(cfg.out, "model")
    report, predictions = storage.join(cfg.out, "report"), storage.join(cfg.out, "predictions")
    ensure_ray(cfg.dashboard)
    started = utc_now()

    with console.step(f"[1/4] synthesising {cfg.species} species into {data}"):
        synthesize(SynthConfig(out=data, species=cfg.species, images_per_species=cfg.images_per_species,
                               seed=cfg.seed))
    with console.step(f"[2/4] training {cfg.arch} at {cfg.image_size}px for {cfg.epochs} epochs -> {model}"):
        train(TrainConfig(data=storage.join(data, "train.parquet"), output=model, arch=cfg.arch, init="random",
                          epochs=cfg.epochs, num_workers=cfg.num_workers, image_size=cfg.image_size,
                          lr=3e-3, seed=cfg.seed, data_license="CC0-1.0 (synthetic)",
                          data_citation="plantray synth"))
    with console.step(f"[3/4] evaluating with ten-crop (labels with > 12 training images) -> {report}"):
        summary = evaluate(EvaluateConfig(model=model, test=[f"synth-test={storage.join(data, 'test.parquet')}"],
                                          tta="ten-crop", min_train_images=12, output=report))
        console.say(format_report(summary))
    with console.step(f"[4/4] classifying the unseen set -> {predictions}"):
        console.say(format_summary(classify(ClassifyConfig(model=model, input=storage.join(data, "unseen.parquet"),
                                                           output=predictions))))
    outputs = {"data": data, "model": model, "report": storage.join(report, "report.md"), "predictions": predictions}
    write_run_record(cfg.out, "quickstart", cfg, outputs, started)
    return outputs


def claim_out(out: str) -> None:
    """Makes ``out`` quickstart's own before any work: a new or empty directory is marked; one an earlier
    quickstart marked has that run's outputs (:data:`OWN_ENTRIES`) removed; anything else is refused.

    Raises:
        ConfigError: ``out`` holds files and no quickstart marker (``--out .`` or ``--out ~`` never
            lose a file).
    """
    from plantray import storage

    if storage.holds_data(out):
        if made_by(out) != "quickstart":
            raise ConfigError(f"--out {out!r} is not empty and was not made by plantray quickstart (it has no "
                              f"{OUTPUT_MARKER}); give a new or empty directory, e.g. --out quickstart")
        for name in OWN_ENTRIES:
            storage.remove(storage.join(out, name))
    mark_output(out, "quickstart")


def format_summary(outputs: dict) -> str:
    """The CLI's closing lines: where each output is, and what to open first."""
    listing = "\n".join(f"  {k:<12} {v}" for k, v in outputs.items())
    return (f"\nOutputs:\n{listing}\n"
            f"quickstart done: open {outputs['report']} and query {outputs['predictions']}")


CONFIG = QuickstartConfig
run = quickstart
