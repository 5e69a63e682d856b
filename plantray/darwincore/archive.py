"""Writing predictions as a Darwin Core Archive: an Occurrence core, the Identification History extension and an
Audubon Core multimedia extension, streamed from the predictions.

- ``occurrence.txt`` (core): one row per occurrence with a classified (or reviewed) image; when a person reviewed
  one of its images, the person's identification is repeated here as the record's current identification (the
  Identification History extension asks for that; the latest ``dateIdentified`` wins).
- ``identification.txt`` (Identification History, ``dwc:Identification``): every identification of every image,
  oldest first: the machine's, then, for a reviewed image, the person's
  (:func:`plantray.darwincore.history.identifications`).
- ``multimedia.txt`` (Audubon Core, ``ac:Multimedia``): the image each identification was made from, with its
  licence, rights holder and creator.
- ``meta.xml`` and ``eml.xml`` (:mod:`plantray.darwincore.meta`, :mod:`plantray.darwincore.eml`).
"""

from __future__ import annotations

import datetime as dt
import zipfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantray import columns as col
from plantray import storage
from plantray.config import ConfigError
from plantray.darwincore import meta as m
from plantray.darwincore.eml import DatasetMetadata, eml_xml
from plantray.darwincore.history import current_identification, identifications, is_person
from plantray.inference.outputs import check_complete

REQUIRED = (col.IMAGE_URI, col.SCIENTIFIC_NAME, col.ERROR)
# The current identification, repeated in the core for reviewed records.
CORE_IDENTIFICATION = ("identificationID", "scientificName", "taxonRank", "kingdom", "family", "genus", "taxonID",
                       "nameAccordingTo", "identifiedBy", "dateIdentified", "identificationVerificationStatus",
                       "identificationRemarks")
_BATCH_ROWS = 10_000
# Every column a history or media row may need (those absent from the predictions are skipped).
_ROW_COLUMNS = (col.IMAGE_URI, col.IMAGE_URI_ABSOLUTE, col.CONFIDENCE, col.MODEL_NAME, col.MODEL_VERSION,
                col.MODEL_SHA256, col.ERROR, col.TAG, "format", "type", "license", "rightsHolder", "creator",
                *m.IDENTIFICATION_TERMS,
                *col.MACHINE_COLUMNS, *col.REVIEW_COLUMNS, col.VERBATIM_IDENTIFICATION)


def open_predictions(uri: str) -> tuple[pads.Dataset, str]:
    """Opens and checks a predictions dataset; returns (dataset, occurrence key column).

    Raises:
        ConfigError: missing, not Parquet, or lacking the columns an archive needs.
        PartialOutput: a classify OUTPUT whose run has not finished (killed, or still running).
    """
    if not storage.holds_data(uri):
        raise ConfigError(f"PREDICTIONS {uri!r} does not exist or is empty; give a classify OUTPUT")
    check_complete(uri)
    fs, path = storage.arrow_fs(uri)
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet", exclude_invalid_files=True)
        # Files whose column was all null hold type null: unify so every file reads as one schema.
        schema = pa.unify_schemas([f.physical_schema for f in dataset.get_fragments()], promote_options="permissive")
        dataset = pads.dataset(path, filesystem=fs, format="parquet", schema=schema, exclude_invalid_files=True)
    except (pa.ArrowInvalid, OSError) as e:
        raise ConfigError(f"PREDICTIONS {uri!r} is not a Parquet dataset ({e})") from None
    names = dataset.schema.names
    missing = [c for c in REQUIRED if c not in names]
    key = next((k for k in (col.GBIF_ID, col.OCCURRENCE_ID) if k in names), None)
    if missing or key is None:
        raise ConfigError(f"PREDICTIONS {uri!r} lacks {missing or ['gbifID or occurrenceID']}: "
                          "export needs plantray classify output of a Darwin Core Archive or a manifest with "
                          "gbifID/occurrenceID")
    return dataset, key


