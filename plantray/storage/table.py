"""The committed predictions table: a Delta Lake table (delta-rs), written by Ray and committed by the driver.

Layout (local directory or ``s3://`` prefix)::

    TABLE/_delta_log/<version>.json                      Delta's log: version 0 creates the table, then one
                                                         version per committed chunk of a nightly run
    TABLE/data/<run_id>/<attempt>/<chunk>/*.parquet      data files written by Ray's ``write_parquet``
    TABLE/_staging/<run_id>/<attempt>.json               marker of an attempt in progress (garbage collection)
    TABLE/_runs/<run_id>/_plantray_run.json              run manifest (nightly.py): counts, versions committed

Why this works:

- **Atomic**: a reader (deltalake, Spark, DuckDB, Polars, ``ray.data.read_delta``) sees exactly the files
  the log adds. A chunk's files become visible with ONE exclusive create of the next ``_delta_log`` entry
  (local: delta-rs's atomic create; S3: ``PutObject`` with ``If-None-Match: *``). Files of a run that died
  before its commit are referenced by no version; ``_``-prefixed directories are ignored by Delta readers.
- **No double commit**: a commit names the version it planned against and is refused when another writer
  created it first (:func:`plantray.storage.delta.commit`); plantray then decides (no-op, retry, conflict).
- **Idempotent**: each chunk's commit carries the application transaction ``(run_id, chunk)`` (Delta's
  ``txn`` action): ``DeltaTable.transaction_version(run_id)`` is the last chunk a run committed.
- **Per row**: ``run_id`` and ``run_chunk`` name the commit holding a row, so its commit version and time
  survive ``optimize`` (which rewrites files) and ``--since`` and :func:`latest` can use them.
- **Garbage**: attempts' uncommitted files are removed by :func:`collect_garbage` once their staging marker
  is older than a grace period; ``plantray table vacuum`` removes files no version references any more.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from plantray import storage
from plantray.columns import CLASSIFICATION_METHOD, HUMAN, RUN_CHUNK, RUN_ID
from plantray.config import ConfigError
from plantray.storage import delta
from plantray.storage.legacylog import (  # noqa: F401 (the old layout: migrate and refusal)
    LOG,
    CommitConflict,
    create_exclusive,
    find_run,
    next_seq,
    read_log,
    utc_now,
)

if TYPE_CHECKING:  # nightly and table refuse a bad table before Ray starts
    import ray

DATA, STAGING, RUNS = "data", "_staging", "_runs"
KEY = "_key"  # one string key per row, built from the table's key columns (never stored)
SEQ = "commit_seq"  # the Delta version that committed a row (added by readers, never stored)
COMMITTED_AT = "_committed_ms"  # its commit time, ms since the epoch (added by readers, never stored)
_KEY_SEPARATOR = "\x1f"


def check_location(table_uri: str) -> None:
    """Refuses table locations without an exclusive-create primitive.

    Raises:
        ConfigError: the scheme is neither a local path nor ``s3://``.
    """
    if storage.scheme(table_uri) not in ("file", "s3", "s3a"):
        raise ConfigError(f"--table {table_uri!r}: atomic commits need a local path or s3:// "
                          "(conditional writes); put the table there")


def is_old_layout(table_uri: str) -> bool:
    """Whether ``table_uri`` is a table of the old ``_log/`` layout not yet migrated to Delta."""
    return storage.exists(storage.join(table_uri, LOG)) and not delta.is_delta(table_uri)


def check_layout(table_uri: str) -> None:
    """Refuses a table in the old ``_log/`` layout.

    Raises:
        ConfigError: naming ``plantray table migrate``.
    """
    if is_old_layout(table_uri):
        raise ConfigError(f"table {table_uri!r} is in the old _log/ layout; convert it to Delta Lake first with "
                          f"`plantray table migrate --table {table_uri}`")


@dataclass
class Snapshot:
    """One version of the table and what plantray recorded in its commits."""

    uri: str
    table: object | None  # deltalake.DeltaTable, None when the table does not exist yet
    _commits: list[dict] | None = field(default=None, repr=False)

    @property
    def version(self) -> int:
        """The Delta version (-1: no table yet)."""
        return self.table.version() if self.table is not None else -1

    def commits(self) -> list[dict]:
        """plantray's metadata of every commit still in the log (read once, on first use)."""
        if self._commits is None:
            self._commits = delta.commits(self.table, self.uri) if self.table is not None else []
        return self._commits

    def key(self) -> list[str] | None:
        """The table's key columns, as its commits recorded them."""
        return next((c["key"] for c in self.commits() if c.get("key")), None)

    def run_commits(self, run_id: str) -> list[dict]:
        """The chunk commits of ``run_id``, oldest first."""
        return [c for c in self.commits() if c.get("run_id") == run_id and "chunk" in c]

    def chunks_done(self, run_id: str) -> int:
        """How many chunks ``run_id`` committed (its ``txn`` version + 1)."""
        version = self.table.transaction_version(run_id) if self.table is not None else None
        return 0 if version is None else version + 1


