"""``plantray export dwca``: predictions as a Darwin Core Archive (Identification History, Audubon Core media),
with the dataset's title, creators, contact, licence and citation in its EML."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.commands.record import check_replaceable, run_record, utc_now
from plantray.config import ConfigError, JobConfig, field

LICENSES = ["CC0-1.0", "CC-BY-4.0", "CC-BY-NC-4.0"]  # the three licences GBIF accepts for data


@dataclass
class ExportConfig(JobConfig):
    """Settings of ``plantray export dwca``."""

    predictions: str = field("", positional=True, required=True,
                             help="predictions Parquet dataset (plantray classify OUTPUT, or review apply's)")
    out: str = field("", positional=True, required=True, help="Darwin Core Archive to write (.zip; local or s3://...)")
    overwrite: bool = field(False, help="replace OUT if it exists")
    title: str = field("Machine identifications by plantray", help="the dataset's title (EML)")
    creator: list[str] = field([], help="a creator of the dataset, 'Given Family <email>' or 'Family, Given' "
                               "(repeat for several)")
    contact: str | None = field(None, help="the contact person, as --creator (default: the first creator)")
    organization: str | None = field(None, help="the creators' and contact's organisation (e.g. the herbarium)")
    license: str = field("CC-BY-4.0", choices=LICENSES, help="the data's licence: one of the three GBIF accepts")
    citation: str | None = field(None, help="how to cite the dataset (EML citation)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.license not in LICENSES:
            raise ConfigError(f"--license {self.license!r} is not one GBIF accepts; use one of {', '.join(LICENSES)}")

    def dataset_metadata(self):
        """The EML's :class:`~plantray.darwincore.eml.DatasetMetadata` (people parsed and checked).

        Raises:
            ConfigError: a name or e-mail address that cannot be read, an empty title.
        """
        from plantray.darwincore.eml import DatasetMetadata, parse_person

        creators = [parse_person(c, "--creator", self.organization) for c in self.creator or []]
        contact = parse_person(self.contact, "--contact", self.organization) if self.contact else None
        return DatasetMetadata(self.title, creators, contact, self.license, self.citation, self.organization)


def export_dwca(cfg: ExportConfig) -> dict:
    """Writes the Darwin Core Archive; returns a summary (the run record travels inside the archive).

    Args:
        cfg: predictions dataset, output archive and the dataset's metadata.
    Returns:
        ``{"out", "occurrences", "identifications", "identifications_by_person", "media", "skipped_errors"}``.
    Raises:
        ConfigError: OUT exists (without ``overwrite``) or is not a .zip; bad metadata flags; predictions missing
            or lacking the columns an archive needs; PREDICTIONS is a partial classify OUTPUT (a run killed or
            still running: ``PartialOutput``, a ConfigError, exit 2).
    """
    from plantray import storage
    from plantray.darwincore.archive import open_predictions, write_archive

    if not cfg.out.lower().endswith(".zip"):
        raise ConfigError(f"OUT {cfg.out!r} must end in .zip (a Darwin Core Archive is a zip file)")
    metadata = cfg.dataset_metadata()
    storage.check_writable(cfg.out, "OUT")
    if storage.exists(cfg.out) and not cfg.overwrite:
        raise ConfigError(f"OUT {cfg.out!r} exists; choose another name or pass --overwrite")
    if cfg.overwrite:
        check_replaceable(cfg.out, "OUT")
    with storage.named(cfg.predictions, "PREDICTIONS"):
        dataset, key = open_predictions(cfg.predictions)
    started = utc_now()
    return write_archive(dataset, key, cfg.out, record=lambda s: run_record("export dwca", cfg, s, started),
                         metadata=metadata)


def format_summary(summary: dict) -> str:
    """The closing line printed by the CLI."""
    return (f"exported {summary['identifications']} identifications ({summary['identifications_by_person']} by "
            f"people) of {summary['occurrences']} occurrences and {summary['media']} images -> {summary['out']}"
            + (f" ({summary['skipped_errors']} failed images left out)" if summary["skipped_errors"] else ""))


CONFIG = ExportConfig
run = export_dwca
