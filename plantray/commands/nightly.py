"""``plantray nightly``: classify only what the current model has not predicted yet, commit atomically.

Each run reads the input (e.g. the newest GBIF download), removes with a distributed left-anti join the
images already predicted by this model, classifies the rest with the classify pipeline (decode tasks ->
model actors), writes them as one attempt of the table (``plantray.table``) and commits that attempt with
one exclusive log create.

Semantics:

- **Key**: ``image_uri`` as written in the input, or ``gbifID`` + ``image_uri`` when the input has gbifID.
  "Done" means: a committed row with that key and the same weights SHA-256 and no ``error`` (failed rows
  are retried by the next run; ``--no-retry-failed`` counts them as done). A new model re-classifies all.
- ``--full`` re-classifies every input row. ``--since DATE`` re-classifies rows whose committed prediction
  (for this model) was committed before DATE (commit time, UTC), e.g. after fixing a decoding bug.
- **Run id** (default ``nightly-YYYY-MM-DD``, UTC): a run id already in the log makes the run a no-op, so a
  cron retry after a crash finishes the night's work once.
- **Races**: the run plans against log entry ``n`` and commits ``n+1``. If another run committed first, this
  run re-reads the log: when the newcomers share no key with its rows it commits on the next number; when
  they cover all its rows it ends as a no-op; otherwise it raises :class:`~plantray.table.CommitConflict`
  (exit ≠ 0, nothing committed, the next run picks up the rest). Keys are never committed twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
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
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class NightlyConfig(InferenceOptions):
    """Settings of ``plantray nightly``: classify's model options plus the table and the run's scope."""

    table: str = field("", required=True, help="predictions table directory (local or s3://...)")
    run_id: str | None = field(None, help="run identifier; a committed run id makes the run a no-op "
                               "(default: nightly-<UTC date>)")
    since: str | None = field(None, help="also re-classify rows whose prediction was committed before this "
                              "ISO date/time (UTC)")
    full: bool = field(False, help="re-classify every input row")
    retry_failed: bool = field(True, help="re-try rows committed with an error")
    join_partitions: int = field(16, help="hash partitions of the already-done join")
    stale_hours: float = field(24.0, help="uncommitted attempts older than this are deleted at the next run")


def validate(cfg: NightlyConfig) -> tuple:
    """Checks the configuration before any work. Returns (artifact, input source, since datetime or None).

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source
    from plantray.storage import table as tbl

    check_model_options(cfg)
    check([(cfg.run_id is None or bool(_RUN_ID.match(cfg.run_id)),
            f"--run-id {cfg.run_id!r}: use letters, digits, '.', '_' or '-' (at most 128)"),
           (cfg.rows_per_file >= 1 and cfg.join_partitions >= 1, "--rows-per-file and --join-partitions must be >= 1"),
           (cfg.stale_hours >= 0, f"--stale-hours {cfg.stale_hours} must be >= 0")])
    since = None
    if cfg.since:
        try:
            since = dt.datetime.fromisoformat(cfg.since.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--since {cfg.since!r} is not an ISO date; write e.g. 2024-05-01 or "
                              "2024-05-01T12:00:00Z") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    tbl.check_location(cfg.table)
    check_embeddings(cfg, cfg.table, overwrite=True)  # each night adds its files to the same dataset
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    return artifact, source, since


def key_columns(source) -> list[str]:
    """``["gbifID", "image_uri"]`` when the input has gbifID, else ``["image_uri"]``."""
    from plantray.columns import GBIF_ID, IMAGE_URI

    return [GBIF_ID, IMAGE_URI] if GBIF_ID in source.columns() else [IMAGE_URI]


def _with_run_id(batch, run_id: str):
    import pyarrow as pa

    from plantray.storage.table import KEY

    return batch.drop_columns([KEY]).append_column("run_id", pa.array([run_id] * batch.num_rows, pa.string()))


def _before_commit(entry: dict) -> None:
    """Seam for fault-injection tests (a run dying between writing its files and committing them)."""


def _counts(cfg: NightlyConfig, run_id: str, attempt: str, input_rows: int, seconds: float) -> dict:
    """Rows written by this attempt (scanning only the ``error`` column) and rows skipped as done."""
    from plantray.inference.outputs import summarize
    from plantray.storage import table as tbl

    files = tbl.attempt_files(cfg.table, run_id, attempt)
    stats = summarize(tbl.attempt_dir(cfg.table, run_id, attempt), seconds) if files else {
        "images": 0, "classified": 0, "failed": 0, "failures_by_reason": {}}
    return {"input_rows": input_rows, "new": stats["images"], "classified": stats["classified"],
            "failed": stats["failed"], "failures_by_reason": stats["failures_by_reason"],
            "skipped_done": input_rows - stats["images"], "files": files}