def snapshot(table_uri: str, version: int | None = None) -> Snapshot:
    """The table at ``version`` (default: newest)."""
    return Snapshot(table_uri, delta.open_table(table_uri, version))


def attempt_dir(table_uri: str, run_id: str, attempt: str, chunk: int | None = None) -> str:
    """Where an attempt (or one chunk of it) writes its data files (invisible until committed)."""
    base = storage.join(table_uri, DATA, run_id, attempt)
    return base if chunk is None else storage.join(base, f"{chunk:06d}")


def chunk_files(table_uri: str, run_id: str, attempt: str, chunk: int) -> list[str]:
    """A chunk's data files (``.parquet``), relative to the table (what its commit adds)."""
    fs, path = storage.get_fs(attempt_dir(table_uri, run_id, attempt, chunk))
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    prefix = "/".join([DATA, run_id, attempt, f"{chunk:06d}"])
    return sorted(f"{prefix}/{p[len(path.rstrip('/')) + 1:]}" for p in fs.find(path) if p.endswith(".parquet"))


def begin_attempt(table_uri: str, run_id: str) -> str:
    """Starts an attempt of ``run_id``: writes its staging marker. Returns the attempt id."""
    attempt = uuid.uuid4().hex[:12]
    marker = {"run_id": run_id, "attempt": attempt, "started_at": utc_now()}
    storage.write_bytes(storage.join(table_uri, STAGING, run_id, f"{attempt}.json"), json.dumps(marker).encode())
    return attempt


def end_attempt(table_uri: str, run_id: str, attempt: str, committed_chunks: set[int]) -> None:
    """Removes an attempt's staging marker and its files that no commit references."""
    base = attempt_dir(table_uri, run_id, attempt)
    if not committed_chunks:
        storage.remove(base)
    else:
        fs, path = storage.get_fs(base)
        fs.invalidate_cache(path)
        for sub in fs.ls(path, detail=False) if fs.exists(path) else []:
            name = sub.rstrip("/").rsplit("/", 1)[-1]
            if not (name.isdigit() and int(name) in committed_chunks):
                storage.remove(storage.join(base, name))
    storage.remove(storage.join(table_uri, STAGING, run_id, f"{attempt}.json"))


def committed_chunks(snap: Snapshot, run_id: str, attempt: str) -> set[int]:
    """The chunks of one attempt that a commit references."""
    return {c["chunk"] for c in snap.run_commits(run_id) if c.get("attempt") == attempt}


def collect_garbage(table_uri: str, snap: Snapshot, older_than_s: float) -> list[str]:
    """Deletes the uncommitted files of attempts that started more than ``older_than_s`` ago.

    Returns:
        The ``run_id/attempt`` names of attempts that had committed nothing (removed whole).
    """
    fs, path = storage.get_fs(storage.join(table_uri, STAGING))
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    now, removed = dt.datetime.now(dt.timezone.utc), []
    for marker in fs.find(path):
        if not marker.endswith(".json"):
            continue
        with fs.open(marker, "rb") as f:
            info = json.loads(f.read())
        started = dt.datetime.fromisoformat(info["started_at"].replace("Z", "+00:00"))
        if (now - started).total_seconds() < older_than_s:
            continue
        done = committed_chunks(snap, info["run_id"], info["attempt"])
        end_attempt(table_uri, info["run_id"], info["attempt"], done)
        if not done:
            removed.append(f"{info['run_id']}/{info['attempt']}")
    return removed


def key_array(table: pa.Table, key_columns: list[str]) -> pa.Array:
    """One string per row joining the key columns (so int and string gbifIDs compare equal)."""
    parts = [pc.fill_null(pc.cast(table.column(c), pa.string()), "") for c in key_columns]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, _KEY_SEPARATOR)


def commit_of(snap: Snapshot) -> dict:
    """``(run_id, chunk) -> (version, commit time in ms)`` of every chunk commit still in the log."""
    return {(c["run_id"], c["chunk"]): (c["version"], _commit_ms(c)) for c in snap.commits()
            if "run_id" in c and "chunk" in c}


