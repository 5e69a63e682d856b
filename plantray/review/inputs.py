"""What ``review apply`` reads: the predictions (a classify OUTPUT, an ``--aggregate occurrence`` output, an
earlier ``review apply`` output or a nightly Delta table) and which of their rows each decision names.

Nothing is collected: matching streams only the id columns (pyarrow batches) and keeps the few rows decided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantray import columns as col
from plantray import storage
from plantray.config import ConfigError
from plantray.review.apply import Resolved, occurrence_key, with_occurrence_ids
from plantray.review.decisions import DecisionsError
from plantray.review.predictions import OCCURRENCES_SUFFIX, source_predictions

_BATCH = 65_536


@dataclass
class Predictions:
    """An opened predictions input.

    Attributes:
        uri: where it is.
        dataset: its rows (a nightly table: every committed file of its newest version, with the table's schema).
        table: the table's snapshot (:class:`plantray.storage.table.Snapshot`), None for Parquet outputs.
        occurrence_key: ``gbifID``/``occurrenceID`` when the rows are occurrences (no ``image_uri``).
    """

    uri: str
    dataset: pads.Dataset
    table: object | None = None
    occurrence_key: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return self.dataset.schema.names


def _parquet(uri: str, what: str) -> tuple[pads.Dataset, list[str]]:
    fs, path = storage.arrow_fs(uri)
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=True)
        files = sorted(dataset.files)
        schema = pa.unify_schemas([f.physical_schema for f in dataset.get_fragments()], promote_options="permissive")
        return pads.dataset(files, filesystem=fs, format="parquet", schema=schema), files
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise ConfigError(f"{what} {uri!r} is not a Parquet dataset or a Delta table ({e})") from None


def _table(uri: str) -> Predictions:
    from plantray.storage import table as tbl

    tbl.check_layout(uri)
    snap = tbl.snapshot(uri)
    schema = pa.schema(snap.table.schema().to_arrow())
    uris = snap.table.file_uris()
    if not uris:
        raise ConfigError(f"--predictions {uri!r} is a table with no committed predictions yet")
    fs = storage.arrow_fs(uris[0])[0]
    dataset = pads.dataset([storage.arrow_fs(u)[1] for u in uris], filesystem=fs, format="parquet", schema=schema)
    return Predictions(uri, dataset, snap)


def open_predictions(uri: str) -> Predictions:
    """Opens and checks PREDICTIONS.

    Raises:
        ConfigError: missing, partial (a classify run not finished), not predictions, or without the columns
            decisions name rows by (``identificationID``; an occurrence key for occurrence rows).
    """
    from plantray.inference.outputs import check_complete
    from plantray.storage import delta

    if not storage.holds_data(uri):
        raise ConfigError(f"--predictions {uri!r} does not exist or is empty; give a classify OUTPUT, an "
                          "--aggregate occurrence output or a nightly table")
    if storage.scheme(uri) in ("file", "s3", "s3a") and delta.is_delta(uri):
        return _table(uri)
    check_complete(uri)
    dataset, files = _parquet(uri, "--predictions")
    key = occurrence_key(dataset.schema.names)
    if col.IDENTIFICATION_ID not in dataset.schema.names and key is None:
        raise ConfigError(f"--predictions {uri!r} has no identificationID column (and is not an occurrence "
                          "output): give plantray predictions")
    return Predictions(uri, dataset, None, key, files)


def _id_columns(names: list[str], extra: list[str]) -> list[str]:
    return [c for c in (col.IDENTIFICATION_ID, col.MACHINE_PREFIX + col.IDENTIFICATION_ID, *extra) if c in names]


def _found_ids(dataset: pads.Dataset, wanted: set[str], columns: list[str]):
    """Batches of the rows (``columns`` only) whose identificationID or machine_identificationID is in ``wanted``."""
    values = pa.array(sorted(wanted), pa.string())
    for batch in dataset.to_batches(columns=columns, batch_size=_BATCH):
        mask = None
        for name in _id_columns(batch.schema.names, []):
            hit = pc.fill_null(pc.is_in(batch.column(name).cast(pa.string()), value_set=values), False)
            mask = hit if mask is None else pc.or_(mask, hit)
        if mask is not None and pc.any(mask).as_py():
            yield pa.Table.from_batches([batch]).filter(mask)


def _unknown(decisions: dict[str, Resolved], found: set[str], where: str) -> None:
    missing = sorted((r.decision.line, i) for i, r in decisions.items() if i not in found)
    if missing:
        line, ident = missing[0]
        more = f" (and {len(missing) - 1} more: lines {', '.join(str(n) for n, _ in missing[1:6])})" if len(
            missing) > 1 else ""
        raise DecisionsError(f"--decisions: line {line}: identificationID {ident!r} names no row of {where}{more}; "
                             "apply the decisions to the predictions the review site was built from; nothing was "
                             "written")


def _twice(first: Resolved, second: Resolved, what: str) -> DecisionsError:
    a, b = sorted((first.decision.line, second.decision.line))
    return DecisionsError(f"--decisions: lines {a} and {b} decide the same {what}; keep one of them; nothing was "
                          "written")


def _batch_ids(table: pa.Table, key: str | None) -> list[set[str]]:
    """Per row, the ids a decision may name it by (its identificationID, computed for occurrence rows that have
    none, and its machine's)."""
    if key is not None:  # occurrence rows: their deterministic id when they carry none
        if col.IDENTIFICATION_ID not in table.column_names:
            table = table.append_column(col.IDENTIFICATION_ID, pa.nulls(table.num_rows, pa.string()))
        table = with_occurrence_ids(table, key)
    columns = [table.column(c).to_pylist() for c in _id_columns(table.column_names, [])]
    return [{v for v in values if v} for values in zip(*columns)]


def _match_rows(p: Predictions, decisions: dict[str, Resolved]) -> set[str]:
    """The decisions' identificationIDs found in the rows of Parquet predictions.

    Raises:
        DecisionsError: two decisions naming one row.
    """
    key, ids, found = p.occurrence_key, set(decisions), set()
    columns = _id_columns(p.names, [key] if key else [])
    batches = (pa.Table.from_batches([b]) for b in p.dataset.to_batches(columns=columns, batch_size=_BATCH)) \
        if key else _found_ids(p.dataset, ids, columns)
    for table in batches:
        for row_ids in _batch_ids(table, key):
            hits = row_ids & ids
            if len(hits) > 1:
                first, second = sorted((decisions[h] for h in hits), key=lambda r: r.decision.line)
                raise _twice(first, second, "prediction")
            found |= hits
    return found


def _occurrence_decisions(p: Predictions, decisions: dict[str, Resolved]) -> dict[str, Resolved]:
    """Occurrence key value -> decision, for occurrence rows decided through their images (the review page
    writes one row per image of an occurrence card), from the per-image predictions beside them.

    Raises:
        DecisionsError: an identificationID in no image, or images of one occurrence decided differently.
    """
    uri = source_predictions(p.uri).rstrip("/")  # review apply's OUTPUT: the OUTPUT_occurrences it was applied to
    if not uri.endswith(OCCURRENCES_SUFFIX):
        _unknown(decisions, set(), f"--predictions {p.uri!r}")
    images, _ = _parquet(uri[: -len(OCCURRENCES_SUFFIX)], "the occurrences' images")
    key = p.occurrence_key
    by_occurrence: dict[str, Resolved] = {}
    found: set[str] = set()
    for table in _found_ids(images, set(decisions), _id_columns(images.schema.names, [key])):
        for row in table.to_pylist():
            ident = row.get(col.IDENTIFICATION_ID)
            if ident not in decisions or row.get(key) is None:
                continue
            found.add(ident)
            occurrence, r = str(row[key]), decisions[ident]
            earlier = by_occurrence.setdefault(occurrence, r)
            if not earlier.decision.same_as(r.decision):
                raise _twice(earlier, r, f"occurrence ({key} {occurrence}) differently")
    _unknown(decisions, found, f"--predictions {p.uri!r} or its images")
    return by_occurrence


def targets(p: Predictions, decisions: dict[str, Resolved]) -> tuple[dict[str, Resolved], dict[str, Resolved]]:
    """Which rows of Parquet predictions the decisions name.

    Returns:
        (identificationID -> decision, occurrence key value -> decision for occurrences decided by their images).
    Raises:
        DecisionsError: an identificationID in no row, or two decisions on one row (with their line numbers).
    """
    found = _match_rows(p, decisions)
    rest = {i: r for i, r in decisions.items() if i not in found}
    by_occurrence = {}
    if rest and p.occurrence_key:
        by_occurrence = _occurrence_decisions(p, rest)
    elif rest:
        _unknown(rest, set(), f"--predictions {p.uri!r}")
    return {i: decisions[i] for i in found}, by_occurrence


def table_rows(p: Predictions, decisions: dict[str, Resolved]) -> pa.Table:
    """The rows of a nightly table that decisions name: for each decision, the newest committed row holding
    its identificationID (a table keeps every night's rows; readers take the newest per image).

    Raises:
        DecisionsError: an identificationID in no row, or two decisions on one image.
    """
    from plantray.storage import table as tbl

    snap = p.table
    commits = tbl.commit_of(snap)
    chosen: dict[str, tuple[int, dict]] = {}
    for table in _found_ids(p.dataset, set(decisions), p.names):
        for row in table.to_pylist():
            version = commits.get((row.get(col.RUN_ID), row.get(col.RUN_CHUNK) or 0), (-1, -1))[0]
            for ident in {row.get(c) for c in _id_columns(p.names, [])} & set(decisions):
                if ident not in chosen or version > chosen[ident][0]:
                    chosen[ident] = (version, row)
    _unknown(decisions, set(chosen), f"table {p.uri!r}")
    key_columns = snap.key() or [col.IMAGE_URI]
    images: dict[tuple, str] = {}
    for ident, (_, row) in chosen.items():
        image = tuple(str(row.get(c)) for c in key_columns)
        if image in images:
            raise _twice(decisions[images[image]], decisions[ident], f"image ({', '.join(image)})")
        images[image] = ident
    rows = [row for _, row in sorted(chosen.values(), key=lambda vr: str(vr[1].get(col.IDENTIFICATION_ID)))]
    return pa.Table.from_pylist(rows, schema=p.dataset.schema)
