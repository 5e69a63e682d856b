"""``plantray classify``: stream images through the model actors into a Parquet dataset, chunk by chunk.

Input (manifest, Darwin Core Archive or image tree; local or object storage) -> the loader's CPU tasks
-> model actor pool (one GPU each when present) -> Parquet files sized for downstream engines. Exactly
one output row per input image, failures included.

The input rows (metadata, no pixels) are read once and split into chunks of about ``--commit-every`` rows
by a stable hash of their key (:mod:`plantray.inference.chunks`); each chunk runs the pipeline into a
staging area and is then published with a marker (:mod:`plantray.inference.outputs`), so a killed run
loses at most the chunk in flight and ``--resume`` continues it. ``_SUCCESS`` is written last. Heavy
modules (torch, Ray) are imported inside the functions, so ``plantray --help`` stays instant.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from plantray import console
from plantray.commands.options import (
    InferenceOptions,
    check_embeddings,
    check_identification_options,
    check_model_options,
    chunk_embeddings,
    embeddings_summary,
    identifications,
    location_prior,
    prior_lines,
    prior_summary,
)
from plantray.commands.record import RUN_RECORD, check_replaceable, mark_output, utc_now, write_run_record
from plantray.config import ConfigError, check, field
from plantray.inference.chunks import DEFAULT_COMMIT_EVERY

log = logging.getLogger(__name__)


@dataclass
class ClassifyConfig(InferenceOptions):
    """Settings of ``plantray classify`` (CLI flags are generated from these fields)."""

    output: str = field("", required=True, help="output Parquet dataset directory (local or s3://...)")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")
    resume: bool = field(False, help="continue a killed classify into the same OUTPUT (same input and model), "
                         "skipping its committed chunks")
    commit_every: int = field(DEFAULT_COMMIT_EVERY, help="rows per chunk: each chunk is published as a whole, "
                              "so a killed run loses at most one chunk's work")
    aggregate: str = field("none", choices=["none", "occurrence"],
                           help="also write one row per occurrence (gbifID), combining its images")


def validate(cfg: ClassifyConfig):
    """Checks everything that can be checked before Ray starts. Returns (artifact, input source).

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray.columns import GBIF_ID
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source

    check_model_options(cfg)
    check_identification_options(cfg)
    check([(cfg.rows_per_file >= 1, f"--rows-per-file {cfg.rows_per_file} must be >= 1"),
           (cfg.commit_every >= 1, f"--commit-every {cfg.commit_every} must be >= 1"),
           (not (cfg.resume and cfg.overwrite), "--resume and --overwrite exclude each other: --resume continues "
            "OUTPUT's run, --overwrite deletes it")])
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    _check_output(cfg)
    check_embeddings(cfg, cfg.output, cfg.overwrite or cfg.resume)
    if cfg.overwrite and cfg.embeddings:
        check_replaceable(cfg.embeddings, "--embeddings")
    if cfg.aggregate == "occurrence":
        check_replaceable(occurrences_uri(cfg), "--aggregate occurrence's output")
    if cfg.aggregate == "occurrence" and GBIF_ID not in source.columns():
        raise ConfigError("--aggregate occurrence needs a gbifID column: use a Darwin Core Archive or a "
                          "manifest with gbifID")
    if cfg.resume:
        _check_resumable(cfg, artifact, source)
    return artifact, source


def _check_output(cfg: ClassifyConfig) -> None:
    """Refuses an OUTPUT that holds data unless ``--overwrite`` or (for a run's own OUTPUT) ``--resume``."""
    from plantray import storage
    from plantray.inference.outputs import PROGRESS, completion

    storage.check_writable(cfg.output, "--output")
    if cfg.overwrite:
        check_replaceable(cfg.output, "--output")
    if cfg.overwrite or not storage.holds_data(cfg.output):
        if cfg.resume:
            raise ConfigError(f"--resume: --output {cfg.output!r} holds no classify run to continue; run "
                              "without --resume")
        return
    state = completion(cfg.output)
    if cfg.resume and state is None:
        raise ConfigError(f"--resume: --output {cfg.output!r} has no {PROGRESS}, so it was not made by a "
                          "chunked plantray classify; pass --overwrite to replace it or choose a new --output")
    if not cfg.resume:
        partial = state is not None and not storage.exists(storage.join(cfg.output, RUN_RECORD))
        raise ConfigError(f"--output {cfg.output!r} holds a partial classify run ({state[1]} of {state[2]} "
                          "chunks committed); pass --resume to continue it or --overwrite to start over"
                          if partial else f"--output {cfg.output!r} already holds data; choose a new location "
                          "or pass --overwrite to replace it")


