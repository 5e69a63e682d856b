"""Review decisions applied to predictions: the person's identification beside the machine's, row by row.

For each decided row (:func:`decide`):

- the machine's identification is copied to ``machine_<column>`` (:data:`plantray.columns.MACHINE_COLUMNS`),
  from the identification columns, or kept from ``machine_*`` when the row was decided before, so it is never
  overwritten and re-applying a decision gives the same row;
- ``accepted`` / ``corrected``: the identification columns become the person's: the name (the label's spelling;
  as typed in ``verbatimIdentification``), its rank, taxonID, genus, family and checklist from the labels or the
  checklist, ``identifiedBy``/``dateIdentified`` the reviewer's, ``identificationVerificationStatus`` ``verified
  using recorded media`` and ``classificationMethod`` ``human`` (Camtrap DP; its Darwin Core conversion's status
  of a person's classification), ``classificationProbability`` empty, a new deterministic ``identificationID``;
- ``rejected`` / ``not a plant``: the same, with no name, rank or taxon, and remarks saying why;
- ``unsure``: the machine's identification stays current;
- ``review_*`` record the decision as the file gave it.

Every other row passes unchanged (given the same columns), so the output has exactly the input's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from plantray import columns as col
from plantray.darwincore.terms import occurrence_identification_id, review_identification_id
from plantray.review.decisions import Decision
from plantray.review.naming import Taxon

EDITABLE = (*col.IDENTIFICATION_COLUMNS, col.VERBATIM_IDENTIFICATION, *col.MACHINE_COLUMNS, *col.REVIEW_COLUMNS)
_FLOATS = {col.CLASSIFICATION_PROBABILITY, col.MACHINE_PREFIX + col.CLASSIFICATION_PROBABILITY}


@dataclass(frozen=True)
class Resolved:
    """A decision with the taxon its name resolved to (None for decisions without a name)."""

    decision: Decision
    taxon: Taxon | None


def output_schema(schema: pa.Schema) -> pa.Schema:
    """The predictions' schema with every review column, typed (identification columns as strings, the
    probabilities as float32); new columns go before ``error``, which stays last."""
    target = {name: pa.float32() if name in _FLOATS else pa.string() for name in EDITABLE}
    fields = [pa.field(f.name, target.get(f.name, f.type)) for f in schema if f.name != col.ERROR]
    fields += [pa.field(n, target[n]) for n in EDITABLE if n not in schema.names]
    if col.ERROR in schema.names:
        fields.append(schema.field(col.ERROR))
    return pa.schema(fields, metadata=schema.metadata)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns (absent ones null, others cast), in its order."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def occurrence_key(names: list[str]) -> str | None:
    """The occurrence key of rows without images of their own (``--aggregate occurrence``), else None."""
    if col.IMAGE_URI in names:
        return None
    return next((k for k in (col.GBIF_ID, col.OCCURRENCE_ID) if k in names), None)


def with_occurrence_ids(table: pa.Table, key: str | None) -> pa.Table:
    """Occurrence rows without an identificationID get their deterministic one (so the machine's combined
    identification can be referred to and kept); image rows are returned as they are."""
    if key is None:
        return table
    ids = table.column(col.IDENTIFICATION_ID).to_pylist()
    keys = table.column(key).to_pylist()
    filled = [i if i else (occurrence_identification_id(key, k) if k is not None else None) for i, k in zip(ids, keys)]
    return table.set_column(table.schema.get_field_index(col.IDENTIFICATION_ID), col.IDENTIFICATION_ID,
                            pa.array(filled, pa.string()))


def _remarks(r: Resolved, machine_name: str | None) -> str:
    d = r.decision
    said = f"the machine said {machine_name}" if machine_name else "the machine gave no name"
    text = {col.ACCEPTED: f"accepted by {d.identified_by} from the image ({said})",
            col.CORRECTED: f"corrected by {d.identified_by} from the image ({said})",
            col.REJECTED: f"rejected by {d.identified_by} from the image" + (f": not {machine_name}" if machine_name
                                                                               else ""),
            col.NOT_A_PLANT: f"not a plant: {d.identified_by} found no plant in the image"}[d.decision]
    return f"{text}; {d.remarks}" if d.remarks else text


def _person(row: dict, machine: dict, r: Resolved) -> dict:
    """The identification columns of the person's identification."""
    d, taxon = r.decision, r.taxon
    named = taxon is not None
    return {col.SCIENTIFIC_NAME: taxon.name if named else None,
            col.VERBATIM_IDENTIFICATION: d.scientific_name,
            col.TAXON_RANK: taxon.rank if named else None,
            col.TAXON_ID: taxon.taxon_id if named else None,
            col.GENUS: taxon.genus if named else None,
            col.FAMILY: taxon.family if named else None,
            col.KINGDOM: None if d.decision == col.NOT_A_PLANT else "Plantae",
            col.SCIENTIFIC_NAME_ID: taxon.scientific_name_id if named else None,
            col.NAME_ACCORDING_TO: taxon.name_according_to if named else None,
            col.NAME_ACCORDING_TO_ID: taxon.name_according_to_id if named else None,
            col.IDENTIFICATION_ID: review_identification_id(machine[col.IDENTIFICATION_ID] or "", d.decision,
                                                            taxon.name if named else None, d.identified_by,
                                                            d.date_identified),
            col.IDENTIFIED_BY: d.identified_by, col.IDENTIFIED_BY_ID: None, col.DATE_IDENTIFIED: d.date_identified,
            col.IDENTIFICATION_REMARKS: _remarks(r, machine[col.SCIENTIFIC_NAME]),
            col.VERIFICATION_STATUS: col.VERIFIED,
            # the image the person looked at, by a URI that opens (as the machine's identification names it)
            col.IDENTIFICATION_REFERENCES: row.get(col.IMAGE_URI_ABSOLUTE) or row.get(col.IMAGE_URI),
            col.CLASSIFICATION_METHOD: col.HUMAN, col.CLASSIFICATION_PROBABILITY: None}


