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
import ray

from plantray import io as pio
from plantray import runtime
from plantray.config import ConfigError, field, to_json
from plantray.decode import ERROR, decode_batch
from plantray.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, EvalPreset
from plantray.inputs import read_input
from plantray.model import load_artifact
from plantray.predict import PRECISION_METADATA_KEY, Predictor

log = logging.getLogger(__name__)
RUN_FILE = "_plantray_run.json"
# Output columns an input column must not shadow: such input columns are renamed ``input_<name>``.
RESERVED_COLUMNS = frozenset({
    "scientificName", "confidence", "topk_scientificName", "topk_confidence", "genus", "family",
    "identifiedBy", "dateIdentified", "identificationVerificationStatus", "model_name", "model_version",
    "model_sha256", ERROR, "taxonRank", "identificationID", "identificationRemarks", "identificationType",
    "kingdom"})


@dataclass
class InferenceOptions:
    """What every inference job (classify, nightly) shares: model, input, and how to run the model."""

    model: str = field("", required=True, help="plantray model directory (local or s3://...)")
    input: str = field("", required=True, help="manifest (.parquet/.csv with image_uri), Darwin Core "
                       "Archive (.zip or dir with meta.xml), or a directory/prefix of images")
    top_k: int = field(5, help="ranked names and probabilities kept per image")
    batch_size: int | None = field(None, help="images per model forward (default: 256 on GPU, 16 on CPU)")
    num_actors: int | None = field(None, help="model actors (default: one per GPU, else CPUs/threads)")
    threads_per_actor: int | None = field(None, help="torch threads per CPU actor (default: a node's CPUs, <= 8)")
    decode_batch_size: int = field(16, help="images per decode task batch")
    device: str = field("auto", choices=["auto", "cpu", "gpu"], help="where the model runs")
    precision: str = field("auto", choices=["auto", "fp32", "bf16"],
                           help=runtime.PRECISION_HELP)
    rows_per_file: int = field(200_000, help="minimum rows per output Parquet file")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images become 'image too large' rows")
    max_bytes: int = field(DEFAULT_MAX_BYTES, help="larger files become 'file too large' rows")
    rollup_threshold: float = field(0.0, help="below this top-1 confidence, report the genus/family whose "
                                    "summed probability clears it (0 = off)")
    image_cache: str | None = field(None, help="URI prefix caching HTTP-fetched image bytes for re-runs")
    http_timeout: float = field(20.0, help="seconds before an HTTP fetch times out")
    http_per_host: int = field(4, help="concurrent fetches per host and process")


@dataclass
class ClassifyConfig(InferenceOptions):
    """Settings of ``plantray classify`` (CLI flags are generated from these fields)."""

    output: str = field("", required=True, help="output Parquet dataset directory (local or s3://...)")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")
    aggregate: str = field("none", choices=["none", "occurrence"],
                           help="also write one row per occurrence (gbifID), combining its images")


def validate(cfg: ClassifyConfig):
    """Checks everything that can be checked before work starts. Returns (artifact, input kind).

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
    kind = pio.detect_input(cfg.input)
    if pio.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new location or pass "
                          "--overwrite to replace it")
    if cfg.aggregate == "occurrence" and kind.kind == "images":
        raise ConfigError("--aggregate occurrence needs a gbifID column: use a Darwin Core Archive or a "
                          "manifest with gbifID")
    return artifact, kind


def build_pipeline(cfg: ClassifyConfig, artifact, kind, plan: runtime.Plan, now_iso: str):
    """The lazy Ray Dataset of predictions (nothing runs until it is written) and input statistics."""
    ds, input_stats = read_input(kind, reserved=RESERVED_COLUMNS)
    return predict_stages(ds, cfg, artifact, plan, now_iso), input_stats


def predict_stages(ds, cfg, artifact, plan: runtime.Plan, now_iso: str):
    """Decode tasks then model actors over rows with ``image_uri``/``_source`` (classify and nightly).

    ``cfg`` is any config with classify's model/decode/fetch fields.
    """
    preset = EvalPreset.from_dict(artifact.card["input"], max_pixels=cfg.max_pixels)
    ds = ds.map_batches(decode_batch, fn_args=(preset, cfg.max_bytes, runtime.fetch_config(cfg)),
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


def summarize(output: str, seconds: float) -> dict:
    """Counts rows and failures by reason by scanning only the ``error`` column of the output, and
    reads the precision the model actors ran in from the files' footers."""
    fs, path = pio.arrow_fs(output)
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
    artifact, kind = validate(cfg)
    runtime.ensure_ray()
    plan = runtime.plan_inference(cfg)
    log.info("classify plan: %s", plan)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    if cfg.overwrite:
        pio.remove(cfg.output)
    start = time.perf_counter()
    ds, input_stats = build_pipeline(cfg, artifact, kind, plan, now)
    fs, path = pio.arrow_fs(cfg.output)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=cfg.rows_per_file,
                     arrow_parquet_args_fn=lambda: {"compression": "zstd"})
    summary = summarize(cfg.output, time.perf_counter() - start)
    summary.update(model=cfg.model, model_sha256=artifact.sha256, input=cfg.input, output=cfg.output,
                   plan=plan.__dict__, input_stats=input_stats)
    if cfg.aggregate == "occurrence":
        summary["occurrences"] = runtime.aggregate(cfg)
    pio.write_bytes(pio.join(cfg.output, RUN_FILE),
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

