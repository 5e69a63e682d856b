"""Delta Lake through delta-rs (``deltalake``): storage options, exclusive commits of files already written,
and what each commit recorded.

Why ``deltalake`` directly and not Ray's ``Dataset.write_delta``: Ray's writer appends or overwrites in one
commit of its own, with no application transactions (``txn``) and no say over which table version it
commits against. plantray needs both: Ray Data writes the Parquet files in parallel, then the driver
commits exactly those files with :meth:`deltalake.DeltaTable.create_write_transaction`, planned against a
known version and refused (``max_commit_retries=0``) if any other commit got there first, so plantray's
own race rules (no-op / retry / ``CommitConflict``) decide, never a blind append.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from plantray import storage

DELTA_LOG = "_delta_log"
META = "plantray."  # prefix of plantray's keys in a commit's commitInfo


class VersionTaken(RuntimeError):
    """The table version a commit planned to create was created by another writer first."""


def storage_options(uri: str) -> dict[str, str]:
    """delta-rs storage options for ``uri``, from the same settings plantray's s3fs filesystems use.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (as in :mod:`plantray.storage.fs`),
    credentials and region from the standard ``AWS_*`` variables. ``AWS_CONDITIONAL_PUT=etag`` makes every
    commit a ``PutObject`` with ``If-None-Match: *`` (AWS S3, MinIO, R2 and moto honour it): two writers can
    never both create the same ``_delta_log`` entry, with no DynamoDB lock.

    Returns:
        ``{}`` for local paths.
    """
    if storage.scheme(uri) not in ("s3", "s3a"):
        return {}
    options = {"AWS_CONDITIONAL_PUT": "etag",
               "AWS_REGION": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        options["AWS_ALLOW_HTTP"] = str(endpoint.startswith("http://")).lower()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            options[name] = os.environ[name]
    return options


def table_uri(uri: str) -> str:
    """``uri`` as delta-rs wants it (an absolute local path; ``s3a://`` as ``s3://``)."""
    if storage.scheme(uri) == "file":
        return os.path.abspath(uri)
    return "s3://" + uri.split("://", 1)[1] if storage.scheme(uri) == "s3a" else uri


def is_delta(uri: str) -> bool:
    """Whether ``uri`` holds a Delta table (a ``_delta_log`` with at least one commit)."""
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(table_uri(uri), storage_options=storage_options(uri))


def open_table(uri: str, version: int | None = None):
    """The :class:`deltalake.DeltaTable` at ``uri`` (its newest version unless ``version``); None if absent."""
    from deltalake import DeltaTable

    if not is_delta(uri):
        return None
    return DeltaTable(table_uri(uri), version=version, storage_options=storage_options(uri))


def add_action(uri: str, rel_path: str):
    """A Delta ``add`` action for a Parquet file already in the table (``rel_path`` relative to it), with
    ``numRecords`` from its footer (readers use it to count without opening the file)."""
    from deltalake.transaction import AddAction

    fs, path = storage.get_fs(storage.join(uri, rel_path))
    info = fs.info(path)
    with fs.open(path, "rb") as f:
        rows = pq.ParquetFile(f).metadata.num_rows
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
    mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
    return AddAction(rel_path, int(info["size"]), {}, int(mtime * 1000), True, json.dumps({"numRecords": rows}))


def create(uri: str, schema: pa.Schema, metadata: dict) -> bool:
    """Creates an empty table (version 0) with ``schema``. Returns False if another writer created it first."""
    from deltalake import Schema
    from deltalake.exceptions import DeltaError
    from deltalake.transaction import CommitProperties, create_table_with_add_actions

    try:
        create_table_with_add_actions(table_uri(uri), Schema.from_arrow(schema), [], mode="error",
                                      storage_options=storage_options(uri),
                                      commit_properties=CommitProperties(custom_metadata=_meta(metadata)))
    except DeltaError:
        if is_delta(uri):
            return False
        raise
    return True


def add_columns(table, schema: pa.Schema) -> bool:
    """Adds to the table the columns of ``schema`` it lacks (a Delta schema change of its own version), so
    readers see them; rows of older files read them as null. Returns whether the table changed.

    Needed when a night's input brings a new passthrough column, or after ``plantray table migrate``
    (old files hold fewer columns than nightly writes now).
    """
    from deltalake import Schema
    from deltalake.exceptions import DeltaError

    have = set(pa.schema(table.schema().to_arrow()).names)
    new = [f for f in Schema.from_arrow(schema).fields if f.name not in have]
    if not new:
        return False
    try:
        table.alter.add_columns(new)
    except DeltaError:  # another writer changed the table first: the caller re-reads it and looks again
        pass
    return True


def commit(table, uri: str, files: list[str], schema: pa.Schema, metadata: dict,
           txn: tuple[str, int] | None = None) -> int:
    """Appends ``files`` (relative to the table) as the version right after ``table``'s, or not at all.

    Args:
        table: the DeltaTable at the version this commit was planned against.
        uri: the table.
        files: Parquet files already written under the table.
        schema: their schema.
        metadata: recorded in the commit's ``commitInfo`` under ``plantray.<key>``.
        txn: an application transaction ``(app_id, version)`` recorded with the commit.
    Returns:
        The version created.
    Raises:
        VersionTaken: another writer created that version first (nothing was committed).
    """
    from deltalake.exceptions import CommitFailedError
    from deltalake.transaction import CommitProperties, Transaction

    props = CommitProperties(custom_metadata=_meta(metadata), max_commit_retries=0,
                             app_transactions=[Transaction(*txn)] if txn else None)
    planned = table.version()
    try:
        table.create_write_transaction([add_action(uri, f) for f in files], "append", schema,
                                       commit_properties=props)
    except CommitFailedError as e:
        raise VersionTaken(f"version {planned + 1} of {uri} was committed by another writer") from e
    return planned + 1


def _meta(metadata: dict) -> dict:
    return {META + k: v for k, v in metadata.items()}


def commits(table, uri: str) -> list[dict]:
    """plantray's metadata of every commit of ``table``'s snapshot still in the log, oldest first: each
    ``{"version", "timestamp_ms", "operation", ...plantray keys without the prefix}``.

    Read from the ``_delta_log/<version>.json`` entries through plantray's storage layer (one small read
    per version) rather than ``DeltaTable.history()``, whose S3 listing hung against S3-compatible
    servers (moto) in tests.
    """
    fs, path = storage.get_fs(storage.join(uri, DELTA_LOG))
    fs.invalidate_cache(path)
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    versions = sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())
    return [c for v in versions if v <= table.version() and (c := _commit(uri, v)) is not None]


def commits_after(table, uri: str, version: int) -> list[dict]:
    """:func:`commits` of the versions after ``version`` only (reads just those log entries)."""
    return [c for v in range(version + 1, table.version() + 1) if (c := _commit(uri, v)) is not None]


def _actions(uri: str, version: int) -> list[dict] | None:
    try:
        data = storage.read_bytes(storage.join(uri, DELTA_LOG, f"{version:020d}.json"))
    except FileNotFoundError:  # cleaned up after a checkpoint (delta.logRetentionDuration)
        return None
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _commit(uri: str, version: int) -> dict | None:
    actions = _actions(uri, version)
    if actions is None:
        return None
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
    row = {k[len(META):]: v for k, v in info.items() if k.startswith(META)}
    return {**row, "version": version, "timestamp_ms": info.get("timestamp"), "operation": info.get("operation")}


def added_files(uri: str, version: int) -> list[str]:
    """The files commit ``version`` added, relative to the table (read from its ``_delta_log`` entry)."""
    return [a["add"]["path"] for a in _actions(uri, version) or [] if "add" in a]
