"""What ``review build`` reads: a classify OUTPUT, a nightly Delta table or an ``--aggregate occurrence`` output.

:func:`open_predictions` tells them apart and checks them on the driver without Ray (so a wrong path is
refused at once); :func:`read_rows` gives their rows as a lazy Ray Dataset. The run record beside the
predictions (``_plantray_run.json``) names the model (whose labels corrections complete from) and the input
(whose directory relative ``image_uri`` values resolve against).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from plantray import columns as col
from plantray import storage
from plantray.config import ConfigError

OCCURRENCES_SUFFIX = "_occurrences"  # classify --aggregate occurrence writes OUTPUT_occurrences
IMAGES, TABLE, OCCURRENCES = "image predictions", "nightly table", "occurrence predictions"
_NEEDED = (col.IMAGE_URI, "identificationID", col.ERROR)
RUN_RECORD = "_plantray_run.json"  # plantray.commands.record.RUN_RECORD (commands stand later in the pipeline)


@dataclass
class Predictions:
    """An opened predictions input.

    Attributes:
        uri: where it is.
        kind: :data:`IMAGES` (a Parquet dataset, one row per image), :data:`TABLE` (nightly's Delta table,
            read at its newest prediction per image) or :data:`OCCURRENCES` (one row per occurrence).
        columns: its column names.
        config: the config of the run that wrote it (classify's or the newest nightly's), {} when unknown.
        images: for occurrences, the per-image predictions their images come from.
    """

    uri: str
    kind: str
    columns: list[str]
    config: dict = field(default_factory=dict)
    images: Predictions | None = None

    @property
    def occurrence_key(self) -> str | None:
        """The column naming an occurrence (``gbifID``, else ``occurrenceID``), None when there is none."""
        return next((k for k in (col.GBIF_ID, col.OCCURRENCE_ID) if k in self.columns), None)

    def image_predictions(self) -> Predictions:
        """The per-image predictions (itself, or an occurrence output's images)."""
        return self.images or self


def _parquet_columns(uri: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.dataset as pads

    fs, path = storage.arrow_fs(uri)
    try:
        return pads.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=True).schema.names
    except (pa.ArrowInvalid, OSError) as e:
        raise ConfigError(f"PREDICTIONS {uri!r} is not a Parquet dataset or Delta table ({e})") from None


def _record(uri: str) -> dict:
    """The run record in ``uri`` (``{}`` when there is none)."""
    try:
        return json.loads(storage.read_bytes(storage.join(uri, RUN_RECORD)))
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}


def run_config(uri: str) -> dict:
    """The config of the run that made the predictions in ``uri`` (``{}`` when unknown).

    ``review apply``'s OUTPUT keeps its own flags in its record's ``config`` and those of the run that made
    the predictions (``model``, ``input``) in ``summary.source_config``; the latter win, so labels and
    relative image paths are found the same for applied predictions as for classify's.
    """
    record = _record(uri)
    config = record.get("config") or {}
    if record.get("command") == "review apply":
        return {**config, **(record.get("summary") or {}).get("source_config", {})}
    return config


def source_predictions(uri: str) -> str:
    """The predictions ``review apply`` read to write ``uri``, followed back to the first that it did not
    write (``uri`` itself when it is not an applied OUTPUT)."""
    seen = set()
    while uri not in seen:
        seen.add(uri)
        record = _record(uri)
        if record.get("command") != "review apply" or not (record.get("config") or {}).get("predictions"):
            return uri
        uri = record["config"]["predictions"]
    return uri


def _run_config(uri: str, kind: str) -> dict:
    """The config of the run that wrote ``uri``: its own run record, or a nightly table's newest run's."""
    if kind != TABLE:
        return run_config(uri)
    fs, path = storage.get_fs(storage.join(uri, "_runs"))
    records = sorted(fs.glob(f"{path}/*/{RUN_RECORD}")) if fs.exists(path) else []
    newest = max(records, key=lambda p: fs.info(p).get("mtime") or fs.info(p).get("LastModified") or 0,
                 default=None)
    if newest is None:
        return {}
    with fs.open(newest, "rb") as f:
        return json.loads(f.read()).get("config", {})


