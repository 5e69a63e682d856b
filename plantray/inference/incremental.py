"""Incremental classification into the predictions table: what is already done, and committing an attempt.

The predictions table (:mod:`plantray.storage.table`) records which rows each committed run wrote. A
nightly run classifies only the input rows whose key the current model has not committed yet (a
distributed left-anti join, nothing collected on the driver), then commits its files with one exclusive
log create, re-checking against runs that committed meanwhile.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import ray

from plantray.columns import ERROR
from plantray.storage import table as tbl

_COMMIT_TRIES = 3


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


def todo(ds: ray.data.Dataset, table: str, columns: list[str], done: list[dict], retry_failed: bool = True,
         join_partitions: int = 16) -> ray.data.Dataset:
    """Input rows (with ``_key``) not yet predicted: a distributed left-anti join, nothing collected.

    Args:
        ds: the input rows.
        table: the predictions table.
        columns: the key columns.
        done: the committed entries whose rows count as done (:func:`done_entries`).
        retry_failed: rows committed with an error are not done.
        join_partitions: hash partitions of the join.
    """
    ds = ds.map_batches(lambda b: b.append_column(tbl.KEY, tbl.key_array(b, columns)), batch_format="pyarrow",
                        zero_copy_batch=True)
    keys = tbl.read_entries(table, done, columns=[*columns, ERROR])
    if keys is None:
        return ds
    keys = keys.map_batches(_done_keys, fn_args=(columns, retry_failed), batch_format="pyarrow")
    # Materialised (in the object store, spilling to disk; metadata only, no pixels) before the model stage:
    # the join's shuffle tasks take a whole CPU each and, streamed into the actor pool, could wait forever
    # for CPUs the model actors hold.
    return ds.join(keys, "left_anti", num_partitions=join_partitions, on=(tbl.KEY,)).materialize()


def _overlap(table: str, staged: list[str], newcomers: list[dict], columns: list[str],
             join_partitions: int) -> tuple[int, int]:
    """(rows of this attempt, of which keys also in ``newcomers`` with the same model), by a semi-join."""
    mine = tbl.read_entries(table, [{"seq": 0, "files": staged}], columns=columns)
    if mine is None:
        return 0, 0
    mine = mine.map_batches(lambda b: pa.table({tbl.KEY: tbl.key_array(b, columns)}), batch_format="pyarrow")
    theirs = tbl.read_entries(table, newcomers, columns=columns)
    if theirs is None:
        return mine.count(), 0
    theirs = theirs.map_batches(lambda b: pa.table({tbl.KEY: tbl.key_array(b, columns)}), batch_format="pyarrow")
    both = mine.join(theirs, "left_semi", num_partitions=join_partitions, on=(tbl.KEY,))
    return mine.count(), both.count()


def commit_attempt(table: str, entry: dict, planned: list[dict], join_partitions: int = 16) -> tuple[str, dict | None]:
    """Commits ``entry`` after the log ``planned`` against, re-checking on races.

    Returns:
        ("committed", entry) or ("noop", the entry that already covers this run).
    Raises:
        CommitConflict: another run committed some (not all) of this run's keys first.
    """
    seen = planned
    for _ in range(_COMMIT_TRIES):
        try:
            return "committed", tbl.commit(table, tbl.next_seq(seen), entry)
        except tbl.CommitConflict:
            now = tbl.read_log(table)
        if (mine := tbl.find_run(now, entry["run_id"])) is not None:
            return "noop", mine
        newcomers = [e for e in now[len(seen):] if e["model_sha256"] == entry["model_sha256"]]
        rows, shared = _overlap(table, entry["files"], newcomers, entry["key"], join_partitions)
        if rows and shared == rows:
            return "noop", newcomers[-1]
        if shared:
            raise tbl.CommitConflict(f"runs {[e['run_id'] for e in newcomers]} committed {shared} of the "
                                     f"{rows} images of run {entry['run_id']} first; nothing was committed, "
                                     "run again to classify the rest")
        seen = now
    raise tbl.CommitConflict(f"run {entry['run_id']}: the log kept moving; nothing was committed, run again")
