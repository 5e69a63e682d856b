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
import json
import logging
import re
import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from plantray import storage
from plantray.cluster import ensure_ray
from plantray.columns import ERROR, RESERVED_COLUMNS
from plantray.commands.classify import summarize
from plantray.commands.options import InferenceOptions
from plantray.config import ConfigError, field, to_json
from plantray.inference.pipeline import predict_stages
from plantray.inference.planner import Plan, plan_inference
from plantray.model.artifact import load_artifact
from plantray.sources import Source, open_source
from plantray.storage import table as tbl

log = logging.getLogger(__name__)
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_COMMIT_TRIES = 3


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
    for name in ("model", "input", "table"):
        if not getattr(cfg, name):
            raise ConfigError(f"--{name} is required")
    if cfg.run_id is not None and not _RUN_ID.match(cfg.run_id):
        raise ConfigError(f"--run-id {cfg.run_id!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    if min(cfg.top_k, cfg.decode_batch_size, cfg.rows_per_file, cfg.join_partitions) < 1 or cfg.stale_hours < 0:
        raise ConfigError("--top-k, --decode-batch-size, --rows-per-file, --join-partitions must be >= 1 and "
                          "--stale-hours >= 0")
    since = None
    if cfg.since:
        try:
            since = dt.datetime.fromisoformat(cfg.since.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"--since {cfg.since!r} is not an ISO date; write e.g. 2024-05-01 or "
                              "2024-05-01T12:00:00Z") from None
        since = since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)
    tbl.check_location(cfg.table)
    artifact = load_artifact(cfg.model)
    source = open_source(cfg.input)
    source.check()
    return artifact, source, since


def key_columns(source: Source) -> list[str]:
    """``["gbifID", "image_uri"]`` when the input has gbifID, else ``["image_uri"]``."""
    return ["gbifID", "image_uri"] if "gbifID" in source.columns() else ["image_uri"]