def _check_columns(p: Predictions, needed: tuple, what: str) -> None:
    missing = [c for c in needed if c not in p.columns]
    if missing:
        raise ConfigError(f"{what} {p.uri!r} lacks {', '.join(missing)}: a review needs plantray predictions "
                          "(classify's OUTPUT, a nightly table or an --aggregate occurrence output) written by "
                          "this version of plantray")


def _open_one(uri: str, what: str) -> Predictions:
    from plantray.inference.outputs import check_complete
    from plantray.storage import delta

    if not storage.holds_data(uri):
        raise ConfigError(f"{what} {uri!r} does not exist or is empty; give a classify OUTPUT, a nightly table or "
                          "an --aggregate occurrence output")
    if storage.scheme(uri) in ("file", "s3", "s3a") and delta.is_delta(uri):
        names = [f.name for f in delta.open_table(uri).schema().fields]
        return Predictions(uri, TABLE, names, _run_config(uri, TABLE))
    check_complete(uri)
    names = _parquet_columns(uri)
    kind = OCCURRENCES if "images_used" in names and col.IMAGE_URI not in names else IMAGES
    return Predictions(uri, kind, names, _run_config(uri, kind))


def open_predictions(uri: str, images: str | None = None) -> Predictions:
    """Opens and checks PREDICTIONS (and, for occurrences, their per-image predictions).

    Args:
        uri: classify's OUTPUT, a nightly table or an ``--aggregate occurrence`` output.
        images: an occurrence output's per-image predictions (default: the classify OUTPUT beside it,
            ``OUTPUT_occurrences`` -> ``OUTPUT``).
    Returns:
        The opened :class:`Predictions`.
    Raises:
        ConfigError: missing, partial (a classify run not finished), not predictions, or lacking a column the
            review needs (``image_uri``, ``identificationID``, ``error``; an occurrence key for occurrences).
    """
    p = _open_one(uri, "PREDICTIONS")
    if p.kind != OCCURRENCES:
        _check_columns(p, _NEEDED, "PREDICTIONS")
        return p
    if p.occurrence_key is None:
        raise ConfigError(f"PREDICTIONS {uri!r} has no gbifID or occurrenceID column to show its images by")
    # OUTPUT_occurrences -> OUTPUT; for review apply's OUTPUT, the OUTPUT_occurrences it was applied to
    origin = source_predictions(uri).rstrip("/")
    images = images or (origin[: -len(OCCURRENCES_SUFFIX)] if origin.endswith(OCCURRENCES_SUFFIX) else None)
    if not images:
        raise ConfigError(f"PREDICTIONS {uri!r} holds occurrences: pass --images with the per-image predictions "
                          "(the classify OUTPUT it was aggregated from)")
    p.images = _open_one(images, "--images")
    _check_columns(p.images, (*_NEEDED, p.occurrence_key), "--images")
    p.config = p.config or p.images.config
    return p


def image_base(p: Predictions) -> str:
    """Where relative ``image_uri`` values resolve: the directory of the manifest the run read (as classify
    resolved them); "" (as given) when the run is unknown or its input was not a manifest."""
    from plantray.sources.manifest import manifest_format

    source = p.image_predictions().config.get("input") or ""
    return storage.dirname(source) if source and manifest_format(source) else ""


def read_rows(p: Predictions):
    """The rows of one predictions input as a lazy Ray Dataset (a nightly table: the newest per image).

    Args:
        p: an opened image-level or occurrence-level input (not the pair: see :attr:`Predictions.images`).
    """
    import ray

    if p.kind == TABLE:
        from plantray.storage.table import latest

        return latest(p.uri)
    fs, path = storage.arrow_fs(p.uri)
    return ray.data.read_parquet(path, filesystem=fs)
