"""The predictions table's old layout (before Delta Lake): Parquet files plus ``_log/<seq>.json`` entries,
each created exclusively. Kept to recognise such tables, to read them for ``plantray table migrate``, and
for tests that build one; nightly never writes it any more.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile

from plantray import storage

LOG = "_log"


class CommitConflict(RuntimeError):
    """Another run committed the log entry (or table version) this run wanted; nothing of it was committed."""


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


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
