"""Converting a predictions table of the old ``_log/`` layout into a Delta table, in place.

The data files stay where they are: each committed log entry, in sequence order, becomes one Delta version
adding exactly its files, recorded as chunk 0 of its run (the old layout committed a run at once), with the
entry's run id, model SHA-256, key, counts and original commit time in the commit's metadata and the
application transaction ``(run_id, 0)``. The old log is moved aside (``_log.migrated-<UTC time>``, ignored
by Delta readers as every ``_``-prefixed directory), never deleted. Files the old log never committed are
not added (``plantray table vacuum`` deletes them).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from plantray import storage
from plantray.columns import RUN_CHUNK
from plantray.storage import delta, legacylog


def _schema(table_uri: str, entries: list[dict]) -> pa.Schema:
    """The first committed file's schema, plus ``run_chunk`` (null in migrated rows: chunk 0)."""
    first = next(f for e in entries for f in e["files"])
    fs, path = storage.get_fs(storage.join(table_uri, first))
    with fs.open(path, "rb") as f:
        schema = pq.read_schema(f).remove_metadata()
    return schema if RUN_CHUNK in schema.names else schema.append(pa.field(RUN_CHUNK, pa.int32()))


def migrate(table_uri: str) -> dict:
    """Converts the old-layout table at ``table_uri`` to Delta.

    Returns:
        ``entries`` (how many log entries), ``versions`` (the Delta versions they became), ``old_log``.
    Raises:
        ValueError: the old log holds no entry with files (nothing to take a schema from).
    """
    entries = legacylog.read_log(table_uri)
    if not any(e["files"] for e in entries):
        raise ValueError(f"table {table_uri!r}: the old log commits no files; delete it and start afresh")
    schema = _schema(table_uri, entries)
    delta.create(table_uri, schema, {"operation": "migrate", "key": entries[-1]["key"]})
    versions = []
    for e in entries:
        meta = {"run_id": e["run_id"], "attempt": e.get("attempt"), "chunk": 0, "chunks": 1,
                "model_sha256": e["model_sha256"], "model_uri": e.get("model_uri"), "key": e["key"],
                "input": e.get("input"), "rows": e.get("rows", 0), "failed": e.get("failed", 0),
                "committed_at": e["committed_at"], "migrated_from_seq": e["seq"]}
        versions.append(delta.commit(delta.open_table(table_uri), table_uri, e["files"], schema, meta,
                                     txn=(e["run_id"], 0)))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    old_log = storage.join(table_uri, f"{legacylog.LOG}.migrated-{stamp}")
    fs, src = storage.get_fs(storage.join(table_uri, legacylog.LOG))
    fs.mv(src, storage.get_fs(old_log)[1], recursive=True)
    return {"entries": len(entries), "versions": versions, "old_log": old_log}
