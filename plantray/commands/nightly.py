"""``plantray nightly``: classify only what the current model has not predicted yet, commit chunk by chunk.

Each run reads the input (e.g. the newest GBIF download), removes with a left-anti join (the table's done keys
broadcast to the readers while the table is small, a hash-partitioned join beyond) the images already
predicted by this model, splits the rest into chunks of about ``--commit-every`` rows (by a stable hash of the
key, :mod:`plantray.inference.chunks`), and for each chunk classifies it with the classify pipeline (decode
tasks -> model actors), writes its Parquet files into the Delta table's directory and commits them as one
Delta version (``plantray.storage.table``).

Semantics:

- **Key**: ``image_uri`` as written in the input, or ``gbifID`` + ``image_uri`` when the input has gbifID.
  "Done" means: a committed row with that key and the same weights SHA-256 and no ``error`` (failed rows
  are retried by the next run; ``--no-retry-failed`` counts them as done). A new model re-classifies all.
- ``--full`` re-classifies every input row. ``--since DATE`` re-classifies rows whose committed prediction
  (for this model) was committed before DATE (commit time, UTC), e.g. after fixing a decoding bug.
- **Run id** (default ``nightly-YYYY-MM-DD``, UTC; :mod:`plantray.commands.nightly_runs`): a run whose
  manifest ``TABLE/_runs/<run_id>/_plantray_run.json`` exists completed. Without ``--run-id``, a re-run of a
  completed day looks for work left (input keys no run committed for this model): none, a no-op saying so
  (a cron retry classifies nothing twice); some (new images, a new model), the next run of that day,
  ``nightly-YYYY-MM-DD.2``, ``.3``, ..., which says why on the console and in its run record. An explicit
  ``--run-id`` that completed is a no-op that counts the rows it left (``--strict``: exit 2 when any).
- **Chunks and resume**: each chunk commits exactly once, with the Delta application transaction
  ``(run_id, chunk)``. Re-running a run id after a crash skips its committed chunks (its rows are done
  whatever ``--full``/``--since`` say), splits the rest as its first invocation did, and continues: a crash
  loses at most the chunk in flight.
- **Races**: a chunk commits the version after the newest one it saw, never a blind append. Before that
  it checks the chunks other runs of the same model committed since this run planned: when they share no
  key with the chunk it commits; when they cover all its rows the chunk is a no-op; otherwise it raises
  :class:`~plantray.storage.table.CommitConflict` (exit ≠ 0, that chunk not committed, the next run picks
  up the rest). When another writer takes the version first it checks again. Keys are never committed twice.
- **Versions**: the manifest lists the Delta versions the run committed; ``DeltaTable(TABLE,
  version=summary["commit_seq"])`` is the table as that night left it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
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
from plantray.commands.record import utc_now, write_run_record
from plantray.config import ConfigError, check, field

log = logging.getLogger(__name__)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class NightlyConfig(InferenceOptions):
    """Settings of ``plantray nightly``: classify's model options plus the table and the run's scope."""

    table: str = field("", required=True, help="predictions table directory (local or s3://...)")
    run_id: str | None = field(None, help="run identifier; a run id that completed is not run again, only told "
                               "what it left (default: nightly-<UTC date>; a later run the same day that finds "
                               "work left runs as nightly-<UTC date>.2, .3, ...)")
    strict: bool = field(False, help="exit 2 when the --run-id given already completed and rows of this input "
                         "are left unclassified (for schedulers that must notice)")
    since: str | None = field(None, help="also re-classify rows whose prediction was committed before this "
                              "ISO date/time (UTC)")
    full: bool = field(False, help="re-classify every input row")
    retry_failed: bool = field(True, help="re-try rows committed with an error")
    join_partitions: int = field(16, help="hash partitions of the already-done join")
    broadcast_rows: int | None = field(None, help="a table of at most this many rows is joined by sending its "
                                       "done keys to every input reader instead of a hash shuffle (0: always "
                                       "shuffle; default: plantray.inference.incremental.DEFAULT_BROADCAST_ROWS, "
                                       "250000)")
    stale_hours: float = field(24.0, help="uncommitted attempts older than this are deleted at the next run")
    commit_every: int | None = field(None, help="rows per chunk: each chunk is classified and committed as its "
                                     "own table version, so a crash loses at most one chunk (default: "
                                     "plantray.inference.chunks.DEFAULT_COMMIT_EVERY, 100000)")


def validate(cfg: NightlyConfig) -> tuple:
    """Checks the configuration before any work. Returns (artifact, input source, since datetime or None).

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray import storage
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source
    from plantray.storage import table as tbl

    check_model_options(cfg)
    check_identification_options(cfg)
    check([(cfg.run_id is None or bool(_RUN_ID.match(cfg.run_id)),
            f"--run-id {cfg.run_id!r}: use letters, digits, '.', '_' or '-' (at most 128)"),
           (cfg.rows_per_file >= 1 and cfg.join_partitions >= 1, "--rows-per-file and --join-partitions must be >= 1"),
           (cfg.broadcast_rows is None or cfg.broadcast_rows >= 0,
            f"--broadcast-rows {cfg.broadcast_rows} must be >= 0"),
           (cfg.stale_hours >= 0, f"--stale-hours {cfg.stale_hours} must be >= 0"),
           (cfg.commit_every is None or cfg.commit_every >= 1, f"--commit-every {cfg.commit_every} must be >= 1")])
    since = None
    if cfg.since:
        try:
            since = dt.datetime.fromisoformat(cfg.since.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--since {cfg.since!r} is not an ISO date; write e.g. 2024-05-01 or "
                              "2024-05-01T12:00:00Z") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    storage.check_writable(cfg.table, "--table")
    with storage.named(cfg.table, "--table"):
        tbl.check_location(cfg.table)
        tbl.check_layout(cfg.table)
    check_embeddings(cfg, cfg.table, overwrite=True)  # each night adds its files to the same dataset
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    return artifact, source, since


