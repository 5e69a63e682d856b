"""Writing predictions as a Darwin Core Archive with the Identification History extension."""

from __future__ import annotations

import datetime as dt
import zipfile
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantray import columns as col
from plantray import storage
from plantray.config import ConfigError
from plantray.darwincore.terms import identification_id, identification_remarks
from plantray.inference.outputs import check_complete

DWC = "http://rs.tdwg.org/dwc/terms/"
DCT = "http://purl.org/dc/terms/"
GBIF = "http://rs.gbif.org/terms/1.0/"
# Camtrap DP defines classificationMethod/classificationProbability without term URIs (its table schema maps
# only classifiedBy and classificationTimestamp to Darwin Core): the field's definition in the published
# schema stands for the term.
CAMTRAP_DP = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/observations-table-schema.json#"
OCCURRENCE_TERMS = {"gbifID": GBIF, "occurrenceID": DWC, "datasetKey": GBIF, "basisOfRecord": DWC,
                    "countryCode": DWC}
# Identification History terms, in file order; image rights travel as dcterms (they describe the image).
IDENTIFICATION_TERMS = {"identificationID": DWC, "scientificName": DWC, "taxonRank": DWC, "kingdom": DWC,
                        "family": DWC, "genus": DWC, "taxonID": DWC, "scientificNameID": DWC, "identifiedBy": DWC,
                        "identifiedByID": DWC, "dateIdentified": DWC, "identificationRemarks": DWC,
                        "identificationVerificationStatus": DWC, "identificationReferences": DWC,
                        "classificationMethod": CAMTRAP_DP, "classificationProbability": CAMTRAP_DP,
                        "license": DCT, "rightsHolder": DCT, "creator": DCT}
REQUIRED = (col.IMAGE_URI, col.SCIENTIFIC_NAME, col.ERROR)
_BATCH_ROWS = 10_000


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


def _batches(dataset: pads.Dataset, columns: list[str]):
    """Successful prediction rows as pylist dicts, batch by batch, plus each batch's failed-row count."""
    present = [c for c in columns if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=present, batch_size=_BATCH_ROWS):
        ok = pc.fill_null(pc.equal(batch.column(col.ERROR), ""), True)  # null or "" error: classified
        kept = pa.Table.from_batches([batch]).filter(ok)
        yield kept.to_pylist(), batch.num_rows - kept.num_rows


def _clean(value) -> str:
    # GBIF layout has no quoting: a tab or line break inside a value would shift or split the row.
    if value is None:
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _line(values: list) -> bytes:
    return ("\t".join(_clean(v) for v in values) + "\n").encode("utf-8")


def _identification(row: dict) -> dict:
    """Darwin Core Identification terms for one prediction row (computing those classify did not add)."""
    rank = row.get("taxonRank") or "species"
    # Predictions of older plantray versions lack the references and the Camtrap DP method/probability.
    ident = {**row, "taxonRank": rank,
             "identificationReferences": (row.get("identificationReferences") or row.get(col.IMAGE_URI_ABSOLUTE)
                                          or row[col.IMAGE_URI]),
             "classificationMethod": row.get("classificationMethod") or "machine",
             "classificationProbability": row.get("classificationProbability", row.get(col.CONFIDENCE))}
    if not row.get("identificationID"):
        ident["identificationID"] = identification_id(row.get(col.MODEL_SHA256) or "", row[col.IMAGE_URI])
    if not row.get("identificationRemarks") and row.get("confidence") is not None:
        ident["identificationRemarks"] = identification_remarks(
            float(row["confidence"]), rank, row.get("model_name") or "model", row.get("model_version") or "")
    ident.setdefault("identificationVerificationStatus", "unverified")
    return ident


def _write_core(zf: zipfile.ZipFile, dataset: pads.Dataset, key: str, terms: list[str]) -> tuple[int, int]:
    """Writes occurrence.txt; returns (occurrences, failed rows)."""
    seen: set = set()
    failed = 0
    with zf.open("occurrence.txt", "w", force_zip64=True) as f:
        f.write(_line([key, *terms]))
        for rows, bad in _batches(dataset, [key, *terms, col.ERROR]):
            failed += bad
            for row in rows:
                if row[key] is None or row[key] in seen:
                    continue
                seen.add(row[key])
                f.write(_line([row[key], *(row.get(t) for t in terms)]))
    return len(seen), failed


