"""Which run a ``plantray nightly`` invocation is: the day's default run id, the later runs of that day, and
what a completed run left.

The default run id is ``nightly-YYYY-MM-DD`` (UTC); the later runs of the same day are
``nightly-YYYY-MM-DD.2``, ``.3``, ... An invocation without ``--run-id`` takes the first id of that sequence
whose run has not completed (no run record in ``TABLE/_runs/<run_id>/``):

- the day's first id: a fresh run, or the resume of a crashed one (as before the sequence existed);
- a later id with committed chunks: a crashed later run, resumed under its id;
- a later id without: a new run, done only if the input holds rows no run committed for this model.

Why not ignore a completed run id, as cron retries want: a completed id is no reason to skip work that run
never saw (images uploaded at noon, a model deployed in the afternoon). Why not a fresh id per invocation:
a retried crash must continue its own run, chunk by chunk, and a retry of a finished run must not classify
again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from plantray.config import ConfigError

DEFAULT_PREFIX = "nightly-"


@dataclass
class RunChoice:
    """The run an invocation is, decided before any work.

    Attributes:
        run_id: the id this invocation runs (or, when ``completed``, reports on).
        explicit: given with ``--run-id``.
        completed: the run record's summary when ``run_id`` already completed (explicit ids only: the default
            sequence never picks a completed id).
        previous: the summary of the day's last completed run before ``run_id`` (default ids only).
        resuming: ``run_id`` committed chunks but has no run record: a crashed run, continued.
    """

    run_id: str
    explicit: bool
    completed: dict | None = None
    previous: dict | None = None
    resuming: bool = False

    @property
    def later(self) -> bool:
        """A later run of the day (``.2``, ``.3``, ...): it adds only the rows no run committed for this model."""
        return self.previous is not None


def default_run_id(now: dt.datetime | None = None) -> str:
    """``nightly-YYYY-MM-DD`` of ``now`` (default: the current time) in UTC."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return DEFAULT_PREFIX + now.astimezone(dt.timezone.utc).strftime("%Y-%m-%d")


def later_run_id(base: str, n: int) -> str:
    """The ``n``-th run of the day whose first run id is ``base``: ``base`` itself for 1, else ``base.n``."""
    return base if n == 1 else f"{base}.{n}"


def completed_summary(table_uri: str, run_id: str) -> dict | None:
    """The summary of ``run_id``'s run record, if that run completed (its record exists); else None."""
    from plantray import storage
    from plantray.commands.record import RUN_RECORD
    from plantray.storage.table import RUNS

    uri = storage.join(table_uri, RUNS, run_id, RUN_RECORD)
    return json.loads(storage.read_bytes(uri))["summary"] if storage.exists(uri) else None


def choose(table_uri: str, run_id: str | None, has_commits, now: dt.datetime | None = None) -> RunChoice:
    """Decides which run an invocation is (see the module's docstring).

    Args:
        table_uri: the table.
        run_id: ``--run-id`` (None: the default sequence of the day of ``now``).
        has_commits: ``run_id -> bool``, whether that run committed chunks (a crashed run to resume).
        now: the time that names the day (default: now).
    Returns:
        The :class:`RunChoice`.
    """
    if run_id is not None:
        return RunChoice(run_id, True, completed_summary(table_uri, run_id), resuming=has_commits(run_id))
    base, previous, n = default_run_id(now), None, 1
    while (summary := completed_summary(table_uri, later_run_id(base, n))) is not None:
        previous, n = {**summary, "run_id": later_run_id(base, n)}, n + 1
    candidate = later_run_id(base, n)
    return RunChoice(candidate, False, previous=previous, resuming=has_commits(candidate))


def _model(sha: str) -> str:
    return f"model {sha[:12]}"


