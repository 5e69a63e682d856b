"""Darwin Core identification terms for machine identifications."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pyarrow as pa

from plantray import columns as col

# Fixed namespace so identification IDs are stable across runs, machines and versions of this code.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")


def identification_id(model_sha256: str, image_uri: str) -> str:
    """A deterministic identificationID for one model's identification of one image.

    Args:
        model_sha256: hex digest of the model weights.
        image_uri: the image's URI.

    Returns:
        A UUIDv5 string; the same inputs always give the same ID, so reruns update rather than duplicate.
    """
    return str(uuid.uuid5(ID_NAMESPACE, f"{model_sha256}\n{image_uri}"))


def occurrence_identification_id(key: str, value) -> str:
    """The identificationID of an occurrence's combined machine identification (``--aggregate occurrence`` rows,
    which carry none of their own): deterministic, from the occurrence key column and value."""
    return str(uuid.uuid5(ID_NAMESPACE, f"occurrence\n{key}\n{value}"))


def review_identification_id(machine_id: str, decision: str, name: str | None, identified_by: str,
                             date_identified: str) -> str:
    """The identificationID of a person's identification (``plantray review apply``): deterministic, so applying
    the same decisions again gives the same ids.

    Args:
        machine_id: the identificationID of the machine identification the person reviewed.
        decision: accepted, corrected, rejected or not a plant.
        name: the person's name for the taxon (None for rejected and not a plant).
        identified_by: the reviewer.
        date_identified: when, as the decisions file wrote it.
    """
    return str(uuid.uuid5(ID_NAMESPACE, "\n".join(["review", machine_id, decision, name or "", identified_by,
                                                   date_identified])))


def identification_remarks(confidence: float, rank: str, model_name: str, model_version: str) -> str:
    """Human-readable remarks carrying what Darwin Core has no term for (the confidence).

    Args:
        confidence: probability of the reported name.
        rank: reported taxonRank.
        model_name: e.g. "resnet50".
        model_version: e.g. "v3".

    Returns:
        e.g. ``"machine identification by plantray resnet50 v3 (confidence 0.873, rank genus)"``.
    """
    return (f"machine identification by {_display_name(model_name)} {model_version} "
            f"(confidence {confidence:.3f}, rank {rank})")


def unknown_remarks(confidence: float, min_confidence: float, model_name: str, model_version: str) -> str:
    """Remarks of a row the model would not name: no rank reached ``--min-confidence``.

    Args:
        confidence: the best-supported name's probability at the coarsest rank the labels have.
        min_confidence: the run's ``--min-confidence``.
        model_name: e.g. "resnet50".
        model_version: e.g. "v3".

    Returns:
        e.g. ``"machine identification by plantray resnet50 v3: unknown, no species, genus or family reached
        --min-confidence 0.600 (best 0.412); see topk_scientificName"``.
    """
    return (f"machine identification by {_display_name(model_name)} {model_version}: unknown, no species, "
            f"genus or family reached --min-confidence {min_confidence:.3f} (best {confidence:.3f}); "
            "see topk_scientificName")


def _display_name(model_name: str) -> str:
    # Cards name models "plantray-resnet50"; bare names ("resnet50") get the project prefix.
    return model_name if model_name.startswith("plantray") else f"plantray {model_name}"


def model_reference(model_card: dict) -> tuple[str | None, str | None]:
    """(identifiedByID, the model's description) from a card's ``doi`` and ``url`` (``model create --doi/--url``).

    identifiedByID is the card's DOI as a resolvable URL, else its URL; the description is the URL (where the
    model and its card are described), else the DOI's URL. Both None for a card that names neither.
    """
    doi, url = model_card.get("doi"), model_card.get("url")
    doi_url = (doi if doi.startswith("http") else f"https://doi.org/{doi}") if doi else None
    return doi_url or url, url or doi_url


def machine_columns(table: pa.Table, model_card: dict) -> dict[str, pa.Array]:
    """The machine-identification metadata of a predictions batch (classified rows; null where ``error``).

    ``identifiedByID`` and ``identificationReferences`` (the image, then the model's description, joined by
    Darwin Core's `` | `` list separator) are Darwin Core terms; ``classificationMethod`` (``machine``) and
    ``classificationProbability`` (the confidence, 0-1) are Camtrap DP's observation fields, which GBIF's
    Camtrap DP to Darwin Core conversion reads.
    """
    by_id, described = model_reference(model_card)
    ok = [not _failed(e) for e in table.column(col.ERROR).to_pylist()]
    # The absolute URI when the predictor added it: identificationReferences must open from anywhere.
    uris = table.column(col.IMAGE_URI_ABSOLUTE if col.IMAGE_URI_ABSOLUTE in table.column_names
                        else col.IMAGE_URI).to_pylist()
    conf = table.column(col.CONFIDENCE).to_pylist()
    return {
        col.IDENTIFIED_BY_ID: pa.array([by_id if good else None for good in ok], pa.string()),
        col.IDENTIFICATION_REFERENCES: pa.array([" | ".join(filter(None, (str(u), described))) if good else None
                                                 for u, good in zip(uris, ok)], pa.string()),
        col.CLASSIFICATION_METHOD: pa.array(["machine" if good else None for good in ok], pa.string()),
        col.CLASSIFICATION_PROBABILITY: pa.array([c if good else None for c, good in zip(conf, ok)], pa.float32()),
    }


def _failed(error) -> bool:
    if error is None:
        return False
    if isinstance(error, float) and math.isnan(error):
        return False
    return bool(error)


def _model_terms(model_card: dict) -> tuple[str, str, str]:
    """(name, version, weights SHA-256) from a card: ``weights.sha256`` (model.py's cards) or ``sha256``."""
    sha = model_card.get("sha256") or (model_card.get("weights") or {}).get("sha256")
    missing = [k for k, v in (("name", model_card.get("name")), ("version", model_card.get("version")),
                              ("weights.sha256", sha)) if not v]
    if missing:
        raise ValueError(f"model_card lacks {missing}: it needs 'name', 'version' and 'weights.sha256'")
    return str(model_card["name"]), str(model_card["version"]), str(sha)


def _remarks(confidence: float, rank: str | None, name: str, version: str, min_confidence: float) -> str:
    if rank is None:  # withheld by --min-confidence (plantray.inference.ranking.withhold)
        return unknown_remarks(confidence, min_confidence, name, version)
    return identification_remarks(confidence, str(rank), name, version)


def dwc_columns(batch: dict[str, np.ndarray], model_card: dict, now_iso: str,
                min_confidence: float = 0.0) -> dict[str, np.ndarray]:
    """Adds Darwin Core identification terms to a predictions batch.

    Rows with an ``error`` keep ``identificationID`` and ``identifiedBy`` (the attempt is identifiable) and
    get None for the other added terms. ``taxonRank`` is taken from the batch when the classifier already
    rolled predictions up (see :func:`rollup`), else "species". A row without error whose ``taxonRank``
    is null was withheld by ``--min-confidence``: its remarks say so and its ``kingdom`` is null too (the
    image may show no plant at all).

    Args:
        batch: columns ``image_uri``, ``scientificName``, ``confidence``, ``error`` (None/"" when fine),
            optionally ``taxonRank``.
        model_card: the model card (``name``, ``version``, ``weights.sha256``; see :mod:`plantray.model`).
        now_iso: ISO 8601 timestamp for ``dateIdentified`` (one per job, so a run is consistent).
        min_confidence: the run's ``--min-confidence``, quoted in the remarks of withheld rows.

    Returns:
        The batch with the added columns (object arrays with None for nulls).
    """
    name, version, sha = _model_terms(model_card)
    uris = batch[col.IMAGE_URI]
    failed = np.array([_failed(e) for e in batch[col.ERROR]], dtype=bool)
    ranks = batch.get("taxonRank", np.full(len(uris), "species", dtype=object))
    by = f"{_display_name(name)} {version} (sha256:{sha[:12]})"

    def per_row(value_fn) -> np.ndarray:
        return np.array([None if failed[i] else value_fn(i) for i in range(len(uris))], dtype=object)

    out = dict(batch)
    out["identificationID"] = np.array([identification_id(sha, str(u)) for u in uris], dtype=object)
    out["identifiedBy"] = np.full(len(uris), by, dtype=object)
    out["dateIdentified"] = per_row(lambda i: now_iso)
    out["identificationRemarks"] = per_row(
        lambda i: _remarks(float(batch["confidence"][i]), ranks[i], name, version, min_confidence))
    out["identificationVerificationStatus"] = per_row(lambda i: "unverified")
    out["identificationType"] = per_row(lambda i: "media")
    out["kingdom"] = per_row(lambda i: None if ranks[i] is None else "Plantae")
    out["taxonRank"] = per_row(lambda i: None if ranks[i] is None else str(ranks[i]))
    return out


PRIOR_REMARKS = {
    "restrict": "location prior: restricted to the checklist species of the occurrence's region",
    "reweight": "location prior: species absent from the occurrence's region in the checklist down-weighted",
    "no location": "location prior not applied: no location",
    "region not covered": "location prior not applied: region not in the checklist",
}


def prior_remarks(remarks: np.ndarray, status: list) -> np.ndarray:
    """Appends which location prior was applied (the ``prior`` column) to each row's remarks.

    Args:
        remarks: ``identificationRemarks`` (None for failed rows, which stay None).
        status: the ``prior`` column (:mod:`plantray.inference.prior`).
    Returns:
        The remarks, e.g. ``"machine identification by ... (confidence 0.912, rank species); location prior:
        restricted to the checklist species of the occurrence's region"``.
    """
    return np.array([r if r is None or s is None else f"{r}; {PRIOR_REMARKS.get(s, s)}"
                     for r, s in zip(remarks, status)], dtype=object)


def add_terms(table: pa.Table, model_card: dict, now_iso: str, min_confidence: float = 0.0) -> pa.Table:
    """Appends the Darwin Core identification terms to a batch of predictions, ``error`` staying last.

    The model actors apply it to each output batch (``Predictor(finish=...)``), so the terms cost no
    extra pipeline stage. See :func:`dwc_columns` for the rules.

    Args:
        table: prediction rows with ``image_uri``, ``scientificName``, ``confidence``, ``taxonRank``, ``error``.
        model_card: the model's card.
        now_iso: the run's ``dateIdentified``.
        min_confidence: the run's ``--min-confidence`` (quoted in withheld rows' remarks).
    Returns:
        The table with :data:`plantray.columns.DWC_TERMS` (``taxonRank`` replaced in place).
    """
    batch = {k: np.asarray(table.column(k).to_pylist(), dtype=object)
             for k in (col.IMAGE_URI, col.SCIENTIFIC_NAME, col.TAXON_RANK, col.ERROR)}
    batch[col.CONFIDENCE] = np.asarray([c if c is not None else np.nan
                                        for c in table.column(col.CONFIDENCE).to_pylist()])
    terms = dwc_columns(batch, model_card, now_iso, min_confidence)
    if col.PRIOR in table.column_names:
        terms["identificationRemarks"] = prior_remarks(terms["identificationRemarks"],
                                                       table.column(col.PRIOR).to_pylist())
    error = table.column(col.ERROR)
    out = table.drop_columns([col.ERROR])
    for name in col.DWC_TERMS:
        array = pa.array(terms[name].tolist(), pa.string())
        if name in out.column_names:
            out = out.set_column(out.schema.get_field_index(name), name, array)
        else:
            out = out.append_column(name, array)
    for name, array in machine_columns(table, model_card).items():
        out = out.append_column(name, array)
    return out.append_column(col.ERROR, error)
