"""``plantray classify``: stream images through the model actors into a Parquet dataset.

Input (manifest, Darwin Core Archive or image tree; local or object storage) -> the loader's CPU tasks
-> model actor pool (one GPU each when present) -> Parquet files sized for downstream engines. Exactly
one output row per input image, failures included. Heavy modules (torch, Ray) are imported inside the
functions, so ``plantray --help`` stays instant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from plantray.commands.options import (
    InferenceOptions,
    check_embeddings,
    check_model_options,
    embeddings_summary,
    identifications,
)
from plantray.commands.record import utc_now, write_run_record
from plantray.config import ConfigError, check, field

log = logging.getLogger(__name__)


@dataclass
class ClassifyConfig(InferenceOptions):
    """Settings of ``plantray classify`` (CLI flags are generated from these fields)."""

    output: str = field("", required=True, help="output Parquet dataset directory (local or s3://...)")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")
    aggregate: str = field("none", choices=["none", "occurrence"],
                           help="also write one row per occurrence (gbifID), combining its images")


def validate(cfg: ClassifyConfig):
    """Checks everything that can be checked before Ray starts. Returns (artifact, input source).

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray import storage
    from plantray.columns import GBIF_ID
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source

    check_model_options(cfg)
    check([(cfg.rows_per_file >= 1, f"--rows-per-file {cfg.rows_per_file} must be >= 1"),
           (0.0 <= cfg.rollup_threshold < 1.0, f"--rollup-threshold {cfg.rollup_threshold} must be in [0, 1)")])
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    if storage.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new location or pass "
                          "--overwrite to replace it")
    check_embeddings(cfg, cfg.output, cfg.overwrite)
    if cfg.aggregate == "occurrence" and GBIF_ID not in source.columns():
        raise ConfigError("--aggregate occurrence needs a gbifID column: use a Darwin Core Archive or a "
                          "manifest with gbifID")
    return artifact, source


def classify(cfg: ClassifyConfig) -> dict:
    """Runs ``plantray classify``; returns the closing summary (also in OUTPUT/_plantray_run.json).

    Raises:
        ConfigError: bad model, input or output, before any work starts.
    """
    from plantray import storage
    from plantray.cluster import ensure_ray
    from plantray.columns import RESERVED_COLUMNS
    from plantray.inference.outputs import summarize, write_predictions
    from plantray.inference.planner import Resources, plan_inference

    artifact, source = validate(cfg)
    ensure_ray(cfg.dashboard)
    plan = plan_inference(cfg, Resources.of_cluster())
    log.info("classify plan: %s", plan)
    started = utc_now()
    if cfg.overwrite:
        storage.remove(cfg.output)
        if cfg.embeddings:
            storage.remove(cfg.embeddings)
    start = time.perf_counter()
    ds, input_stats = source.dataset(reserved=RESERVED_COLUMNS)
    write_predictions(identifications(ds, cfg, artifact, plan, started), cfg.output, cfg.rows_per_file)
    summary = summarize(cfg.output, time.perf_counter() - start)
    summary.update(model=cfg.model, model_sha256=artifact.sha256, input=cfg.input, output=cfg.output,
                   plan=plan.__dict__, input_stats=input_stats)
    if cfg.embeddings:
        summary["embeddings"] = embeddings_summary(cfg.embeddings)
    if cfg.aggregate == "occurrence":
        summary["occurrences"] = aggregate(cfg)
    write_run_record(cfg.output, "classify", cfg, summary, started)
    return summary


def aggregate(cfg: ClassifyConfig) -> dict:
    """Writes the per-occurrence table next to OUTPUT (``<output>_occurrences``)."""
    from plantray.darwincore.occurrences import aggregate_occurrences

    return aggregate_occurrences(cfg.output, cfg.output.rstrip("/") + "_occurrences", top_k=cfg.top_k)


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    lines = [f"classified {summary['classified']}/{summary['images']} images in {summary['seconds']} s "
             f"({summary['images_per_second']} images/s, {summary['precision'] or 'no model run'}) -> "
             f"{summary['output']} ({summary['files']} files)"]
    for reason, count in summary["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    if emb := summary.get("embeddings"):
        lines.append(f"  embeddings: {emb['rows']} vectors -> {emb['uri']} ({emb['files']} files)")
    for reason, count in summary.get("input_stats", {}).get("skipped", {}).items():
        lines.append(f"  skipped in input: {count:>8}  {reason}")
    return "\n".join(lines)


CONFIG = ClassifyConfig
run = classify