def _plan(cfg: ClassifyConfig, artifact, source, rows: int | None) -> dict:
    """What a resumed run must match: input, model, key and chunking (``rows``: None when not yet read)."""
    from plantray.inference.chunks import chunk_count, key_columns

    plan = {"input": cfg.input, "model_sha256": artifact.sha256, "key_columns": key_columns(source),
            "commit_every": cfg.commit_every}
    if rows is not None:
        plan.update(input_rows=rows, chunks=chunk_count(rows, cfg.commit_every))
    return plan


def _check_resumable(cfg: ClassifyConfig, artifact, source) -> None:
    """Refuses ``--resume`` into an OUTPUT whose recorded plan differs (before reading the input)."""
    from plantray.inference.outputs import read_progress

    recorded = read_progress(cfg.output)
    wanted = _plan(cfg, artifact, source, None)
    differs = {k: (recorded.get(k), v) for k, v in wanted.items() if recorded.get(k) != v}
    if differs:
        detail = "; ".join(f"{k}: OUTPUT has {old!r}, this run {new!r}" for k, (old, new) in differs.items())
        raise ConfigError(f"--resume: --output {cfg.output!r} was made by a different run ({detail}); resume with "
                          "the same flags, or pass --overwrite or choose a new --output to start over")


def classify(cfg: ClassifyConfig) -> dict:
    """Runs ``plantray classify``; returns the closing summary (also in OUTPUT/_plantray_run.json).

    Raises:
        ConfigError: bad model, input or output (or a ``--resume`` that cannot continue), before any work.
    """
    from plantray import storage

    artifact, source = validate(cfg)
    prior = location_prior(cfg, artifact.labels.names, source.columns())
    # Ray (and with it torch) only once every check has passed: refusals stay quick and light.
    from plantray.cluster import ensure_ray
    from plantray.inference.outputs import mark_success, summarize
    from plantray.inference.pipeline import plan_for_cluster

    if cfg.resume and storage.exists(storage.join(cfg.output, RUN_RECORD)):
        log.info("classify into %s already finished: nothing to resume", cfg.output)
        mark_success(cfg.output)  # a run killed between its record and _SUCCESS
        return _finished_summary(cfg.output)
    console.headline(f"classifying {cfg.input} with model {artifact.card['name']} into {cfg.output}")
    ensure_ray(cfg.dashboard)
    plan = plan_for_cluster(cfg)
    log.info("classify plan: %s", plan)
    console.say(f"  {plan.describe()}")
    started = utc_now()
    if cfg.overwrite:  # plantray's own outputs only (checked by validate)
        storage.remove(cfg.output)
        if cfg.embeddings:
            storage.remove(cfg.embeddings)
    if not cfg.resume:
        mark_output(cfg.output, "classify")
        if cfg.embeddings:
            mark_output(cfg.embeddings, "classify")
    start = time.perf_counter()
    console.say("  reading the input rows")
    rows, progress, input_stats = read_input(cfg, artifact, source)
    resumed = run_chunks(cfg, artifact, plan, rows, progress, started, prior)
    summary = summarize(cfg.output, time.perf_counter() - start)
    summary.update(model=cfg.model, model_sha256=artifact.sha256, input=cfg.input, output=cfg.output,
                   plan=plan.__dict__, input_stats=input_stats, chunks=progress["chunks"], resumed=resumed)
    if prior is not None:
        summary["prior"] = prior_summary(prior, cfg.output)
    if cfg.embeddings:
        summary["embeddings"] = embeddings_summary(cfg.embeddings)
    if cfg.aggregate == "occurrence":
        summary["occurrences"] = aggregate(cfg)
    write_run_record(cfg.output, "classify", cfg, summary, started)
    mark_success(cfg.output)
    return summary


