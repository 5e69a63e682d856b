"""``plantray table optimize|vacuum|migrate``: maintenance of nightly's Delta predictions table.

- ``optimize`` compacts the small files that many nights (and many chunks) leave into fewer large ones
  (delta-rs ``optimize.compact``; a new version with the same rows, older versions still readable).
- ``vacuum`` deletes files no version within the retention period references (replaced by ``optimize``,
  or written by runs that died before committing). Below Delta's default retention (168 hours) a reader
  of an older version, or a nightly run still writing, could lose files: refused unless
  ``--allow-short-retention``.
- ``migrate`` converts a table of the old ``_log/`` layout: each committed log entry, in order, becomes one
  Delta version adding the same files (run id, model SHA-256, key and original commit time kept in the
  commit's metadata); the old log is moved aside to ``_log.migrated-<UTC time>``, never deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from plantray.config import ConfigError, check, field

log = logging.getLogger(__name__)
ACTIONS = ["optimize", "vacuum", "migrate"]
SAFE_RETENTION_HOURS = 168.0  # Delta's default delta.deletedFileRetentionDuration (one week)


@dataclass
class TableConfig:
    """Settings of ``plantray table``."""

    action: str = field("", positional=True, required=True, choices=ACTIONS,
                        help="optimize (compact small files), vacuum (delete unreferenced files) or migrate "
                             "(convert an old _log/ table to Delta Lake)")
    table: str = field("", required=True, help="the predictions table (local or s3://...)")
    retention_hours: float = field(SAFE_RETENTION_HOURS, help="vacuum: keep files that versions of the last "
                                   "this many hours reference")
    allow_short_retention: bool = field(False, help="vacuum: accept --retention-hours below 168 (readers of "
                                        "older versions and runs in progress may lose files)")
    dry_run: bool = field(False, help="vacuum: only list the files that would be deleted")
    target_size_mb: int = field(256, help="optimize: target size of compacted files")


def validate(cfg: TableConfig) -> None:
    """Checks the flags and the table's layout before any work.

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray.storage import delta
    from plantray.storage import table as tbl

    check([(cfg.retention_hours >= 0, f"--retention-hours {cfg.retention_hours} must be >= 0"),
           (cfg.retention_hours >= SAFE_RETENTION_HOURS or cfg.allow_short_retention or cfg.action != "vacuum",
            f"--retention-hours {cfg.retention_hours} is below the safe {SAFE_RETENTION_HOURS:g} hours: readers "
            "of older versions and nightly runs still writing could lose files; pass --allow-short-retention "
            "to do it anyway"),
           (cfg.target_size_mb >= 1, f"--target-size-mb {cfg.target_size_mb} must be >= 1")])
    tbl.check_location(cfg.table)
    if cfg.action == "migrate":
        if delta.is_delta(cfg.table):
            raise ConfigError(f"table {cfg.table!r} is already a Delta table; nothing to migrate")
        if not tbl.is_old_layout(cfg.table):
            raise ConfigError(f"table {cfg.table!r} has no _log/ directory: not a plantray table of the old layout")
        return
    tbl.check_layout(cfg.table)
    if not delta.is_delta(cfg.table):
        raise ConfigError(f"table {cfg.table!r} is not a Delta table; create it with `plantray nightly` first")


def optimize(cfg: TableConfig) -> dict:
    """Compacts small files. Returns the version before and after and delta-rs's metrics."""
    from plantray.storage import delta

    table = delta.open_table(cfg.table)
    before = table.version()
    metrics = table.optimize.compact(target_size=cfg.target_size_mb * 1024 * 1024)
    return {"action": "optimize", "table": cfg.table, "version_before": before,
            "version": delta.open_table(cfg.table).version(), "files_added": metrics.get("numFilesAdded"),
            "files_removed": metrics.get("numFilesRemoved")}


def vacuum(cfg: TableConfig) -> dict:
    """Deletes files no version of the retention period references. Returns the files (to be) deleted."""
    from plantray.storage import delta

    table = delta.open_table(cfg.table)
    # full=True also deletes files no version ever referenced (attempts that died before their commit).
    files = table.vacuum(retention_hours=int(cfg.retention_hours), dry_run=cfg.dry_run,
                         enforce_retention_duration=not cfg.allow_short_retention, full=True)
    return {"action": "vacuum", "table": cfg.table, "dry_run": cfg.dry_run, "files": sorted(files),
            "retention_hours": cfg.retention_hours}


def run(cfg: TableConfig) -> dict:
    """Runs ``plantray table ACTION``; returns its summary.

    Raises:
        ConfigError: bad flags or a table of the wrong layout, before any change.
    """
    validate(cfg)
    if cfg.action == "optimize":
        return optimize(cfg)
    if cfg.action == "vacuum":
        return vacuum(cfg)
    from plantray.storage.migrate import migrate

    return {"action": "migrate", "table": cfg.table, **migrate(cfg.table)}


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    if summary["action"] == "optimize":
        return (f"optimized {summary['table']}: version {summary['version_before']} -> {summary['version']}, "
                f"{summary['files_removed']} files compacted into {summary['files_added']}")
    if summary["action"] == "vacuum":
        verb = "would delete" if summary["dry_run"] else "deleted"
        return f"vacuum {summary['table']}: {verb} {len(summary['files'])} files"
    return (f"migrated {summary['table']}: {summary['entries']} log entries -> Delta versions "
            f"{summary['versions']}; old log moved to {summary['old_log']}")


CONFIG = TableConfig
