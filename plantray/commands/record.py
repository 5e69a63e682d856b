"""The run record: one file name and one shape, written beside the output of every command.

``_plantray_run.json`` holds ``{"command", "plantray_version", "started", "finished", "config",
"summary"}``: the final config (every flag, defaults included) and the closing summary. Where it goes:
in OUTPUT (classify, evaluate, train, model create, synth, quickstart), in
``TABLE/_runs/<run_id>/`` (nightly) and inside the archive (export dwca).

A CLI run also copies its log (plantray's and Ray's log records, and what Ray's processes wrote to stderr)
beside the record as ``_plantray.log``; the record names it (``log``) and Ray's own log directory
(``ray_logs``: the session's files on the driver's node).

``_plantray_output.json`` is written into a directory before anything else a command puts there: it tells a
later run that plantray made the directory, so only such a directory is ever replaced (quickstart's
``--out``, ``--overwrite``). A directory holding files without it is the user's and is never deleted.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from plantray import __version__
from plantray.config import ConfigError, to_json

RUN_RECORD = "_plantray_run.json"
LOG = "_plantray.log"
OUTPUT_MARKER = "_plantray_output.json"


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DDTHH:MM:SSZ`` (``dateIdentified`` and run records)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_record(command: str, cfg: Any, summary: dict, started: str) -> bytes:
    """The record of one run as JSON bytes.

    Args:
        command: the subcommand, e.g. ``"classify"``.
        cfg: the command's config dataclass.
        summary: the closing summary.
        started: when the run started (:func:`utc_now`).
    """
    record = {"command": command, "plantray_version": __version__, "started": started, "finished": utc_now(),
              "config": json.loads(to_json(cfg)), "summary": summary}
    return json.dumps(record, indent=2, default=str).encode()


def write_run_record(directory: str, command: str, cfg: Any, summary: dict, started: str) -> str:
    """Writes ``directory/_plantray_run.json`` (and, for a CLI run, the log so far as ``_plantray.log``).

    Returns:
        The record's URI.
    """
    from plantray import storage

    uri = storage.join(directory, RUN_RECORD)
    record = json.loads(run_record(command, cfg, summary, started))
    logs = copy_log(directory)
    if logs:
        record.update(logs)
    storage.write_bytes(uri, json.dumps(record, indent=2, default=str).encode())
    return uri


def copy_log(directory: str) -> dict:
    """Copies this CLI run's log so far into ``directory``; returns ``{"log", "ray_logs"}`` ({} for a library call)."""
    import sys

    from plantray import console, storage

    path = console.log_path()
    if path is None:
        return {}
    with open(path, "rb") as f:
        storage.write_bytes(storage.join(directory, LOG), f.read())
    logs = {"log": storage.join(directory, LOG)}
    ray = sys.modules.get("ray")  # only when this run started or joined Ray
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    if node is not None:
        logs["ray_logs"] = f"{node.get_session_dir_path()}/logs"
    return logs


def mark_output(directory: str, command: str) -> None:
    """Marks ``directory`` as made by plantray ``command``: written before any other file goes there.

    Args:
        directory: the command's output directory (local or object storage).
        command: the subcommand, e.g. ``"quickstart"``.
    """
    from plantray import storage

    marker = {"command": command, "plantray_version": __version__, "created": utc_now()}
    storage.write_bytes(storage.join(directory, OUTPUT_MARKER), json.dumps(marker, indent=2).encode())


def made_by(directory: str) -> str | None:
    """The plantray command that made ``directory``, from its marker or run record; None when nothing says so.

    Args:
        directory: a directory or prefix (local or object storage).
    Returns:
        The command (``"quickstart"``, ``"classify"``, ...) or None.
    """
    from plantray import storage

    if directory.lower().endswith(".zip"):
        return _archive_made_by(directory)
    for name in (OUTPUT_MARKER, RUN_RECORD):
        try:
            return str(json.loads(storage.read_bytes(storage.join(directory, name)))["command"])
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, KeyError, TypeError):
            continue
    # A classify OUTPUT of a run killed before its record, written before the marker existed.
    return "classify" if storage.exists(storage.join(directory, "_plantray_progress.json")) else None


def _archive_made_by(uri: str) -> str | None:
    """The command recorded inside a zip file (``export dwca`` puts its run record there), or None."""
    import zipfile

    from plantray import storage

    fs, path = storage.get_fs(uri)
    try:
        with fs.open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            return str(json.loads(zf.read(RUN_RECORD))["command"]) if RUN_RECORD in zf.namelist() else None
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError):
        return None


def check_replaceable(uri: str, flag: str) -> None:
    """Refuses to let ``--overwrite`` replace ``uri`` when it holds files plantray did not write.

    Args:
        uri: the output directory (or archive) that ``--overwrite`` would delete.
        flag: the flag that named it, for the message (``--output``, ``--embeddings``, ``OUT``).
    Raises:
        ConfigError: ``uri`` holds data and neither a marker nor a run record says plantray made it.
    """
    from plantray import storage

    if storage.holds_data(uri) and made_by(uri) is None:
        raise ConfigError(f"{flag} {uri!r} holds files plantray did not write (no {OUTPUT_MARKER} or {RUN_RECORD}), "
                          "and --overwrite replaces only plantray's own outputs; choose a new location or move "
                          "those files yourself")