def _write_identifications(zf: zipfile.ZipFile, dataset: pads.Dataset, key: str) -> tuple[int, set]:
    """Writes identification.txt; returns (identifications, distinct (model, version, sha) tuples)."""
    columns = [key, col.IMAGE_URI, col.IMAGE_URI_ABSOLUTE, col.CONFIDENCE, col.MODEL_NAME, col.MODEL_VERSION,
               col.MODEL_SHA256, col.ERROR,
               *IDENTIFICATION_TERMS]
    models: set = set()
    count = 0
    with zf.open("identification.txt", "w", force_zip64=True) as f:
        f.write(_line([key, *IDENTIFICATION_TERMS]))
        for rows, _ in _batches(dataset, columns):
            for row in rows:
                if row[key] is None:
                    continue
                ident = _identification(row)
                models.add((row.get("model_name"), row.get("model_version"), row.get("model_sha256")))
                f.write(_line([row[key], *(ident.get(t) for t in IDENTIFICATION_TERMS)]))
                count += 1
    return count, models


def meta_xml(key: str, core_terms: list[str]) -> str:
    """meta.xml for the exported archive: core id and extension coreid both at column 0."""
    def fields(terms: dict) -> str:
        return "\n".join(f'    <field index="{i + 1}" term="{ns}{t}"/>' for i, (t, ns) in enumerate(terms.items()))

    dialect = ('encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" '
               'ignoreHeaderLines="1"')
    key_term = f"{GBIF if key == 'gbifID' else DWC}{key}"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">
  <core {dialect} rowType="{DWC}Occurrence">
    <files><location>occurrence.txt</location></files>
    <id index="0"/>
    <field index="0" term="{key_term}"/>
{fields({t: OCCURRENCE_TERMS[t] for t in core_terms})}
  </core>
  <extension {dialect} rowType="{DWC}Identification">
    <files><location>identification.txt</location></files>
    <coreid index="0"/>
{fields(IDENTIFICATION_TERMS)}
  </extension>
</archive>
"""


def eml_xml(models: set, summary: dict, today: str) -> str:
    """A minimal EML description naming the models and the counts."""
    names = ", ".join(sorted(f"{n} {v} (sha256 {str(s)[:12]})" for n, v, s in models)) or "no model"
    abstract = (f"Machine identifications of {summary['identifications']} images of {summary['occurrences']} "
                f"occurrences by {names}, exported by plantray. Confidence is in identificationRemarks; the "
                "image each identification was made from is in identificationReferences. All are unverified.")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<eml:eml xmlns:eml="eml://ecoinformatics.org/eml-2.1.1" packageId="plantray-export-{today}" system="plantray"
         scope="system" xml:lang="en">
  <dataset>
    <title>Machine identifications by plantray</title>
    <creator><organizationName>plantray</organizationName></creator>
    <pubDate>{today}</pubDate>
    <language>en</language>
    <abstract><para>{escape(abstract)}</para></abstract>
    <contact><organizationName>plantray</organizationName></contact>
  </dataset>
</eml:eml>
"""


def write_archive(dataset: pads.Dataset, key: str, out: str, record=None) -> dict:
    """Writes the Darwin Core Archive ``out`` (a .zip, local or object storage), streaming the predictions.

    Args:
        dataset: from :func:`open_predictions`.
        key: the occurrence key column.
        out: the archive to write.
        record: summary -> bytes of a run record to include as ``_plantray_run.json`` (optional).
    Returns:
        ``{"out", "occurrences", "identifications", "skipped_errors"}``.
    """
    core_terms = [t for t in OCCURRENCE_TERMS if t != key and t in dataset.schema.names]
    with storage.open_for_write(out) as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        occurrences, failed = _write_core(zf, dataset, key, core_terms)
        identifications, models = _write_identifications(zf, dataset, key)
        summary = {"out": out, "occurrences": occurrences, "identifications": identifications,
                   "skipped_errors": failed}
        zf.writestr("meta.xml", meta_xml(key, core_terms))
        zf.writestr("eml.xml", eml_xml(models, summary, dt.date.today().isoformat()))
        if record is not None:
            zf.writestr("_plantray_run.json", record(summary))
    return summary