def _with_run(batch, run_id: str, chunk: int):
    import pyarrow as pa

    from plantray.columns import RUN_CHUNK, RUN_ID
    from plantray.storage.table import KEY

    n = batch.num_rows
    return (batch.drop_columns([KEY]).append_column(RUN_ID, pa.array([run_id] * n, pa.string()))
            .append_column(RUN_CHUNK, pa.array([chunk] * n, pa.int32())))


def _before_commit(entry: dict) -> None:
    """Seam for fault-injection tests (a run dying between writing a chunk's files and committing them)."""


def _chunk_stats(cfg: NightlyConfig, run_id: str, attempt: str, chunk: int, seconds: float) -> tuple[list, dict]:
    """A chunk's files and its rows, classified and failed by reason (scanning only the ``error`` column)."""
    from plantray.inference.outputs import summarize
    from plantray.storage import table as tbl

    files = tbl.chunk_files(cfg.table, run_id, attempt, chunk)
    stats = summarize(tbl.attempt_dir(cfg.table, run_id, attempt, chunk), seconds) if files else {
        "images": 0, "classified": 0, "failed": 0, "failures_by_reason": {}, "by_rank": {}, "unknown": 0}
    return files, {"rows": stats["images"], "failed": stats["failed"],
                   "failures_by_reason": stats["failures_by_reason"], "by_rank": stats["by_rank"],
                   "unknown": stats["unknown"]}


def _file_schema(cfg: NightlyConfig, files: list[str]):
    import pyarrow.parquet as pq

    from plantray import storage

    fs, path = storage.get_fs(storage.join(cfg.table, files[0]))
    with fs.open(path, "rb") as f:
        return pq.read_schema(f).remove_metadata()


def _counts(input_rows: int, chunk_commits: list[dict]) -> dict:
    """The run's counts over every chunk it committed (this invocation and any before a crash)."""
    import collections

    reasons: collections.Counter = collections.Counter()
    for c in chunk_commits:
        reasons.update(c.get("failures_by_reason") or {})
    ranks: collections.Counter = collections.Counter()
    for c in chunk_commits:
        ranks.update(c.get("by_rank") or {})
    new = sum(c["rows"] for c in chunk_commits)
    failed = sum(c["failed"] for c in chunk_commits)
    return {"input_rows": input_rows, "new": new, "classified": new - failed, "failed": failed,
            "failures_by_reason": dict(reasons.most_common()), "by_rank": dict(ranks.most_common()),
            "unknown": sum(c.get("unknown") or 0 for c in chunk_commits), "skipped_done": input_rows - new}


