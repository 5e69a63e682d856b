"""The identification history of one predicted image: the machine's identification, then a person's.

A row nobody reviewed holds the machine's identification in its identification columns. A row ``plantray
review apply`` decided holds the person's there and the machine's in ``machine_<column>``
(:data:`plantray.columns.MACHINE_COLUMNS`); ``review_decision`` says what the person decided. The export lists
both, oldest first, each with its identifiedBy, dateIdentified, verification status and method; an ``unsure``
decision leaves the machine's identification the only one.
"""

from __future__ import annotations

from plantray import columns as col
from plantray.darwincore.terms import identification_id, identification_remarks


def is_person(row: dict) -> bool:
    """Whether a person's identification is the row's current one (accepted, corrected, rejected, not a plant)."""
    return row.get(col.REVIEW_DECISION) in col.PERSON_DECISIONS


def _machine_columns(row: dict) -> dict:
    """The machine's identification columns of a row (``machine_*`` on reviewed rows)."""
    if row.get(col.REVIEW_DECISION) is None:
        return row
    return {**row, **{c: row.get(col.MACHINE_PREFIX + c) for c in col.IDENTIFICATION_COLUMNS}}


def machine_identification(row: dict) -> dict:
    """The machine's identification of a row, computing what older predictions lack (remarks, method, id)."""
    ident = _machine_columns(row)
    rank = ident.get(col.TAXON_RANK) or ("species" if ident.get(col.SCIENTIFIC_NAME) else None)
    out = {**ident, col.TAXON_RANK: rank,
           col.IDENTIFICATION_REFERENCES: (ident.get(col.IDENTIFICATION_REFERENCES) or row.get(col.IMAGE_URI_ABSOLUTE)
                                           or row[col.IMAGE_URI]),
           col.CLASSIFICATION_METHOD: ident.get(col.CLASSIFICATION_METHOD) or col.MACHINE,
           col.CLASSIFICATION_PROBABILITY: ident.get(col.CLASSIFICATION_PROBABILITY, row.get(col.CONFIDENCE))}
    if not ident.get(col.IDENTIFICATION_ID):
        out[col.IDENTIFICATION_ID] = identification_id(row.get(col.MODEL_SHA256) or "", row[col.IMAGE_URI])
    if not ident.get(col.IDENTIFICATION_REMARKS) and row.get(col.CONFIDENCE) is not None and rank:
        out[col.IDENTIFICATION_REMARKS] = identification_remarks(
            float(row[col.CONFIDENCE]), rank, row.get(col.MODEL_NAME) or "model", row.get(col.MODEL_VERSION) or "")
    out[col.VERIFICATION_STATUS] = ident.get(col.VERIFICATION_STATUS) or col.UNVERIFIED
    return out


def identifications(row: dict) -> list[dict]:
    """Every identification of a row, oldest first: the machine's (unless the row failed before the model
    named anything), then the person's when one decided it."""
    machine = [] if row.get(col.ERROR) else [machine_identification(row)]
    return machine + ([dict(row)] if is_person(row) else [])


def current_identification(best: dict | None, row: dict) -> dict:
    """The later of two people's identifications of one occurrence (by dateIdentified, then identificationID)."""
    if best is None:
        return dict(row)
    key = (str(row.get(col.DATE_IDENTIFIED) or ""), str(row.get(col.IDENTIFICATION_ID) or ""))
    return dict(row) if key > (str(best.get(col.DATE_IDENTIFIED) or ""), str(best.get(col.IDENTIFICATION_ID) or "")) \
        else best