def _commit_ms(commit: dict) -> int:
    # Commits migrated from the old layout keep their original commit time.
    if commit.get("committed_at"):
        return int(dt.datetime.fromisoformat(commit["committed_at"].replace("Z", "+00:00")).timestamp() * 1000)
    return commit["timestamp_ms"]


def read_files(table_uri: str, files: list[str], columns: list[str] | None = None) -> ray.data.Dataset | None:
    """The rows of some data files (paths relative to the table); None when there are none."""
    if not files:
        return None
    import ray

    uris = [storage.join(table_uri, f) for f in files]
    fs = storage.arrow_fs(uris[0])[0]
    return ray.data.read_parquet([storage.arrow_fs(u)[1] for u in uris], filesystem=fs, columns=columns)


def read_rows(snap: Snapshot, columns: list[str] | None = None) -> ray.data.Dataset | None:
    """Every row of the snapshot, with ``commit_seq`` and ``_committed_ms`` of the commit holding it
    (-1 for commits whose log entry was cleaned up). None when the table holds no files."""
    if snap.table is None or not snap.table.file_uris():
        return None
    import ray

    wanted = None if columns is None else list(dict.fromkeys([*columns, RUN_ID, RUN_CHUNK]))
    # Ray's Delta reader: the snapshot's files read with the table's schema (older files lacking a
    # column, e.g. migrated ones without run_chunk, read it as null).
    ds = ray.data.read_delta(delta.table_uri(snap.uri), version=snap.version,
                             storage_options=delta.storage_options(snap.uri) or None, columns=wanted)
    return ds.map_batches(_add_commit, fn_args=(commit_of(snap),), batch_format="pyarrow", zero_copy_batch=True)


def _add_commit(batch: pa.Table, commits: dict) -> pa.Table:
    runs = batch.column(RUN_ID).to_pylist()
    # Rows migrated from the old layout have no run_chunk: their run was one commit, chunk 0.
    chunks = batch.column(RUN_CHUNK).to_pylist() if RUN_CHUNK in batch.column_names else [None] * len(runs)
    found = [commits.get((r, c or 0), (-1, -1)) for r, c in zip(runs, chunks)]
    return (batch.append_column(SEQ, pa.array([f[0] for f in found], pa.int64()))
            .append_column(COMMITTED_AT, pa.array([f[1] for f in found], pa.int64())))


def _with_key(batch: pa.Table, key_columns: list[str]) -> pa.Table:
    return batch.append_column(KEY, key_array(batch, key_columns))


def _keep_newest(group: pa.Table) -> pa.Table:
    # A person's identification (review apply commits rows with classificationMethod "human") stays the image's
    # current one whatever a later re-classification commits; among those, the newest review wins.
    if CLASSIFICATION_METHOD in group.column_names:
        human = pc.fill_null(pc.equal(group.column(CLASSIFICATION_METHOD), HUMAN), False)
        if pc.any(human).as_py():
            group = group.filter(human)
    newest = pc.max(group.column(SEQ)).as_py()
    rows = group.filter(pc.equal(group.column(SEQ), newest))
    return rows.slice(rows.num_rows - 1, 1).drop_columns([KEY, COMMITTED_AT])


def latest(table_uri: str, num_partitions: int = 8, version: int | None = None) -> ray.data.Dataset:
    """The newest committed prediction per image (key: ``image_uri``, or ``gbifID`` + ``image_uri``); an image
    a person identified (``plantray review apply``) keeps the person's newest row, whatever came after it.

    Args:
        table_uri: the table.
        num_partitions: hash partitions of the distributed group-by (nothing is collected on the driver).
        version: read the table as it was at this Delta version (default: newest).
    Returns:
        A lazy Dataset of committed rows, one per key, with ``commit_seq`` telling which version it came from.
    Raises:
        ConfigError: the table has no commits yet, or is in the old layout.
    """
    check_layout(table_uri)
    snap = snapshot(table_uri, version)
    ds = read_rows(snap)
    if ds is None:
        raise ConfigError(f"table {table_uri!r} has no committed predictions yet; run `plantray nightly` first")
    ds = ds.map_batches(_with_key, fn_args=(snap.key(),), batch_format="pyarrow", zero_copy_batch=True)
    return ds.groupby(KEY, num_partitions=num_partitions).map_groups(_keep_newest, batch_format="pyarrow")