def _manifest(cfg: NightlyConfig, artifact, run_id: str, attempt: str, counts: dict, versions: list[int],
              status: str, timings: dict, collected: list[str], started: str, chunks: int, files: int,
              resumed: int, after: dict) -> dict:
    from plantray import storage
    from plantray.storage import table as tbl

    summary = {"run_id": run_id, "status": status, "attempt": attempt,
               "commit_seq": versions[-1] if versions else None, "versions": versions, "chunks": chunks,
               "commit_every": cfg.commit_every, "resumed_after_chunks": resumed,
               "model": {"uri": cfg.model, "sha256": artifact.sha256, "name": artifact.card["name"],
                         "version": artifact.card["version"]},
               "input": cfg.input, "table": cfg.table, "counts": counts, "files": files,
               "timings": {k: round(v, 2) for k, v in timings.items()}, "garbage_collected": collected,
               **after}  # a later run of the day: the run it follows and why it ran
    if cfg.embeddings:
        summary["embeddings"] = embeddings_summary(cfg.embeddings)
    write_run_record(storage.join(cfg.table, tbl.RUNS, run_id), "nightly", cfg, summary, started)
    return summary


def nightly(cfg: NightlyConfig) -> dict:
    """Runs ``plantray nightly``; returns the run's summary (also in ``TABLE/_runs/<run_id>/_plantray_run.json``).

    Raises:
        ConfigError: bad model, input, table or flags, before any work starts; with ``--strict``, an explicit
            ``--run-id`` that already completed and left rows of this input unclassified.
        CommitConflict: a concurrent run committed part of a chunk's images first (that chunk not committed).
    """
    artifact, source, since = validate(cfg)
    geo = location_prior(cfg, artifact.labels.names, source.columns())
    # Ray (and with it torch) only once every check has passed: refusals stay quick and light.
    from plantray.cluster import ensure_ray
    from plantray.columns import RESERVED_COLUMNS
    from plantray.commands import nightly_runs as runs
    from plantray.inference.chunks import key_columns
    from plantray.inference.pipeline import plan_for_cluster
    from plantray.storage import table as tbl

    ensure_ray(cfg.dashboard)
    snap = tbl.snapshot(cfg.table)
    ds, _ = source.dataset(reserved=RESERVED_COLUMNS)
    columns = key_columns(source)
    if (key := snap.key()) is not None and key != columns:
        raise ConfigError(f"table {cfg.table!r} is keyed by {key} but input {cfg.input!r} gives "
                          f"{columns}; use an input with the same identifier columns or a new --table")
    choice = runs.choose(cfg.table, cfg.run_id, lambda run_id: bool(snap.run_commits(run_id)))
    start, started = time.perf_counter(), utc_now()
    rows, reason = runs.rows_to_classify(cfg, artifact.sha256, ds, columns, snap, since, choice)
    if reason is None:  # nothing to run: a completed explicit run id, or nothing left today
        return runs.noop_summary(cfg, artifact.sha256, choice, rows.count(), ds.count())
    console.headline(f"nightly run {choice.run_id}: classifying what {cfg.input} holds that the table {cfg.table} "
                     "lacks")
    if reason:
        console.say(f"  {reason}")
    plan = plan_for_cluster(cfg)
    collected = tbl.collect_garbage(cfg.table, snap, cfg.stale_hours * 3600)
    attempt = tbl.begin_attempt(cfg.table, choice.run_id)
    after = {"follows": choice.previous["run_id"], "reason": reason} if choice.later else {}
    try:
        summary = _run(cfg, artifact, ds, rows, columns, snap, plan, choice.run_id, attempt, collected, geo,
                       timing=(start, started), after=after)
    except Exception:
        # A failure we see (unlike a crash) cleans up now; GC covers the crashes. Committed chunks stay.
        tbl.end_attempt(cfg.table, choice.run_id, attempt,
                        tbl.committed_chunks(tbl.snapshot(cfg.table), choice.run_id, attempt))
        raise
    tbl.end_attempt(cfg.table, choice.run_id, attempt, set(summary.pop("_chunks", ())))
    return summary


