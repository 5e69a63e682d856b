"""``plantray classify``: stream images through the model actors into a Parquet dataset.

Input (manifest, Darwin Core Archive or image tree; local or object storage) -> CPU decode tasks ->
model actor pool (one GPU each when present) -> Parquet files sized for downstream engines. Exactly
one output row per input image, failures included.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass

import pyarrow.dataset as pads

from plantray import storage
from plantray.cluster import ensure_ray
from plantray.columns import ERROR, PRECISION_METADATA_KEY, RESERVED_COLUMNS
from plantray.commands.options import InferenceOptions
from plantray.config import ConfigError, field, to_json
from plantray.inference.pipeline import predict_stages
from plantray.inference.planner import Plan, plan_inference
from plantray.model.artifact import load_artifact
from plantray.sources import open_source

log = logging.getLogger(__name__)
RUN_FILE = "_plantray_run.json"


@dataclass
class ClassifyConfig(InferenceOptions):
    """Settings of ``plantray classify`` (CLI flags are generated from these fields)."""

    output: str = field("", required=True, help="output Parquet dataset directory (local or s3://...)")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")
    aggregate: str = field("none", choices=["none", "occurrence"],
                           help="also write one row per occurrence (gbifID), combining its images")


def validate(cfg: ClassifyConfig):
    """Checks everything that can be checked before work starts. Returns (artifact, input source).

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    for name in ("model", "input", "output"):
        if not getattr(cfg, name):
            raise ConfigError(f"--{name} is required")
    if cfg.top_k < 1 or cfg.decode_batch_size < 1 or cfg.rows_per_file < 1:
        raise ConfigError("--top-k, --decode-batch-size and --rows-per-file must be >= 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(f"--batch-size {cfg.batch_size} must be >= 1")
    if not 0.0 <= cfg.rollup_threshold < 1.0:
        raise ConfigError(f"--rollup-threshold {cfg.rollup_threshold} must be in [0, 1)")
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    if storage.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new location or pass "
                          "--overwrite to replace it")
    if cfg.aggregate == "occurrence" and "gbifID" not in source.columns():
        raise ConfigError("--aggregate occurrence needs a gbifID column: use a Darwin Core Archive or a "
                          "manifest with gbifID")
    return artifact, source


def build_pipeline(cfg: ClassifyConfig, artifact, source, plan: Plan, now_iso: str):
    """The lazy Ray Dataset of predictions (nothing runs until it is written) and input statistics."""
    ds, input_stats = source.dataset(reserved=RESERVED_COLUMNS)
    return predict_stages(ds, cfg, artifact, plan, now_iso), input_stats


def summarize(output: str, seconds: float) -> dict:
    """Counts rows and failures by reason by scanning only the ``error`` column of the output, and
    reads the precision the model actors ran in from the files' footers."""
    fs, path = storage.arrow_fs(output)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    reasons: collections.Counter = collections.Counter()
    rows = 0
    for batch in dataset.to_batches(columns=[ERROR]):
        rows += batch.num_rows
        reasons.update(v for v in batch.column(0).to_pylist() if v is not None)
    files = len(dataset.files)
    precision = {(f.physical_schema.metadata or {}).get(PRECISION_METADATA_KEY, b"").decode()
                 for f in dataset.get_fragments()} - {""}
    return {"images": rows, "classified": rows - sum(reasons.values()), "failed": sum(reasons.values()),
            "failures_by_reason": dict(reasons.most_common()), "files": files, "seconds": round(seconds, 2),
            "images_per_second": round(rows / seconds, 2) if seconds > 0 else None,
            "precision": ",".join(sorted(precision)) or None}


def classify(cfg: ClassifyConfig) -> dict:
    """Runs ``plantray classify``; returns the closing summary (also written to OUTPUT/_plantray_run.json).

    Raises:
        ConfigError: bad model, input or output, before any work starts.
    """
    artifact, source = validate(cfg)
    ensure_ray()
    plan = plan_inference(cfg)
    log.info("classify plan: %s", plan)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    if cfg.overwrite:
        storage.remove(cfg.output)
    start = time.perf_counter()
    ds, input_stats = build_pipeline(cfg, artifact, source, plan, now)
    fs, path = storage.arrow_fs(cfg.output)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=cfg.rows_per_file,
                     arrow_parquet_args_fn=lambda: {"compression": "zstd"})
    summary = summarize(cfg.output, time.perf_counter() - start)
    summary.update(model=cfg.model, model_sha256=artifact.sha256, input=cfg.input, output=cfg.output,
                   plan=plan.__dict__, input_stats=input_stats)
    if cfg.aggregate == "occurrence":
        summary["occurrences"] = aggregate(cfg)
    storage.write_bytes(storage.join(cfg.output, RUN_FILE),
                    json.dumps({"config": json.loads(to_json(cfg)), "summary": summary}, indent=2).encode())
    return summary


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    lines = [f"classified {summary['classified']}/{summary['images']} images in {summary['seconds']} s "
             f"({summary['images_per_second']} images/s, {summary['precision'] or 'no model run'}) -> "
             f"{summary['output']} ({summary['files']} files)"]
    for reason, count in summary["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    for reason, count in summary.get("input_stats", {}).get("skipped", {}).items():
        lines.append(f"  skipped in input: {count:>8}  {reason}")
    return "\n".join(lines)


def aggregate(cfg) -> dict:
    """Writes the per-occurrence table next to OUTPUT (``<output>_occurrences``)."""
    from plantray.darwincore.occurrences import aggregate_occurrences

    return aggregate_occurrences(cfg.output, cfg.output.rstrip("/") + "_occurrences", top_k=cfg.top_k)


CONFIG = ClassifyConfig
run = classify