def decide(row: dict, r: Resolved) -> dict:
    """The new values of :data:`EDITABLE` for a row a person decided.

    Args:
        row: the row (its identification, ``machine_*`` and ``review_*`` columns, and ``image_uri``).
        r: the decision and its taxon.
    Returns:
        Column -> value for every column in :data:`EDITABLE`.
    """
    reviewed = row.get(col.REVIEW_DECISION) is not None  # decided before: the machine's is in machine_*
    machine = {c: row.get(col.MACHINE_PREFIX + c if reviewed else c) for c in col.IDENTIFICATION_COLUMNS}
    d = r.decision
    out = {col.MACHINE_PREFIX + c: v for c, v in machine.items()}
    out.update({col.REVIEW_DECISION: d.decision, col.REVIEW_IDENTIFIED_BY: d.identified_by,
                col.REVIEW_DATE_IDENTIFIED: d.date_identified, col.REVIEW_REMARKS: d.remarks})
    if d.decision == col.UNSURE:
        out.update(machine)
        out[col.VERBATIM_IDENTIFICATION] = None
    else:
        out.update(_person(row, machine, r))
    return out


def row_keys(table: pa.Table, key: str | None) -> list[tuple]:
    """Per row, the ids a decision may name: its identificationID, its machine's, and for an occurrence row
    the occurrence key value."""
    ident = table.column(col.IDENTIFICATION_ID).to_pylist()
    machine = table.column(col.MACHINE_PREFIX + col.IDENTIFICATION_ID).to_pylist()
    occ = [None if v is None else str(v) for v in table.column(key).to_pylist()] if key else [None] * len(ident)
    return list(zip(ident, machine, occ))


def find(keys: tuple, by_id: dict, by_occurrence: dict) -> Resolved | None:
    """The decision naming a row (by its machine's id first), None when there is none."""
    ident, machine, occ = keys
    return by_id.get(machine) or by_id.get(ident) or (by_occurrence.get(occ) if occ is not None else None)


def apply_table(table: pa.Table, schema: pa.Schema, by_id: dict, by_occurrence: dict, key: str | None
                ) -> tuple[pa.Table, dict]:
    """Applies the decisions to one batch of predictions.

    Args:
        table: prediction rows.
        schema: :func:`output_schema` of the predictions.
        by_id: identificationID -> :class:`Resolved`.
        by_occurrence: occurrence key value -> :class:`Resolved` (occurrence rows decided through their images).
        key: the occurrence key of occurrence rows (:func:`occurrence_key`), else None.
    Returns:
        (the rows in ``schema`` with the decisions applied, decision -> rows decided in this batch).
    """
    table = with_occurrence_ids(conform(table, schema), key)
    hits = {i: r for i, keys in enumerate(row_keys(table, key)) if (r := find(keys, by_id, by_occurrence))}
    counts: dict[str, int] = {}
    if not hits:
        return table, counts
    wanted = [c for c in (*EDITABLE, col.IMAGE_URI, col.IMAGE_URI_ABSOLUTE) if c in table.column_names]
    rows = table.select(wanted).to_pylist()
    for i, r in hits.items():
        rows[i].update(decide(rows[i], r))
        counts[r.decision.decision] = counts.get(r.decision.decision, 0) + 1
    for name in EDITABLE:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pa.array([row[name] for row in rows], schema.field(name).type))
    return table, counts


def decided_mask(table: pa.Table, decisions: tuple[str, ...]) -> pa.Array:
    """Rows whose ``review_decision`` is one of ``decisions``."""
    return pc.fill_null(pc.is_in(table.column(col.REVIEW_DECISION), value_set=pa.array(decisions)), False)