def _kept(batch: pa.RecordBatch) -> pa.Array:
    """Rows that hold an identification: classified (null or "" error), or decided by a person."""
    ok = pc.fill_null(pc.equal(batch.column(col.ERROR), ""), True)
    if col.REVIEW_DECISION in batch.schema.names:
        decided = pc.is_in(batch.column(col.REVIEW_DECISION), value_set=pa.array(col.PERSON_DECISIONS))
        ok = pc.or_(ok, pc.fill_null(decided, False))
    return ok


def _batches(dataset: pads.Dataset, columns: list[str]):
    """Rows holding an identification as pylist dicts, batch by batch, plus each batch's count of the others."""
    present = [c for c in dict.fromkeys(columns) if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=present, batch_size=_BATCH_ROWS):
        kept = pa.Table.from_batches([batch]).filter(_kept(batch))
        yield kept.to_pylist(), batch.num_rows - kept.num_rows


def _clean(value) -> str:
    # GBIF layout has no quoting: a tab or line break inside a value would shift or split the row.
    if value is None:
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _line(values: list) -> bytes:
    return ("\t".join(_clean(v) for v in values) + "\n").encode("utf-8")


def _current(dataset: pads.Dataset, key: str) -> dict:
    """Occurrence key -> its current identification, for occurrences a person reviewed (few rows, in memory)."""
    if col.REVIEW_DECISION not in dataset.schema.names:
        return {}
    current: dict = {}
    for rows, _ in _batches(dataset, [key, *_ROW_COLUMNS]):
        for row in rows:
            if row[key] is not None and is_person(row):
                current[row[key]] = current_identification(current.get(row[key]), row)
    return current


def _write_core(zf: zipfile.ZipFile, dataset: pads.Dataset, key: str, terms: list[str]) -> tuple[int, int]:
    """Writes occurrence.txt; returns (occurrences, rows without an identification)."""
    current = _current(dataset, key)
    seen: set = set()
    failed = 0
    with zf.open("occurrence.txt", "w", force_zip64=True) as f:
        f.write(_line([key, *terms, *CORE_IDENTIFICATION]))
        for rows, bad in _batches(dataset, [key, *terms, col.ERROR, col.REVIEW_DECISION]):
            failed += bad
            for row in rows:
                if row[key] is None or row[key] in seen:
                    continue
                seen.add(row[key])
                ident = current.get(row[key]) or {}
                f.write(_line([row[key], *(row.get(t) for t in terms), *(ident.get(t) for t in CORE_IDENTIFICATION)]))
    return len(seen), failed


def _write_identifications(zf: zipfile.ZipFile, dataset: pads.Dataset, key: str) -> dict:
    """Writes identification.txt; returns counts and the distinct (model, version, sha) tuples."""
    terms = list(m.IDENTIFICATION_TERMS)
    models: set = set()
    counts = {"identifications": 0, "by_person": 0}
    with zf.open("identification.txt", "w", force_zip64=True) as f:
        f.write(_line([key, *terms]))
        for rows, _ in _batches(dataset, [key, *_ROW_COLUMNS]):
            for row in rows:
                if row[key] is None:
                    continue
                if row.get(col.MODEL_SHA256):
                    models.add((row.get("model_name"), row.get("model_version"), row.get("model_sha256")))
                for ident in identifications(row):
                    f.write(_line([row[key], *(ident.get(t) for t in terms)]))
                    counts["identifications"] += 1
                    counts["by_person"] += ident.get("classificationMethod") == col.HUMAN
    return {**counts, "models": models}


def _media(row: dict) -> dict:
    """The Audubon Core description of the image a row was classified from."""
    return {"identifier": row[col.IMAGE_URI], "type": row.get("type") or "StillImage",
            "accessURI": row.get(col.IMAGE_URI_ABSOLUTE) or row[col.IMAGE_URI], "format": row.get("format"),
            "subjectPart": row.get(col.TAG),
            "license": row.get("license"), "rightsHolder": row.get("rightsHolder"), "creator": row.get("creator")}


