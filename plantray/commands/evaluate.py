"""``plantray evaluate``: the paper's external-test protocol (ten-crop testing, Table 1) on Ray.

For each model, every test set is read (manifest, image tree or archive; local or object storage),
restricted to species the model knows and saw MORE than ``--min-train-images`` times in training
(as the paper keeps labels with >12 training images; :mod:`plantray.labelfilter`), cropped in CPU
tasks, scored by an actor pool that averages the softmax over the crops of each image, and written as
per-image Parquet. The metrics are then computed from that Parquet (:mod:`plantray.evalscore`), so the
report can always be recomputed from it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

import ray

from plantray import storage
from plantray.cluster import ensure_ray
from plantray.commands.options import PRECISION_HELP
from plantray.config import ConfigError, field
from plantray.evaluation.labelfilter import UNKNOWN, label_filter, select_rows
from plantray.evaluation.report import markdown_table, write_report
from plantray.evaluation.score import ModelRun, TestSet, score_run
from plantray.images.crops import TTA_MODES, crop_batch, n_crops
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, EvalPreset
from plantray.inference.planner import Plan, cluster_resources, plan_inference
from plantray.inference.predictor import CropPredictor
from plantray.model.artifact import Artifact, load_artifact
from plantray.sources import open_source

log = logging.getLogger(__name__)
PREDICTIONS = "predictions"


@dataclass
class EvaluateConfig:
    """Settings of ``plantray evaluate`` (CLI flags are generated from these fields)."""

    model: str = field("", required=True, help="plantray model directory (local or s3://...)")
    compare: list[str] = field([], help="another model evaluated on the same test sets (repeatable)")
    test: list[str] = field([], required=True, help="test set as NAME=DATA: a manifest with image_uri and "
                            "scientificName (optional tag/genus/family) or an ImageFolder tree (repeatable)")
    output: str = field("", required=True, help="report directory (local or s3://...)")
    tta: str = field("random-ten-crop", choices=list(TTA_MODES),
                     help="test-time crops: none/center = one centre crop; ten-crop = corners + centre and "
                     "mirrors; random-ten-crop = the paper's ten random crops, seeded per image")
    min_train_images: int = field(12, help="keep only species with MORE training images than this (paper: 12)")
    top_k: str = field("1,5", help="comma-separated k of the Top-k accuracies")
    seed: int = field(0, help="seed of the random crops and of the bootstrap")
    bootstrap: int = field(1000, help="bootstrap replicates for the 95%% intervals (0 = off)")
    batch_size: int | None = field(None, help="images per forward, each with all its crops "
                                   "(default: 256 crops' worth on GPU, 16 on CPU)")
    num_actors: int | None = field(None, help="model actors (default: one per GPU, else CPUs/threads)")
    threads_per_actor: int | None = field(None, help="torch threads per CPU actor")
    decode_batch_size: int = field(8, help="images per crop task batch")
    device: str = field("auto", choices=["auto", "cpu", "gpu"], help="where the models run")
    precision: str = field("auto", choices=["auto", "fp32", "bf16"], help=PRECISION_HELP)
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images are counted unreadable")
    max_bytes: int = field(DEFAULT_MAX_BYTES, help="larger files are counted unreadable")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")


def parse_ks(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]``. Raises ConfigError for anything but positive integers."""
    try:
        ks = sorted({int(k) for k in str(text).split(",") if k.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise ConfigError(f"--top-k {text!r}: give comma-separated positive integers, e.g. 1,5")
    return ks


def parse_tests(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=DATA`` strings -> (name, uri) pairs. Raises ConfigError for malformed or duplicate names."""
    if not specs:
        raise ConfigError("--test is required: give at least one NAME=DATA test set")
    pairs = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        name, uri = name.strip(), uri.strip()
        if not sep or not name or not uri or not re.fullmatch(r"[\w.\-]+", name):
            raise ConfigError(f"--test {spec!r} is not NAME=DATA; e.g. --test flora=s3://bucket/flora.parquet "
                              "(NAME: letters, digits, '_', '-', '.')")
        pairs.append((name, uri))
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"--test names must be unique; {dupes} given twice: rename one (NAME=DATA)")
    return pairs


def _model_labels(uris: list[str], artifacts: list[Artifact]) -> list[str]:
    """Report names: card names, else directory names, else numbered, whichever is unique."""
    for labels in ([a.card["name"] for a in artifacts], [u.rstrip("/").rsplit("/", 1)[-1] for u in uris]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"{a.card['name']}#{i + 1}" for i, a in enumerate(artifacts)]


def validate(cfg: EvaluateConfig) -> tuple[list[ModelRun], list[TestSet], list[int]]:
    """Checks everything checkable before work: flags, models, test sets and their label filters.

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    for name in ("model", "output"):
        if not getattr(cfg, name):
            raise ConfigError(f"--{name} is required")
    ks = parse_ks(cfg.top_k)
    pairs = parse_tests(cfg.test)
    if cfg.min_train_images < 0 or cfg.bootstrap < 0 or cfg.decode_batch_size < 1:
        raise ConfigError("--min-train-images and --bootstrap must be >= 0, --decode-batch-size >= 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be >= 1")
    if storage.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new directory or pass --overwrite")
    uris = [cfg.model, *(cfg.compare or [])]
    artifacts = [load_artifact(u) for u in uris]
    for uri, art in zip(uris, artifacts):
        if cfg.min_train_images > 0 and not art.labels.has_counts:
            raise ConfigError(f"model {uri!r} has no per-class training counts (train_images in labels.csv), so "
                              f"--min-train-images {cfg.min_train_images} cannot be applied; add the counts or "
                              "pass --min-train-images 0")
    tests = [TestSet(name, uri, open_source(uri, flag=f"--test {name}=").label_counts()) for name, uri in pairs]
    runs = []
    for uri, art, label in zip(uris, artifacts, _model_labels(uris, artifacts)):
        filters = {t.name: label_filter(t.counts, art.labels, cfg.min_train_images) for t in tests}
        for t in tests:
            if filters[t.name][1]["labels"][UNKNOWN] == len([k for k in t.counts if k is not None]):
                raise ConfigError(f"--test {t.name}={t.uri}: none of its {len(t.counts)} labels is known to model "
                                  f"{uri!r}; check that scientificName spellings match the model's labels.csv")
        runs.append(ModelRun(label, uri, art, filters))
    return runs, tests, ks


def build_pipeline(cfg: EvaluateConfig, run: ModelRun, tests: list[TestSet], plan: Plan,
                   ks: list[int]) -> ray.data.Dataset:
    """The lazy dataset of one model's per-image results over every test set."""
    parts = []
    for t in tests:
        ds, _ = open_source(t.uri, flag=f"--test {t.name}=").dataset(labels_from_dirs=True)
        kept = tuple(sorted(run.filters[t.name][0]))
        parts.append(ds.map_batches(select_rows, fn_args=(t.name, kept), batch_format="pyarrow",
                                    batch_size=None, zero_copy_batch=True))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    preset = EvalPreset.from_dict(run.artifact.card["input"], max_pixels=cfg.max_pixels)
    ds = ds.map_batches(crop_batch, fn_args=(preset, cfg.tta, cfg.seed, cfg.max_bytes),
                        batch_size=cfg.decode_batch_size, batch_format="pyarrow", zero_copy_batch=True,
                        num_cpus=plan.decode_cpus)
    crops = n_crops(cfg.tta)
    # Keep the crops per forward near classify's batch: 10 crops per image means 1/10 the images.
    batch = cfg.batch_size or max(1, plan.batch_size // crops)
    return ds.map_batches(
        CropPredictor,
        fn_constructor_kwargs=dict(model_uri=run.uri, model_label=run.label, crops=crops, ks=tuple(ks),
                                   use_gpu=plan.use_gpu, precision=plan.precision, threads=plan.threads),
        batch_size=batch, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=_actor_cpus(plan), num_gpus=1 if plan.use_gpu else 0)


def _actor_cpus(plan: Plan) -> float:
    """The actors' CPU reservation, always leaving one whole CPU free.

    Ray Data's file listing and read tasks each ask for 1 CPU: if the actors took more than
    ``total - 1``, a read could never be scheduled and a small machine would wait forever.
    """
    cpus, _ = cluster_resources()
    return max(0.25, min(plan.actor_cpus, (cpus - 1.0) / plan.actors))


def evaluate(cfg: EvaluateConfig) -> dict:
    """Runs ``plantray evaluate``; returns the summary (also REPORT_DIR/report.json).

    Args:
        cfg: the job's settings.
    Returns:
        ``{"output", "tta", "ks", "min_train_images", "models", "tests", "results", "seconds"}`` where
        ``results`` holds one entry per (model, test set).
    Raises:
        ConfigError: bad flags, models or test sets, before any work starts.
    """
    runs, tests, ks = validate(cfg)
    ensure_ray()
    plan = plan_inference(cfg)
    log.info("evaluate plan: %s", plan)
    if cfg.overwrite:
        storage.remove(cfg.output)
    start = time.perf_counter()
    results = []
    for i, run in enumerate(runs):
        out = storage.join(cfg.output, PREDICTIONS, f"model_{i}")
        fs, path = storage.arrow_fs(out)
        build_pipeline(cfg, run, tests, plan, ks).write_parquet(path, filesystem=fs)
        results += score_run(out, run, tests, ks, cfg.bootstrap, cfg.seed)
    summary = {"output": cfg.output, "tta": cfg.tta, "crops": n_crops(cfg.tta), "ks": ks,
               "min_train_images": cfg.min_train_images, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
               "models": [{"label": r.label, "uri": r.uri, "name": r.artifact.card["name"],
                           "version": r.artifact.card["version"], "sha256": r.artifact.sha256,
                           "predictions": f"{PREDICTIONS}/model_{i}"} for i, r in enumerate(runs)],
               "tests": [{"name": t.name, "uri": t.uri} for t in tests], "results": results,
               "seconds": round(time.perf_counter() - start, 2), "plan": plan.__dict__}
    write_report(cfg, summary)
    return summary


def format_summary(summary: dict) -> str:
    """The Table 1 printed by the CLI, with where the full report is."""
    report = storage.join(summary["output"], "report.md")
    return f"{markdown_table(summary)}\n\nreport: {report} ({summary['seconds']} s)"


CONFIG = EvaluateConfig
run = evaluate
