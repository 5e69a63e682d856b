"""Incremental classification into the predictions table: what is already done, and committing a chunk.

The predictions table (:mod:`plantray.storage.table`) is a Delta table whose rows carry the model's
weights SHA-256 and the run and chunk that committed them. A nightly run classifies only the input rows
whose key the current model has not committed yet (a left-anti join, nothing collected on the driver), then
commits chunk by chunk, each chunk's files as one Delta version, re-checking against runs
that committed meanwhile.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import ray

from plantray.columns import ERROR, MODEL_SHA256, RUN_ID
from plantray.storage import delta
from plantray.storage import table as tbl

_COMMIT_TRIES = 5
# ~30 MB of keys at most (image URIs of ~100 characters): small beside a node's object store.
DEFAULT_BROADCAST_ROWS = 250_000


def _done_keys(batch: pa.Table, columns: list[str], sha: str, run_id: str | None, full: bool,
               since_ms: int | None, retry_failed: bool) -> pa.Table:
    # This run's own committed rows (a resumed run) are done whatever the flags: each chunk commits once.
    if run_id is None:
        mine = pa.repeat(False, batch.num_rows)
    else:
        mine = pc.fill_null(pc.equal(batch.column(RUN_ID), run_id), False)
    if full:
        keep = mine
    else:
        same = pc.equal(batch.column(MODEL_SHA256), sha)
        if since_ms is not None:
            same = pc.and_(same, pc.greater_equal(batch.column(tbl.COMMITTED_AT), since_ms))
        if retry_failed:
            same = pc.and_(same, pc.is_null(batch.column(ERROR)))
        keep = pc.or_(mine, same)
    batch = batch.filter(pc.fill_null(keep, False))
    return pa.table({tbl.KEY: tbl.key_array(batch, columns)})


def todo(ds: ray.data.Dataset, snap: tbl.Snapshot, columns: list[str], sha: str, run_id: str | None,
         full: bool = False, since: dt.datetime | None = None, retry_failed: bool = True,
         join_partitions: int = 16, broadcast_rows: int = DEFAULT_BROADCAST_ROWS) -> ray.data.Dataset:
    """Input rows (with ``_key``) not yet predicted: a left-anti join, materialised.

    Args:
        ds: the input rows.
        snap: the table version the run plans against.
        columns: the key columns.
        sha: the model's weights SHA-256: rows committed by another model are not done.
        run_id: rows this run already committed (before a crash) are done (None: no run's rows are done as such).
        full: only this run's own rows are done.
        since: rows committed before this time are not done.
        retry_failed: rows committed with an error are not done.
        join_partitions: hash partitions of the join.
        broadcast_rows: a table of at most this many rows (counted from its Delta log) is joined by sending its
            done keys to every input reader; a larger one by a hash-partitioned join (0: always).
    """
    ds = ds.map_batches(lambda b: b.append_column(tbl.KEY, tbl.key_array(b, columns)), batch_format="pyarrow",
                        zero_copy_batch=True)
    keys = tbl.read_rows(snap, columns=[*columns, ERROR, MODEL_SHA256])
    if keys is None:
        return ds.materialize()
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    keys = keys.map_batches(_done_keys, fn_args=(columns, sha, run_id, full, since_ms, retry_failed),
                            batch_format="pyarrow")
    # Materialised (in the object store, spilling to disk; metadata only, no pixels) before the model stage:
    # the join's shuffle tasks take a whole CPU each and, streamed into the actor pool, could wait forever
    # for CPUs the model actors hold. Each chunk then filters this one result.
    rows = table_rows(snap)
    if rows is not None and rows <= broadcast_rows:
        return _broadcast_anti_join(ds, keys).materialize()
    return ds.join(keys, "left_anti", num_partitions=join_partitions, on=(tbl.KEY,)).materialize()


def table_rows(snap: tbl.Snapshot) -> int | None:
    """Rows of the snapshot, from its add actions' ``numRecords`` (no file opened); None when a file written
    by another tool lacks the statistic."""
    counts = pa.table(snap.table.get_add_actions(flatten=True)).column("num_records")
    return None if counts.null_count else int(pc.sum(counts).as_py() or 0)


def _broadcast_anti_join(ds: ray.data.Dataset, keys: ray.data.Dataset) -> ray.data.Dataset:
    # A broadcast join (Spark's for a small side): the done keys, deduplicated in one task, are shared
    # through the object store with every reader. A hash join starts aggregator actors and shuffles both
    # sides, about 2 s on a laptop even for a few rows, every nightly run.
    done = _key_set.remote(*keys.materialize().to_arrow_refs())
    return ds.map_batches(_drop_done, fn_args=(done,), batch_format="pyarrow", zero_copy_batch=True)


@ray.remote
def _key_set(*blocks: pa.Table) -> pa.Array:
    # Empty blocks may carry no columns at all.
    return pc.unique(pa.chunked_array([b.column(tbl.KEY) for b in blocks if b.num_rows], pa.string()))


def _drop_done(batch: pa.Table, done: ray.ObjectRef) -> pa.Table:
    # The reference travels inside the pickled function arguments, so Ray Data does not resolve it: get it
    # here (once per node in the object store; zero-copy).
    return batch.filter(pc.invert(pc.is_in(batch.column(tbl.KEY), value_set=ray.get(done))))


def _keys(batch: pa.Table, columns: list[str]) -> pa.Table:
    return pa.table({tbl.KEY: tbl.key_array(batch, columns)})


def _overlap(uri: str, staged: list[str], theirs: list[str], columns: list[str],
             join_partitions: int) -> tuple[int, int]:
    """(rows of the staged files, of which keys also in ``theirs`` files), by a distributed semi-join."""
    mine = tbl.read_files(uri, staged, columns=columns)
    if mine is None:
        return 0, 0
    mine = mine.map_batches(_keys, fn_args=(columns,), batch_format="pyarrow")
    other = tbl.read_files(uri, theirs, columns=columns)
    if other is None:
        return mine.count(), 0
    other = other.map_batches(_keys, fn_args=(columns,), batch_format="pyarrow")
    return mine.count(), mine.join(other, "left_semi", num_partitions=join_partitions, on=(tbl.KEY,)).count()


def _newcomers(uri: str, now, since_version: int, run_id: str, attempt: str, sha: str) -> list[dict]:
    """Chunk commits with the same model after ``since_version`` by other runs, or by another attempt of this
    run id (two same-day re-runs that picked the same next run id: their chunks may split keys differently)."""
    recent = delta.commits_after(now, uri, since_version)
    return [c for c in recent if c.get("run_id") is not None and (c["run_id"], c.get("attempt")) != (run_id, attempt)
            and c.get("model_sha256") == sha]


def commit_chunk(uri: str, planned: int, files: list[str], schema: pa.Schema, meta: dict,
                 join_partitions: int = 16) -> tuple[str, int]:
    """Commits one chunk's files as the next table version, exactly once, checking for races.

    Args:
        uri: the table.
        planned: the version the run computed its to-do rows against (-1: no table yet).
        files: the chunk's data files, relative to the table.
        schema: their schema (creates the table when it does not exist yet).
        meta: the commit's metadata: ``run_id``, ``attempt``, ``chunk``, ``model_sha256``, ``key``, counts.
        join_partitions: hash partitions of the overlap check.
    Returns:
        ("committed", version) or ("noop", version that already covers the chunk).
    Raises:
        CommitConflict: another run committed some (not all) of this chunk's keys first; nothing of the
            chunk was committed.
    """
    run_id, chunk = meta["run_id"], meta["chunk"]
    for _ in range(_COMMIT_TRIES):
        now = delta.open_table(uri)
        if now is None:
            delta.create(uri, schema, {"operation": "create", "key": meta["key"]})
            continue
        if delta.add_columns(now, schema):
            continue
        if (done := now.transaction_version(run_id)) is not None and done >= chunk:
            return "noop", now.version()  # another invocation of this run id committed the chunk
        if others := _newcomers(uri, now, planned, run_id, meta.get("attempt"), meta["model_sha256"]):
            theirs = [f for c in others for f in delta.added_files(uri, c["version"])]
            rows, shared = _overlap(uri, files, theirs, meta["key"], join_partitions)
            if rows and shared == rows:
                return "noop", others[-1]["version"]
            if shared:
                raise tbl.CommitConflict(f"runs {sorted({c['run_id'] for c in others})} committed {shared} of "
                                         f"the {rows} images of chunk {chunk} of run {run_id} first; that chunk "
                                         "was not committed, run again to classify the rest")
        try:
            return "committed", delta.commit(now, uri, files, schema, meta, txn=(run_id, chunk))
        except delta.VersionTaken:
            continue
    raise tbl.CommitConflict(f"run {run_id}: the table kept moving; chunk {chunk} was not committed, run again")