def _run(cfg, artifact, ds, rows, columns, snap, plan, run_id, attempt, collected, geo=None, *,
         timing: tuple, after: dict) -> dict:
    from plantray.cluster import counting
    from plantray.inference.chunks import DEFAULT_COMMIT_EVERY, add_chunks, chunk_count, chunk_rows
    from plantray.storage import table as tbl

    (start, started), timings = timing, {"classify_s": 0.0, "commit_s": 0.0}
    prior = snap.run_commits(run_id)  # chunks this run committed before a crash
    # A resumed run splits its rows exactly as its first invocation did (recorded in its first commit).
    chunks = prior[0]["chunks"] if prior else chunk_count(rows.count(), cfg.commit_every or DEFAULT_COMMIT_EVERY)
    resumed = snap.chunks_done(run_id)
    rows = add_chunks(rows, columns, chunks).materialize()
    timings["plan_s"] = time.perf_counter() - start
    done, files = list(prior), 0
    with console.Progress("classifying", total=None if resumed else rows.count()) as line:
        for chunk in range(resumed, chunks):
            with counting(line) as counter:
                committed = _run_chunk(cfg, artifact, chunk_rows(rows, chunk), snap, plan, run_id, attempt, chunk,
                                       chunks, columns, started, timings, geo, counter)
            if committed is not None:
                done.append(committed)
                files += len(committed["files"])
    counts = _counts(ds.count(), [c for c in done if c.get("status", "committed") == "committed"])
    counts["min_confidence"] = str(cfg.min_confidence)
    if geo is not None and files:  # the location prior's counts over this attempt's chunks
        counts["prior"] = prior_summary(geo, tbl.attempt_dir(cfg.table, run_id, attempt))
    counts["new_this_attempt"] = sum(c["rows"] for c in done if c.get("attempt") == attempt
                                     and c.get("status") == "committed")
    versions = [c["version"] for c in done if c.get("status", "committed") == "committed"]
    status = "committed" if versions else "noop"
    if status == "noop" and snap.table is None:
        return {"run_id": run_id, "status": "noop", "commit_seq": None, "table": cfg.table, "_chunks": []}
    summary = _manifest(cfg, artifact, run_id, attempt, counts, versions, status, timings, collected, started,
                        chunks, files, resumed, after)
    return {**summary, "_chunks": [c["chunk"] for c in done if c.get("attempt") == attempt]}


def _run_chunk(cfg, artifact, part, snap, plan, run_id, attempt, chunk, chunks, columns, started,
               timings, geo=None, counter=None) -> dict | None:
    """Classifies, writes and commits one chunk. Returns its commit's metadata (None: nothing to commit)."""
    import pyarrow as pa

    from plantray.inference.incremental import commit_chunk
    from plantray.inference.outputs import write_predictions
    from plantray.storage import table as tbl

    start = time.perf_counter()
    preds = identifications(part, cfg, artifact, plan, started, geo,
                            chunk_embeddings(cfg, run_id, f"chunk-{chunk:06d}"), counter)
    preds = preds.map_batches(_with_run, fn_args=(run_id, chunk), batch_format="pyarrow", zero_copy_batch=True)
    write_predictions(preds, tbl.attempt_dir(cfg.table, run_id, attempt, chunk), cfg.rows_per_file)
    files, stats = _chunk_stats(cfg, run_id, attempt, chunk, time.perf_counter() - start)
    timings["classify_s"] += time.perf_counter() - start
    current = tbl.snapshot(cfg.table) if not files else None
    if not files and current.table is None:
        return None  # nothing to commit and no table to record progress in
    schema = _file_schema(cfg, files) if files else pa.schema(current.table.schema().to_arrow())
    meta = {"run_id": run_id, "attempt": attempt, "chunk": chunk, "chunks": chunks, "model_uri": cfg.model,
            "model_sha256": artifact.sha256, "key": columns, "input": cfg.input, **stats}
    _before_commit({**meta, "files": files})
    start = time.perf_counter()
    status, version = commit_chunk(cfg.table, snap.version, files, schema, meta, cfg.join_partitions)
    timings["commit_s"] += time.perf_counter() - start
    if status == "noop":
        log.info("run %s chunk %d: its images were committed meanwhile (version %d)", run_id, chunk, version)
    return {**meta, "files": files, "version": version, "status": status}


def _span(versions: list[int]) -> str:
    return f"{versions[0]}-{versions[-1]}" if len(versions) > 1 else str(versions[0]) if versions else "(none)"


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    from plantray.commands.classify import unknown_lines

    if summary["status"] == "noop" and "counts" not in summary:
        return summary.get("message") or f"run {summary['run_id']}: nothing to do"
    c = summary["counts"]
    versions = summary.get("versions") or ([summary["commit_seq"]] if summary["commit_seq"] is not None else [])
    committed = f"committed table versions {_span(versions)}" if versions else "committed nothing"
    lines = [summary["reason"]] if summary.get("reason") else []
    lines += [f"run {summary['run_id']}: {committed} to {summary['table']}: "
             f"{c['new']} new of {c['input_rows']} input rows ({c['skipped_done']} already done, "
             f"{c['failed']} failed) in {summary['timings']['classify_s']} s"]
    for reason, count in c["failures_by_reason"].items():
        lines.append(f"  failed: {count:>8}  {reason}")
    lines += prior_lines(c.get("prior"))
    return "\n".join(lines + unknown_lines(c))


CONFIG = NightlyConfig
run = nightly
