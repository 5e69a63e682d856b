"""The committed predictions table: data files made visible only by an append-only commit log.

Layout (local directory or ``s3://`` prefix)::

    TABLE/_log/00000000000000000001.json   commit entries: run id, model sha256, key, data files, counts
    TABLE/data/<run_id>/<attempt>/*.parquet data files written by Ray's ``write_parquet``
    TABLE/_staging/<run_id>/<attempt>.json  marker of an attempt in progress (for garbage collection)
    TABLE/_runs/<run_id>.json              run manifest (nightly.py)

Why this works:

- **Atomic**: the committed state is exactly the files named by the log entries. A run writes its data
  files first, then publishes them with ONE exclusive create of the next log entry (local: a complete temp
  file hard-linked into place, ``link`` fails if the name exists; S3: ``PutObject`` with ``If-None-Match: *``,
  a conditional write AWS S3 and moto honour). A run that dies before that create leaves only unreferenced
  files that no reader looks at; a half-written entry can never be seen.
- **No double commit**: two runs racing for the same sequence number cannot both create it; the loser
  learns who won and decides (see ``plantray.nightly``) to retry on the next number, end as a no-op, or fail.
- **Idempotent**: an entry records its run id; a run id already in the log is never committed again.
- **Readers** call :func:`committed_files` (pyarrow, DuckDB, Spark can read that list) or :func:`latest`
  (a Ray Dataset with one row per image: the newest committed prediction, whatever the model).
- **Garbage**: attempts that never committed are removed by :func:`collect_garbage` once their staging
  marker is older than a grace period (a run still in progress elsewhere must not lose its files).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import ray

from plantray import storage
from plantray.config import ConfigError

LOG, DATA, STAGING, RUNS = "_log", "data", "_staging", "_runs"
KEY = "_key"  # one string key per row, built from the table's key columns (never stored)
SEQ = "commit_seq"
_KEY_SEPARATOR = "\x1f"


class CommitConflict(RuntimeError):
    """Another run committed the log entry this run wanted; nothing of this run was committed."""


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def check_location(table_uri: str) -> None:
    """Refuses table locations without an exclusive-create primitive.

    Raises:
        ConfigError: the scheme is neither a local path nor ``s3://``.
    """
    if storage.scheme(table_uri) not in ("file", "s3", "s3a"):
        raise ConfigError(f"--table {table_uri!r}: atomic commits need a local path or s3:// "
                          "(conditional writes); put the table there")


def _entry_name(seq: int) -> str:
    return f"{seq:020d}.json"


def read_log(table_uri: str) -> list[dict]:
    """Every committed entry, in sequence order (the log holds one small JSON per run, never data)."""
    fs, path = storage.get_fs(storage.join(table_uri, LOG))
    fs.invalidate_cache(path)  # s3fs caches listings: another run may have committed since
    if not fs.exists(path):
        return []
    names = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".json"))
    entries = []
    for name in names:
        with fs.open(name, "rb") as f:
            entries.append(json.loads(f.read()))
    return sorted(entries, key=lambda e: e["seq"])


def next_seq(entries: list[dict]) -> int:
    """The sequence number the next commit must create."""
    return entries[-1]["seq"] + 1 if entries else 1


def find_run(entries: list[dict], run_id: str) -> dict | None:
    """The committed entry of ``run_id``, if any."""
    return next((e for e in entries if e["run_id"] == run_id), None)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Creates object ``uri`` holding ``data`` only if nothing exists there yet, atomically.

    Returns:
        True if this call created it, False if it already existed (someone else won).
    """
    if storage.scheme(uri) == "file":
        path = os.path.abspath(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # fails if the name exists; readers only ever see the complete file
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    return _s3_create_exclusive(uri, data)


def _s3_create_exclusive(uri: str, data: bytes) -> bool:
    from botocore.exceptions import ClientError

    fs, path = storage.get_fs(uri)
    bucket, key = path.split("/", 1)
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except FileExistsError:  # s3fs's translation of 412 PreconditionFailed: the key exists
        return False
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    fs.invalidate_cache(storage.dirname(path))
    return True


def commit(table_uri: str, seq: int, entry: dict) -> dict:
    """Publishes ``entry`` as log entry ``seq``.

    Args:
        table_uri: the table.
        seq: the number to create; the caller computed it from the log it planned against.
        entry: run_id, model_sha256, key, files (relative to the table), counts.
    Returns:
        The entry as committed (with ``seq`` and ``committed_at``).
    Raises:
        CommitConflict: entry ``seq`` already exists (another run committed first).
    """
    entry = {**entry, "seq": seq, "committed_at": utc_now()}
    if not create_exclusive(storage.join(table_uri, LOG, _entry_name(seq)), json.dumps(entry, indent=2).encode()):
        raise CommitConflict(f"log entry {seq} of {table_uri} was committed by another run")
    return entry


def attempt_dir(table_uri: str, run_id: str, attempt: str) -> str:
    """Where an attempt writes its data files (invisible until committed)."""
    return storage.join(table_uri, DATA, run_id, attempt)


def begin_attempt(table_uri: str, run_id: str) -> str:
    """Starts an attempt of ``run_id``: writes its staging marker. Returns the attempt id."""
    attempt = uuid.uuid4().hex[:12]
    marker = {"run_id": run_id, "attempt": attempt, "started_at": utc_now()}
    storage.write_bytes(storage.join(table_uri, STAGING, run_id, f"{attempt}.json"), json.dumps(marker).encode())
    return attempt


def end_attempt(table_uri: str, run_id: str, attempt: str, keep_data: bool) -> None:
    """Removes an attempt's staging marker, and its data files unless they were committed."""
    if not keep_data:
        storage.remove(attempt_dir(table_uri, run_id, attempt))
    storage.remove(storage.join(table_uri, STAGING, run_id, f"{attempt}.json"))


def attempt_files(table_uri: str, run_id: str, attempt: str) -> list[str]:
    """An attempt's data files (``.parquet``), as paths relative to the table (what a log entry lists)."""
    fs, path = storage.get_fs(attempt_dir(table_uri, run_id, attempt))
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    prefix = "/".join([DATA, run_id, attempt])
    return sorted(f"{prefix}/{p[len(path.rstrip('/')) + 1:]}" for p in fs.find(path) if p.endswith(".parquet"))


def collect_garbage(table_uri: str, entries: list[dict], older_than_s: float) -> list[str]:
    """Deletes the files of attempts that never committed and started more than ``older_than_s`` ago.

    Returns:
        The ``run_id/attempt`` names removed.
    """
    fs, path = storage.get_fs(storage.join(table_uri, STAGING))
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    committed = {(e["run_id"], e.get("attempt")) for e in entries}
    now, removed = dt.datetime.now(dt.timezone.utc), []
    for marker in fs.find(path):
        if not marker.endswith(".json"):
            continue
        with fs.open(marker, "rb") as f:
            info = json.loads(f.read())
        started = dt.datetime.fromisoformat(info["started_at"].replace("Z", "+00:00"))
        if (now - started).total_seconds() < older_than_s:
            continue
        done = (info["run_id"], info["attempt"]) in committed
        end_attempt(table_uri, info["run_id"], info["attempt"], keep_data=done)
        if not done:
            removed.append(f"{info['run_id']}/{info['attempt']}")
    return removed


def entry_files(table_uri: str, entry: dict) -> list[str]:
    """Absolute URIs of one entry's data files."""
    return [storage.join(table_uri, rel) for rel in entry["files"]]


def committed_files(table_uri: str) -> list[str]:
    """Every data file of the committed table (what pyarrow/DuckDB/Spark readers should load).

    Returns:
        URIs in commit order; files of uncommitted or failed runs are never included.
    """
    return [f for e in read_log(table_uri) for f in entry_files(table_uri, e)]


def key_array(table: pa.Table, key_columns: list[str]) -> pa.Array:
    """One string per row joining the key columns (so int and string gbifIDs compare equal)."""
    parts = [pc.fill_null(pc.cast(table.column(c), pa.string()), "") for c in key_columns]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, _KEY_SEPARATOR)