def read_input(cfg: ClassifyConfig, artifact, source):
    """Reads the input rows once (metadata, no pixels), each with its chunk, and records or checks the plan.

    Returns:
        (materialized rows with ``_chunk``, the plan recorded in OUTPUT, input statistics).
    Raises:
        ConfigError: ``--resume`` and the input's row count differs from the one recorded (it changed).
    """
    from plantray.columns import RESERVED_COLUMNS
    from plantray.inference.chunks import add_chunks
    from plantray.inference.outputs import read_progress, write_progress

    ds, input_stats = source.dataset(reserved=RESERVED_COLUMNS)
    ds = ds.materialize()  # read once: counting and the chunks' filters then reuse these blocks
    progress = _plan(cfg, artifact, source, ds.count())
    if cfg.resume:
        recorded = read_progress(cfg.output)
        if recorded["input_rows"] != progress["input_rows"]:
            raise ConfigError(f"--resume: input {cfg.input!r} now has {progress['input_rows']} rows, the run in "
                              f"--output {cfg.output!r} had {recorded['input_rows']}: the input changed; pass "
                              "--overwrite or choose a new --output")
    else:
        write_progress(cfg.output, progress)
    return add_chunks(ds, progress["key_columns"], progress["chunks"]).materialize(), progress, input_stats


def run_chunks(cfg: ClassifyConfig, artifact, plan, rows, progress: dict, started: str, prior=None) -> dict:
    """Runs and publishes every chunk not yet committed, one after another (``prior``: a location prior).

    Returns:
        ``{"chunks_committed_before", "rows_committed_before", "discarded_files"}`` (zeros for a fresh run).
    """
    from plantray.cluster import counting
    from plantray.inference import outputs
    from plantray.inference.chunks import chunk_rows

    discarded = outputs.discard_uncommitted(cfg.output) if cfg.resume else []
    done = outputs.committed_chunks(cfg.output)
    before = _committed_rows(cfg.output, done)
    chunks = progress["chunks"]
    with console.Progress("classifying", total=progress["input_rows"], initial=before) as line:
        for chunk in range(chunks):
            if chunk in done:
                continue
            with counting(line) as counter:  # rows counted by the model actors as they finish batches
                preds = identifications(chunk_rows(rows, chunk), cfg, artifact, plan, started, prior,
                                        chunk_embeddings(cfg, f"chunk-{chunk:06d}"), counter)
                outputs.write_predictions(preds, outputs.staging_dir(cfg.output, chunk), cfg.rows_per_file)
            files = outputs.publish_chunk(cfg.output, chunk)
            line.update(note=f"chunk {chunk + 1}/{chunks} committed" if chunks > 1 else None)
            log.info("classify: chunk %d/%d committed (%d files)", chunk + 1, chunks, len(files))
    return {"chunks_committed_before": len(done), "rows_committed_before": before,
            "discarded_files": len(discarded)}


def _committed_rows(output: str, done: dict) -> int:
    """Rows in the committed chunks' files, from their Parquet footers."""
    import pyarrow.parquet as pq

    from plantray import storage

    fs, _ = storage.arrow_fs(output)
    paths = [storage.arrow_fs(storage.join(output, name))[1] for files in done.values() for name in files]
    return sum(pq.ParquetFile(fs.open_input_file(p)).metadata.num_rows for p in paths)


def _finished_summary(output: str) -> dict:
    """The summary of a classify that already finished (from its run record)."""
    import json

    from plantray import storage

    return json.loads(storage.read_bytes(storage.join(output, RUN_RECORD)))["summary"]


def aggregate(cfg: ClassifyConfig) -> dict:
    """Writes the per-occurrence table next to OUTPUT (``<output>_occurrences``), replacing a cut-short one."""
    from plantray import storage
    from plantray.darwincore.occurrences import aggregate_occurrences

    out = occurrences_uri(cfg)
    storage.remove(out)  # classify's own (validate checked); a run killed while aggregating left part of it
    mark_output(out, "classify")
    return aggregate_occurrences(cfg.output, out, top_k=cfg.top_k, min_confidence=cfg.min_confidence)


def occurrences_uri(cfg: ClassifyConfig) -> str:
    """Where ``--aggregate occurrence`` writes: beside OUTPUT, ``<output>_occurrences``."""
    return cfg.output.rstrip("/") + "_occurrences"


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    lines = [f"classified {summary['classified']}/{summary['images']} images in {summary['seconds']} s "
             f"({summary['images_per_second']} images/s, {summary['precision'] or 'no model run'}) -> "
             f"{summary['output']} ({summary['files']} files)"]
    resumed = summary.get("resumed") or {}
    if resumed.get("chunks_committed_before"):
        lines.append(f"  resumed: {resumed['chunks_committed_before']} of {summary['chunks']} chunks "
                     f"({resumed['rows_committed_before']} rows) were committed before; ran the rest")
    for reason, count in summary["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    if emb := summary.get("embeddings"):
        lines.append(f"  embeddings: {emb['rows']} vectors -> {emb['uri']} ({emb['files']} files)")
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
