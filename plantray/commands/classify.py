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
    check_identification_options,
    check_model_options,
    identifications,
    location_prior,
    prior_lines,
    prior_summary,
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
    check_identification_options(cfg)
    check([(cfg.rows_per_file >= 1, f"--rows-per-file {cfg.rows_per_file} must be >= 1")])
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    if storage.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new location or pass "
                          "--overwrite to replace it")
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
    from plantray.inference.pipeline import plan_for_cluster

    artifact, source = validate(cfg)
    prior = location_prior(cfg, artifact.labels.names, source.columns())
    ensure_ray(cfg.dashboard)
    plan = plan_for_cluster(cfg)
    log.info("classify plan: %s", plan)
    started = utc_now()
    if cfg.overwrite:
        storage.remove(cfg.output)
    start = time.perf_counter()
    ds, input_stats = source.dataset(reserved=RESERVED_COLUMNS)
    write_predictions(identifications(ds, cfg, artifact, plan, started, prior), cfg.output, cfg.rows_per_file)
    summary = summarize(cfg.output, time.perf_counter() - start)
    summary.update(model=cfg.model, model_sha256=artifact.sha256, input=cfg.input, output=cfg.output,
                   plan=plan.__dict__, input_stats=input_stats)
    if prior is not None:
        summary["prior"] = prior_summary(prior, cfg.output)
    if cfg.aggregate == "occurrence":
        summary["occurrences"] = aggregate(cfg)
    write_run_record(cfg.output, "classify", cfg, summary, started)
    return summary


def aggregate(cfg: ClassifyConfig) -> dict:
    """Writes the per-occurrence table next to OUTPUT (``<output>_occurrences``)."""
    from plantray.darwincore.occurrences import aggregate_occurrences

    return aggregate_occurrences(cfg.output, cfg.output.rstrip("/") + "_occurrences", top_k=cfg.top_k,
                                 min_confidence=cfg.min_confidence)


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    lines = [f"classified {summary['classified']}/{summary['images']} images in {summary['seconds']} s "
             f"({summary['images_per_second']} images/s, {summary['precision'] or 'no model run'}) -> "
             f"{summary['output']} ({summary['files']} files)"]
    for reason, count in summary["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    for reason, count in summary.get("input_stats", {}).get("skipped", {}).items():
        lines.append(f"  skipped in input: {count:>8}  {reason}")
    lines += prior_lines(summary.get("prior"))
    lines += unknown_lines(summary)
    if "unknown" in summary.get("occurrences", {}):
        lines.append(f"  occurrences unknown: {summary['occurrences']['unknown']:>8}  of "
                     f"{summary['occurrences']['occurrences']} (combined top-1 below --min-confidence)")
    return "\n".join(lines)


def unknown_lines(counts: dict) -> list[str]:
    """The summary lines of rolled-up and withheld identifications (classify and nightly).

    Args:
        counts: with ``by_rank``, ``unknown`` and ``min_confidence`` (:func:`plantray.inference.outputs.summarize`).
    Returns:
        Nothing when every name is a species and no ``--min-confidence`` was set, else one or two lines.
    """
    ranks, unknown = counts.get("by_rank") or {}, counts.get("unknown") or 0
    threshold = counts.get("min_confidence") or "0.0"
    lines = []
    if set(ranks) - {"species"}:
        lines.append("  identified at rank: " + ", ".join(f"{r} {n}" for r, n in ranks.items()))
    if unknown or threshold not in ("0.0", "0"):
        lines.append(f"  unknown: {unknown:>8}  no species, genus or family reached --min-confidence {threshold}")
    return lines


CONFIG = ClassifyConfig
run = classify