def _arrow_paths(uris: list[str]):
    fs = storage.arrow_fs(uris[0])[0]
    return fs, [storage.arrow_fs(u)[1] for u in uris]


def read_entries(table_uri: str, entries: list[dict], columns: list[str] | None = None) -> ray.data.Dataset | None:
    """The rows of some committed entries, each with ``commit_seq``; None when they hold no files."""
    files = {f: e["seq"] for e in entries for f in entry_files(table_uri, e)}
    if not files:
        return None
    fs, paths = _arrow_paths(list(files))
    # The last three path parts (run/attempt/file) identify a file whatever form the reader gives its path.
    seq_of = {"/".join(p.split("/")[-3:]): s for p, s in zip(paths, files.values())}
    ds = ray.data.read_parquet(paths, filesystem=fs, columns=columns, include_paths=True)
    return ds.map_batches(_add_seq, fn_args=(seq_of,), batch_format="pyarrow", zero_copy_batch=True)


def _add_seq(batch: pa.Table, seq_of: dict) -> pa.Table:
    seqs = [seq_of["/".join(p.split("/")[-3:])] for p in batch.column("path").to_pylist()]
    return batch.drop_columns(["path"]).append_column(SEQ, pa.array(seqs, pa.int64()))


def _with_key(batch: pa.Table, key_columns: list[str]) -> pa.Table:
    return batch.append_column(KEY, key_array(batch, key_columns))


def _keep_newest(group: pa.Table) -> pa.Table:
    newest = pc.max(group.column(SEQ)).as_py()
    rows = group.filter(pc.equal(group.column(SEQ), newest))
    return rows.slice(rows.num_rows - 1, 1).drop_columns([KEY])


def latest(table_uri: str, num_partitions: int = 8) -> ray.data.Dataset:
    """The newest committed prediction per image (key: ``image_uri``, or ``gbifID`` + ``image_uri``).

    Args:
        table_uri: the table.
        num_partitions: hash partitions of the distributed group-by (nothing is collected on the driver).
    Returns:
        A lazy Dataset of committed rows, one per key, with ``commit_seq`` telling which commit it came from.
    Raises:
        ConfigError: the table has no commits yet.
    """
    entries = read_log(table_uri)
    ds = read_entries(table_uri, entries)
    if ds is None:
        raise ConfigError(f"table {table_uri!r} has no committed predictions yet; run `plantray nightly` first")
    key_columns = entries[-1]["key"]
    ds = ds.map_batches(_with_key, fn_args=(key_columns,), batch_format="pyarrow", zero_copy_batch=True)
    return ds.groupby(KEY, num_partitions=num_partitions).map_groups(_keep_newest, batch_format="pyarrow")