def later_run_reason(choice: RunChoice, left: int, sha: str) -> str:
    """Why a later run of the day runs, for the console and the run record."""
    before = choice.previous["run_id"]
    if choice.resuming:
        return f"run {before} already completed; resuming run {choice.run_id}, which did not complete"
    return (f"run {before} already completed; {left} input rows are new for {_model(sha)} "
            f"-> run {choice.run_id}")


def _version(summary: dict) -> str:
    return f" (table version {summary['commit_seq']})" if summary.get("commit_seq") is not None else ""


def nothing_left(previous: dict, input_rows: int, sha: str) -> str:
    """The line of a re-run of the day that found no work left."""
    return (f"run {previous['run_id']} already completed{_version(previous)} and all {input_rows} input rows are "
            f"committed for {_model(sha)}: nothing to do")


def completed_report(run_id: str, completed: dict, left: int, input_rows: int, sha: str) -> str:
    """The line of an explicit ``--run-id`` that already completed: what it left and how to classify it."""
    head = f"run {run_id} already completed{_version(completed)}"
    if not left:
        return f"{head}: nothing to do (all {input_rows} input rows are committed for {_model(sha)})"
    return (f"{head}: nothing done; {left} of the {input_rows} input rows are not committed for {_model(sha)}; "
            f"to classify them run again without --run-id (the day's next run) or with a new --run-id")


def rows_to_classify(cfg, sha: str, ds, columns: list[str], snap, since: dt.datetime | None,
                     choice: RunChoice) -> tuple:
    """The rows an invocation classifies (nightly's already-done join, materialised) and why it runs.

    Args:
        cfg: nightly's flags (``full``, ``retry_failed``, ``join_partitions``, ``broadcast_rows``).
        sha: the model's weights SHA-256.
        ds: the input rows.
        columns: the key columns.
        snap: the table version the run plans against.
        since: ``--since`` as a datetime, or None.
        choice: the run (:func:`choose`).
    Returns:
        ``(rows, reason)``: ``reason`` None when nothing runs (``rows`` then hold the work left, to count),
        ``""`` for the day's first run or an explicit run id, the console's line for a later run of the day.
    """
    from plantray.inference.incremental import todo

    join = {"join_partitions": cfg.join_partitions}
    if cfg.broadcast_rows is not None:
        join["broadcast_rows"] = cfg.broadcast_rows
    if choice.completed is not None:  # explicit and completed: count what no run committed for this model
        return todo(ds, snap, columns, sha, None, **join), None
    if not choice.later:
        return todo(ds, snap, columns, sha, choice.run_id, cfg.full, since, cfg.retry_failed, **join), ""
    # A later run of the day adds what no run committed for this model: --full, --since and the retry of
    # failed rows were the day's first run's to apply, so a cron retry of a finished day classifies nothing.
    rows = todo(ds, snap, columns, sha, choice.run_id, retry_failed=False, **join)
    left = rows.count()
    if not left and not choice.resuming:
        return rows, None
    return rows, later_run_reason(choice, left, sha)


def noop_summary(cfg, sha: str, choice: RunChoice, left: int, input_rows: int) -> dict:
    """The summary of an invocation that runs nothing (and writes nothing).

    Args:
        cfg: nightly's flags (``table``, ``strict``).
        sha: the model's weights SHA-256.
        choice: the run (:func:`choose`): an explicit completed id, or a day with nothing left.
        left: input rows not committed for this model.
        input_rows: rows of the input.
    Raises:
        ConfigError: ``--strict`` and an explicit completed run id that left rows of this input unclassified.
    """
    if choice.completed is not None:
        reported = {**choice.completed, "run_id": choice.run_id}
        message = completed_report(choice.run_id, choice.completed, left, input_rows, sha)
        if cfg.strict and left:
            raise ConfigError(f"--strict: {message}")
    else:
        reported, message = choice.previous, nothing_left(choice.previous, input_rows, sha)
    return {"run_id": reported["run_id"], "status": "noop", "commit_seq": reported.get("commit_seq"),
            "table": cfg.table, "input_rows": input_rows, "left": left, "model_sha256": sha, "message": message}