def _manifest(cfg: NightlyConfig, artifact, run_id: str, attempt: str, counts: dict, committed: dict | None,
              status: str, timings: dict, collected: list[str], started: str) -> dict:
    from plantray import storage
    from plantray.storage import table as tbl

    files = counts.pop("files")
    summary = {"run_id": run_id, "status": status, "attempt": attempt,
               "commit_seq": committed["seq"] if committed else None,
               "model": {"uri": cfg.model, "sha256": artifact.sha256, "name": artifact.card["name"],
                         "version": artifact.card["version"]},
               "input": cfg.input, "table": cfg.table, "counts": counts, "files": len(files),
               "timings": {k: round(v, 2) for k, v in timings.items()}, "garbage_collected": collected}
    if cfg.embeddings:
        summary["embeddings"] = embeddings_summary(cfg.embeddings)
    write_run_record(storage.join(cfg.table, tbl.RUNS, run_id), "nightly", cfg, summary, started)
    return summary


def nightly(cfg: NightlyConfig) -> dict:
    """Runs ``plantray nightly``; returns the run's summary (also in ``TABLE/_runs/<run_id>/_plantray_run.json``).

    Raises:
        ConfigError: bad model, input, table or flags, before any work starts.
        CommitConflict: a concurrent run committed part of this run's images first (nothing committed).
    """
    from plantray.cluster import ensure_ray
    from plantray.columns import RESERVED_COLUMNS
    from plantray.inference.planner import Resources, plan_inference
    from plantray.storage import table as tbl

    artifact, source, since = validate(cfg)
    run_id = cfg.run_id or "nightly-" + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    ensure_ray(cfg.dashboard)
    entries = tbl.read_log(cfg.table)
    if (prior := tbl.find_run(entries, run_id)) is not None:
        log.info("run %s already committed as log entry %d: nothing to do", run_id, prior["seq"])
        return {"run_id": run_id, "status": "noop", "commit_seq": prior["seq"], "table": cfg.table}
    ds, _ = source.dataset(reserved=RESERVED_COLUMNS)
    columns = key_columns(source)
    if entries and entries[-1]["key"] != columns:
        raise ConfigError(f"table {cfg.table!r} is keyed by {entries[-1]['key']} but input {cfg.input!r} gives "
                          f"{columns}; use an input with the same identifier columns or a new --table")
    plan = plan_inference(cfg, Resources.of_cluster())
    collected = tbl.collect_garbage(cfg.table, entries, cfg.stale_hours * 3600)
    attempt = tbl.begin_attempt(cfg.table, run_id)
    try:
        return _run(cfg, artifact, ds, columns, entries, since, plan, run_id, attempt, collected)
    except Exception:
        # A failure we see (unlike a crash) cleans up now; GC covers the crashes.
        tbl.end_attempt(cfg.table, run_id, attempt, keep_data=bool(tbl.find_run(tbl.read_log(cfg.table), run_id)))
        raise


def _run(cfg, artifact, ds, columns, entries, since, plan, run_id, attempt, collected) -> dict:
    from plantray.inference.incremental import commit_attempt, done_entries, todo
    from plantray.inference.outputs import write_predictions
    from plantray.storage import table as tbl

    timings, start, started = {}, time.perf_counter(), utc_now()
    done = done_entries(entries, artifact.sha256, cfg.full, since)
    rows = todo(ds, cfg.table, columns, done, cfg.retry_failed, cfg.join_partitions)
    preds = identifications(rows, cfg, artifact, plan, started)
    preds = preds.map_batches(_with_run_id, fn_args=(run_id,), batch_format="pyarrow", zero_copy_batch=True)
    write_predictions(preds, tbl.attempt_dir(cfg.table, run_id, attempt), cfg.rows_per_file)
    timings["classify_s"] = time.perf_counter() - start
    counts = _counts(cfg, run_id, attempt, ds.count(), timings["classify_s"])
    entry = {"run_id": run_id, "attempt": attempt, "model_uri": cfg.model, "model_sha256": artifact.sha256,
             "key": columns, "files": counts["files"], "rows": counts["new"], "failed": counts["failed"],
             "input": cfg.input}
    _before_commit(entry)
    start = time.perf_counter()
    status, committed = commit_attempt(cfg.table, entry, entries, cfg.join_partitions)
    timings["commit_s"] = time.perf_counter() - start
    tbl.end_attempt(cfg.table, run_id, attempt, keep_data=status == "committed")
    if status == "noop":
        log.info("run %s: its images were committed by run %s meanwhile", run_id, committed["run_id"])
        return {"run_id": run_id, "status": "noop", "commit_seq": committed["seq"], "table": cfg.table}
    return _manifest(cfg, artifact, run_id, attempt, counts, committed, status, timings, collected, started)


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    if summary["status"] == "noop":
        return f"run {summary['run_id']}: nothing to do (covered by log entry {summary['commit_seq']})"
    c = summary["counts"]
    lines = [f"run {summary['run_id']}: committed log entry {summary['commit_seq']} to {summary['table']}: "
             f"{c['new']} new of {c['input_rows']} input rows ({c['skipped_done']} already done, "
             f"{c['failed']} failed) in {summary['timings']['classify_s']} s"]
    for reason, count in c["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    return "\n".join(lines)


CONFIG = NightlyConfig
run = nightly