def _committed_at(entry: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(entry["committed_at"].replace("Z", "+00:00"))


def done_entries(entries: list[dict], sha: str, full: bool, since: dt.datetime | None) -> list[dict]:
    """The committed entries whose rows count as already predicted by the model with weights ``sha``."""
    if full:
        return []
    return [e for e in entries if e["model_sha256"] == sha and (since is None or _committed_at(e) >= since)]


def _done_keys(batch: pa.Table, columns: list[str], retry_failed: bool) -> pa.Table:
    if retry_failed:
        batch = batch.filter(batch.column(ERROR).is_null())
    return pa.table({tbl.KEY: tbl.key_array(batch, columns)})


def todo(ds: ray.data.Dataset, cfg: NightlyConfig, columns: list[str], done: list[dict]) -> ray.data.Dataset:
    """Input rows (with ``_key``) not yet predicted: a distributed left-anti join, nothing collected."""
    ds = ds.map_batches(lambda b: b.append_column(tbl.KEY, tbl.key_array(b, columns)), batch_format="pyarrow",
                        zero_copy_batch=True)
    keys = tbl.read_entries(cfg.table, done, columns=[*columns, ERROR])
    if keys is None:
        return ds
    keys = keys.map_batches(_done_keys, fn_args=(columns, cfg.retry_failed), batch_format="pyarrow")
    # Materialised (in the object store, spilling to disk; metadata only, no pixels) before the model stage:
    # the join's shuffle tasks take a whole CPU each and, streamed into the actor pool, could wait forever
    # for CPUs the model actors hold.
    return ds.join(keys, "left_anti", num_partitions=cfg.join_partitions, on=(tbl.KEY,)).materialize()


def _finish(batch: pa.Table, run_id: str) -> pa.Table:
    return batch.drop_columns([tbl.KEY]).append_column("run_id", pa.array([run_id] * batch.num_rows, pa.string()))


def predictions(ds: ray.data.Dataset, cfg: NightlyConfig, artifact, plan: Plan, now: str,
                run_id: str) -> ray.data.Dataset:
    """The classify pipeline (decode tasks -> model actors) over ``ds``, plus a ``run_id`` column."""
    ds = predict_stages(ds, cfg, artifact, plan, now)
    return ds.map_batches(_finish, fn_args=(run_id,), batch_format="pyarrow", zero_copy_batch=True)


def _before_commit(entry: dict) -> None:
    """Seam for fault-injection tests (a run dying between writing its files and committing them)."""


def _overlap(cfg: NightlyConfig, staged: list[str], newcomers: list[dict], columns: list[str]) -> tuple[int, int]:
    """(rows of this attempt, of which keys also in ``newcomers`` with the same model), by a semi-join."""
    mine = tbl.read_entries(cfg.table, [{"seq": 0, "files": staged}], columns=columns)
    if mine is None:
        return 0, 0
    mine = mine.map_batches(lambda b: pa.table({tbl.KEY: tbl.key_array(b, columns)}), batch_format="pyarrow")
    theirs = tbl.read_entries(cfg.table, newcomers, columns=columns)
    if theirs is None:
        return mine.count(), 0
    theirs = theirs.map_batches(lambda b: pa.table({tbl.KEY: tbl.key_array(b, columns)}), batch_format="pyarrow")
    both = mine.join(theirs, "left_semi", num_partitions=cfg.join_partitions, on=(tbl.KEY,))
    return mine.count(), both.count()


def commit_attempt(cfg: NightlyConfig, entry: dict, planned: list[dict]) -> tuple[str, dict | None]:
    """Commits ``entry`` after the log ``planned`` against, re-checking on races.

    Returns:
        ("committed", entry) or ("noop", the entry that already covers this run).
    Raises:
        CommitConflict: another run committed some (not all) of this run's keys first.
    """
    seen = planned
    for _ in range(_COMMIT_TRIES):
        try:
            return "committed", tbl.commit(cfg.table, tbl.next_seq(seen), entry)
        except tbl.CommitConflict:
            now = tbl.read_log(cfg.table)
        if (mine := tbl.find_run(now, entry["run_id"])) is not None:
            return "noop", mine
        newcomers = [e for e in now[len(seen):] if e["model_sha256"] == entry["model_sha256"]]
        rows, shared = _overlap(cfg, entry["files"], newcomers, entry["key"])
        if rows and shared == rows:
            return "noop", newcomers[-1]
        if shared:
            raise tbl.CommitConflict(f"runs {[e['run_id'] for e in newcomers]} committed {shared} of the "
                                     f"{rows} images of run {entry['run_id']} first; nothing was committed, "
                                     "run again to classify the rest")
        seen = now
    raise tbl.CommitConflict(f"run {entry['run_id']}: the log kept moving; nothing was committed, run again")


def _counts(cfg: NightlyConfig, run_id: str, attempt: str, input_rows: int, seconds: float) -> dict:
    """Rows written by this attempt (scanning only the ``error`` column) and rows skipped as done."""
    files = tbl.attempt_files(cfg.table, run_id, attempt)
    stats = summarize(tbl.attempt_dir(cfg.table, run_id, attempt), seconds) if files else {
        "images": 0, "classified": 0, "failed": 0, "failures_by_reason": {}}
    return {"input_rows": input_rows, "new": stats["images"], "classified": stats["classified"],
            "failed": stats["failed"], "failures_by_reason": stats["failures_by_reason"],
            "skipped_done": input_rows - stats["images"], "files": files}


def _manifest(cfg: NightlyConfig, artifact, run_id: str, attempt: str, counts: dict, committed: dict | None,
              status: str, timings: dict, collected: list[str]) -> dict:
    files = counts.pop("files")
    summary = {"run_id": run_id, "status": status, "attempt": attempt,
               "commit_seq": committed["seq"] if committed else None,
               "model": {"uri": cfg.model, "sha256": artifact.sha256, "name": artifact.card["name"],
                         "version": artifact.card["version"]},
               "input": cfg.input, "table": cfg.table, "counts": counts, "files": len(files),
               "timings": {k: round(v, 2) for k, v in timings.items()}, "garbage_collected": collected}
    storage.write_bytes(storage.join(cfg.table, tbl.RUNS, f"{run_id}.json"),
                    json.dumps({**summary, "config": json.loads(to_json(cfg))}, indent=2).encode())
    return summary


def nightly(cfg: NightlyConfig) -> dict:
    """Runs ``plantray nightly``; returns the run manifest (also written to ``TABLE/_runs/<run_id>.json``).

    Raises:
        ConfigError: bad model, input, table or flags, before any work starts.
        CommitConflict: a concurrent run committed part of this run's images first (nothing committed).
    """
    artifact, source, since = validate(cfg)
    run_id = cfg.run_id or "nightly-" + dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    ensure_ray()
    entries = tbl.read_log(cfg.table)
    if (prior := tbl.find_run(entries, run_id)) is not None:
        log.info("run %s already committed as log entry %d: nothing to do", run_id, prior["seq"])
        return {"run_id": run_id, "status": "noop", "commit_seq": prior["seq"], "table": cfg.table}
    ds, _ = source.dataset(reserved=RESERVED_COLUMNS)
    columns = key_columns(source)
    if entries and entries[-1]["key"] != columns:
        raise ConfigError(f"table {cfg.table!r} is keyed by {entries[-1]['key']} but input {cfg.input!r} gives "
                          f"{columns}; use an input with the same identifier columns or a new --table")
    plan = plan_inference(cfg)
    collected = tbl.collect_garbage(cfg.table, entries, cfg.stale_hours * 3600)
    attempt = tbl.begin_attempt(cfg.table, run_id)
    try:
        return _run(cfg, artifact, ds, columns, entries, since, plan, run_id, attempt, collected)
    except Exception:
        # A failure we see (unlike a crash) cleans up now; GC covers the crashes.
        tbl.end_attempt(cfg.table, run_id, attempt, keep_data=bool(tbl.find_run(tbl.read_log(cfg.table), run_id)))
        raise


def _run(cfg, artifact, ds, columns, entries, since, plan, run_id, attempt, collected) -> dict:
    timings, start = {}, time.perf_counter()
    done = done_entries(entries, artifact.sha256, cfg.full, since)
    rows = todo(ds, cfg, columns, done)
    out = tbl.attempt_dir(cfg.table, run_id, attempt)
    fs, path = storage.arrow_fs(out)
    predictions(rows, cfg, artifact, plan, tbl.utc_now(), run_id).write_parquet(
        path, filesystem=fs, min_rows_per_file=cfg.rows_per_file,
        arrow_parquet_args_fn=lambda: {"compression": "zstd"})
    timings["classify_s"] = time.perf_counter() - start
    counts = _counts(cfg, run_id, attempt, ds.count(), timings["classify_s"])
    entry = {"run_id": run_id, "attempt": attempt, "model_uri": cfg.model, "model_sha256": artifact.sha256,
             "key": columns, "files": counts["files"], "rows": counts["new"], "failed": counts["failed"],
             "input": cfg.input}
    _before_commit(entry)
    start = time.perf_counter()
    status, committed = commit_attempt(cfg, entry, entries)
    timings["commit_s"] = time.perf_counter() - start
    tbl.end_attempt(cfg.table, run_id, attempt, keep_data=status == "committed")
    if status == "noop":
        log.info("run %s: its images were committed by run %s meanwhile", run_id, committed["run_id"])
        return {"run_id": run_id, "status": "noop", "commit_seq": committed["seq"], "table": cfg.table}
    return _manifest(cfg, artifact, run_id, attempt, counts, committed, status, timings, collected)


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
