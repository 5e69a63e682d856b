"""``plantray export dwca``: predictions as a Darwin Core Archive (Identification History)."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.commands.record import check_replaceable, run_record, utc_now
from plantray.config import ConfigError, JobConfig, field


@dataclass
class ExportConfig(JobConfig):
    """Settings of ``plantray export dwca``."""

    predictions: str = field("", positional=True, required=True,
                             help="predictions Parquet dataset (plantray classify OUTPUT)")
    out: str = field("", positional=True, required=True, help="Darwin Core Archive to write (.zip; local or s3://...)")
    overwrite: bool = field(False, help="replace OUT if it exists")


def export_dwca(cfg: ExportConfig) -> dict:
    """Writes the Darwin Core Archive; returns a summary (the run record travels inside the archive).

    Args:
        cfg: predictions dataset and output archive.
    Returns:
        ``{"out", "occurrences", "identifications", "skipped_errors"}``.
    Raises:
        ConfigError: OUT exists (without ``overwrite``) or is not a .zip; predictions missing or lacking
            the columns an archive needs; PREDICTIONS is a partial classify OUTPUT (a run killed or still
            running: ``PartialOutput``, a ConfigError, exit 2).
    """
    from plantray import storage
    from plantray.darwincore.archive import open_predictions, write_archive

    if not cfg.out.lower().endswith(".zip"):
        raise ConfigError(f"OUT {cfg.out!r} must end in .zip (a Darwin Core Archive is a zip file)")
    storage.check_writable(cfg.out, "OUT")
    if storage.exists(cfg.out) and not cfg.overwrite:
        raise ConfigError(f"OUT {cfg.out!r} exists; choose another name or pass --overwrite")
    if cfg.overwrite:
        check_replaceable(cfg.out, "OUT")
    with storage.named(cfg.predictions, "PREDICTIONS"):
        dataset, key = open_predictions(cfg.predictions)
    started = utc_now()
    return write_archive(dataset, key, cfg.out, record=lambda s: run_record("export dwca", cfg, s, started))


CONFIG = ExportConfig
run = export_dwca