def _write_multimedia(zf: zipfile.ZipFile, dataset: pads.Dataset, key: str) -> int:
    """Writes multimedia.txt (one row per image); returns the rows written."""
    terms, count = list(m.MULTIMEDIA_TERMS), 0
    with zf.open("multimedia.txt", "w", force_zip64=True) as f:
        f.write(_line([key, *terms]))
        for rows, _ in _batches(dataset, [key, *_ROW_COLUMNS]):
            for row in rows:
                if row[key] is not None:
                    media = _media(row)
                    f.write(_line([row[key], *(media.get(t) for t in terms)]))
                    count += 1
    return count


def _abstract(summary: dict, models: set) -> tuple[str, str]:
    """(abstract, method description) of the EML."""
    names = ", ".join(sorted(f"{n} {v} (sha256 {str(s)[:12]})" for n, v, s in models)) or "plantray"
    by_person = summary["identifications_by_person"]
    abstract = (f"{summary['identifications']} identifications of images of {summary['occurrences']} occurrences: "
                f"{summary['identifications'] - by_person} by {names}, {by_person} by people who reviewed the "
                "images. Exported by plantray.")
    method = ("Images were classified by a convolutional neural network (plantray); the confidence of each machine "
              "identification is in identificationRemarks and the image it was made from in "
              "identificationReferences; machine identifications are unverified."
              + (" People reviewed some of them from the image (identificationVerificationStatus 'verified using "
                 "recorded media', classificationMethod 'human'); the person's identification is the record's "
                 "current one and the machine's stays in the identification history." if by_person else ""))
    return abstract, method


def write_archive(dataset: pads.Dataset, key: str, out: str, record=None,
                  metadata: DatasetMetadata | None = None) -> dict:
    """Writes the Darwin Core Archive ``out`` (a .zip, local or object storage), streaming the predictions.

    Args:
        dataset: from :func:`open_predictions`.
        key: the occurrence key column.
        out: the archive to write.
        record: ``summary -> bytes`` of the run record stored in the archive (None: none).
        metadata: title, creators, contact, licence and citation of the EML (default: plantray's).
    Returns:
        ``{"out", "occurrences", "identifications", "identifications_by_person", "media", "skipped_errors"}``.
    """
    metadata = metadata or DatasetMetadata()
    core_terms = [t for t in m.OCCURRENCE_TERMS if t != key and t in dataset.schema.names]
    now = dt.datetime.now(dt.timezone.utc)
    with storage.open_for_write(out) as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        occurrences, failed = _write_core(zf, dataset, key, core_terms)
        counts = _write_identifications(zf, dataset, key)
        media = _write_multimedia(zf, dataset, key)
        summary = {"out": out, "occurrences": occurrences, "identifications": counts["identifications"],
                   "identifications_by_person": counts["by_person"], "media": media, "skipped_errors": failed}
        files = [m.TextFile("occurrence.txt", m.OCCURRENCE_ROW_TYPE, key, {
                     **{t: m.OCCURRENCE_TERMS[t] for t in core_terms},
                     **{t: m.IDENTIFICATION_TERMS[t] for t in CORE_IDENTIFICATION}}, core=True),
                 m.TextFile("identification.txt", m.IDENTIFICATION_ROW_TYPE, key, m.IDENTIFICATION_TERMS),
                 m.TextFile("multimedia.txt", m.MULTIMEDIA_ROW_TYPE, key, m.MULTIMEDIA_TERMS)]
        zf.writestr("meta.xml", m.meta_xml(files))
        abstract, method = _abstract(summary, counts["models"])
        zf.writestr("eml.xml", eml_xml(metadata, abstract, method, f"plantray-export-{now:%Y%m%dT%H%M%SZ}", now))
        if record is not None:
            zf.writestr("_plantray_run.json", record(summary))
    return summary
