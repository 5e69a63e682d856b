"""Matching a model's labels to a taxonomic checklist (e.g. the GBIF Backbone Taxonomy's ``Taxon.tsv``).

The checklist is a file the user downloads (plantray stays offline): a tab- or comma-separated table with
Darwin Core Taxon columns (``taxonID``, ``scientificName``, ``canonicalName``, ``taxonomicStatus``,
``acceptedNameUsageID``, ``genus``, ``family``, ``kingdom``, optional ``scientificNameID``), or a Darwin Core
Archive whose core is Taxon (its ``meta.xml`` names the columns). The Backbone has millions of rows, so it
is streamed (:mod:`plantray.model.taxa`) and filtered batch by batch to the rows naming a label (pass 1,
which ``rows_read`` counts) and the accepted taxa those synonyms point to (pass 2); only these few rows are kept.

Rules, per label name (compared in canonical form, :func:`plantray.model.taxa.name_key`, with
``canonicalName``, or with ``scientificName`` without its authorship when the checklist has no canonical names):

1. rows of another kingdom than ``kingdom`` are ignored (a name can be a plant and an animal);
2. one accepted taxon of that name: matched. Several: a **homonym**, left unmatched and reported with the
   candidates (choosing one would be a guess; edit the labels' taxonID by hand);
3. no accepted taxon but ``doubtful`` ones: the same rule on those;
4. only synonyms: resolved to the accepted taxon through ``acceptedNameUsageID`` and reported; synonyms
   pointing at several accepted taxa (pro parte) are reported as homonyms;
5. no row: **unmatched**.

A matched label gets the accepted taxon's ``taxonID``, ``genus`` and ``family``, its full name in
``acceptedNameUsage``, and the ``scientificNameID`` of the row naming the label (when the checklist has one).
A label left unmatched or a homonym has its identifiers (``taxonID``, ``scientificNameID``,
``acceptedNameUsage``) cleared, so no identifier from an earlier match outlives it; its genus and family stay.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

from plantray import storage
from plantray.config import ConfigError
from plantray.model import coldp, taxa
from plantray.model.labels import Labels
from plantray.sources.dwcameta import (
    _archive_listing,
    local_name,
    member_name,
    open_member,
    packing,
    read_core_spec,
)

TAXON_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Taxon"
WANTED = ("taxonID", "scientificName", "canonicalName", "taxonomicStatus", "acceptedNameUsageID", "genus",
          "family", "kingdom", "scientificNameID")
REQUIRED = ("taxonID", "scientificName", "taxonomicStatus")
KEY = "_key"  # the label key a found row names (taxa.name_key)


@dataclass
class MatchReport:
    """What ``plantray labels match`` found, per label."""

    labels: int = 0
    matched: list[str] = field(default_factory=list)
    synonyms: list[dict] = field(default_factory=list)  # {"name", "accepted", "taxonID"}
    homonyms: list[dict] = field(default_factory=list)  # {"name", "candidates": [taxonID, ...]}
    unmatched: list[str] = field(default_factory=list)
    rows_read: int = 0  # checklist rows, each counted once
    rows_skipped: int = 0  # malformed checklist lines (wrong number of fields)
    checklist_format: str = ""  # "Darwin Core Archive", "Darwin Core Taxon table" or "ColDP"
    nameAccordingTo: str | None = None  # the checklist every filled taxonID comes from
    nameAccordingToID: str | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Found:
    """What a checklist holds about a set of label keys.

    Attributes:
        rows: the rows naming a label, as dicts of :data:`WANTED` plus ``_key`` (the label key named).
        accepted: taxonID -> row of the accepted taxa the found synonyms point to.
        rows_read: rows of the checklist (read once).
        rows_skipped: malformed lines.
    """

    rows: list[dict]
    accepted: dict[str, dict]
    rows_read: int = 0
    rows_skipped: int = 0
    form: str = ""
    according_to: tuple[str | None, str | None] = (None, None)


def _text_file(uri: str) -> taxa.TextFile:
    """The checklist's table: an archive's Taxon core, or a plain .tsv/.txt (tab) or .csv file with a header."""
    fs, path = storage.get_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"--checklist {uri!r} does not exist; download e.g. the GBIF Backbone Taxonomy "
                          "(backbone.zip or its Taxon.tsv) and pass its path")
    if packing(uri) != "dir" or fs.isdir(path):
        spec = read_core_spec(uri, TAXON_ROW_TYPE, f"--checklist {uri!r}")
        return taxa.TextFile(uri, spec.member, spec.delimiter, spec.quote, spec.header_lines, spec.encoding,
                             indexes=dict(spec.columns))
    delimiter = "," if uri.lower().endswith(".csv") else "\t"
    # GBIF's Taxon.tsv has no quoting and names contain '"': read quotes as text in tab-separated files.
    return taxa.TextFile(uri, delimiter=delimiter, quote='"' if delimiter == "," else "")


def _columns(uri: str, file: taxa.TextFile) -> dict[str, str]:
    """Reader column name -> term of the :data:`WANTED` columns present.

    Raises:
        ConfigError: a required column is missing.
    """
    names = file.columns(lambda n: local_name(n) if local_name(n) in WANTED else None)
    missing = [c for c in REQUIRED if c not in names.values()]
    if missing:
        raise ConfigError(f"--checklist {uri!r} lacks {missing}: give a Darwin Core Taxon table such as the GBIF "
                          "Backbone's Taxon.tsv (taxonID, scientificName, canonicalName, taxonomicStatus, "
                          "acceptedNameUsageID, genus, family), or a Catalogue of Life Data Package (ColDP)")
    return names


def _eml_according_to(uri: str) -> tuple[str | None, str | None]:
    """(nameAccordingTo, nameAccordingToID) from a Darwin Core Archive's EML: its title and publication date,
    and its DOI as a URL (the GBIF Backbone's backbone.zip: "GBIF Backbone Taxonomy", 10.15468/39omei)."""
    meta, sizes = _archive_listing(uri)
    location = (ET.fromstring(meta).get("metadata") if meta else None) or "eml.xml"
    member = member_name(list(sizes), location)
    if member is None:
        return None, None
    try:
        with open_member(uri, member) as f:
            dataset = ET.fromstring(f.read()).find("dataset")
    except ET.ParseError:
        return None, None
    if dataset is None:
        return None, None
    title, date = (" ".join((dataset.findtext(t) or "").split()) for t in ("title", "pubDate"))
    dois = [d.strip() for d in (e.text or "" for e in dataset.iter("alternateIdentifier")) if "10." in d]
    doi = next((d[d.index("10."):] for d in dois), None)
    text = f"{title} ({date})" if title and date else title or None
    return text, f"https://doi.org/{doi}" if doi else None


def lookup(uri: str, keys: set[str]) -> Found:
    """The rows of a checklist naming ``keys``, and the accepted taxa of its synonyms.

    Args:
        uri: a Darwin Core Taxon table, a Darwin Core Archive with a Taxon core, or a Catalogue of Life Data
            Package (:mod:`plantray.model.coldp`).
        keys: label keys (:func:`plantray.model.taxa.name_key`).
    Raises:
        ConfigError: a checklist lacking the required columns.
    """
    fs, path = storage.get_fs(uri)
    if fs.exists(path) and coldp.is_coldp(uri):
        rows, accepted, read, skipped, source = coldp.lookup(uri, keys)
        return Found(rows, accepted, read, skipped, "ColDP", source)
    file = _text_file(uri)
    names = _columns(uri, file)
    column = "canonicalName" if "canonicalName" in names.values() else "scientificName"
    skipped, kept, rows = [], [], 0
    for batch in file.batches(names, skipped):
        rows += batch.num_rows
        kept.append(taxa.rows_named(taxa.with_columns(batch, WANTED), column, keys))
    found = taxa.concat(kept, (*WANTED, KEY)).to_pylist()
    targets = {r["acceptedNameUsageID"] for r in found if r.get("acceptedNameUsageID")}
    accepted = {}
    if targets:  # pass 2: the synonyms' accepted taxa (its rows are not counted again)
        tables = [taxa.rows_in(taxa.with_columns(b, WANTED), "taxonID", targets) for b in file.batches(names, [])]
        accepted = {r["taxonID"]: r for r in taxa.concat(tables, WANTED).to_pylist()}
    if file.member:
        return Found(found, accepted, rows, len(skipped), "Darwin Core Archive", _eml_according_to(uri))
    return Found(found, accepted, rows, len(skipped), "Darwin Core Taxon table")


def _status(row: dict) -> str:
    return (row.get("taxonomicStatus") or "").strip().lower()


def _decide(rows: list[dict]) -> tuple[str, list[str], dict | None]:
    """(kind, candidate taxonIDs, the row naming the label) for one label's rows (rules 2-5)."""
    for status in ("accepted", "doubtful"):
        chosen = [r for r in rows if _status(r) == status]
        ids = sorted({r["taxonID"] for r in chosen})
        if len(ids) == 1:
            return "accepted", ids, chosen[0]
        if ids:
            return "homonym", ids, None
    synonyms = [r for r in rows if "synonym" in _status(r) or _status(r) == "misapplied"]
    targets = sorted({r["acceptedNameUsageID"] for r in synonyms if r.get("acceptedNameUsageID")})
    if len(targets) == 1:
        return "synonym", targets, next(r for r in synonyms if r.get("acceptedNameUsageID") == targets[0])
    return ("homonym", targets, None) if targets else ("unmatched", [], None)


def match_labels(labels: Labels, checklist: str, kingdom: str | None = "Plantae",
                 name: str | None = None) -> tuple[Labels, MatchReport]:
    """Fills taxonID, scientificNameID, acceptedNameUsage, genus, family and nameAccordingTo(ID) of ``labels``
    from ``checklist``.

    Args:
        labels: the model's labels (names and order unchanged).
        checklist: a Taxon table, a Darwin Core Archive with a Taxon core, or a ColDP package.
        kingdom: only taxa of this kingdom (rows without a kingdom count); None for all.
        name: what the checklist is (nameAccordingTo); default: from its metadata (EML, metadata.yaml), else
            its file name.
    Returns:
        (the filled labels, the report). Unmatched labels and homonyms lose their identifiers.
    """
    keys = {taxa.name_key(n) for n in labels.names}
    found = lookup(checklist, keys)
    text, link = found.according_to
    text = name or text or os.path.basename(checklist.rstrip("/"))
    by_key: dict[str, list[dict]] = {}
    for row in found.rows:
        if kingdom is None or not row.get("kingdom") or row["kingdom"] == kingdom:
            by_key.setdefault(row[KEY], []).append(row)
    decisions = {n: _decide(by_key.get(taxa.name_key(n), [])) for n in labels.names}
    report = MatchReport(labels=len(labels), rows_read=found.rows_read, rows_skipped=found.rows_skipped,
                         checklist_format=found.form, nameAccordingTo=text, nameAccordingToID=link)
    return _apply(labels, decisions, found.accepted, report), report


_IDENTIFIERS = ("taxon_id", "scientific_name_id", "accepted_name", "name_according_to", "name_according_to_id")


def _apply(labels: Labels, decisions: dict, accepted: dict, report: MatchReport) -> Labels:
    """The labels with the decided taxa filled in; the report's lists filled on the way."""
    cols = {k: list(getattr(labels, k)) for k in (*_IDENTIFIERS, "genus", "family")}
    for i, name in enumerate(labels.names):
        kind, ids, own = decisions[name]
        target = own if kind == "accepted" else accepted.get(ids[0]) if kind == "synonym" else None
        if target is None:  # unmatched, a homonym, or a synonym of a taxon the checklist does not hold
            if kind == "homonym":
                report.homonyms.append({"name": name, "candidates": ids})
            else:
                report.unmatched.append(name)
            for key in _IDENTIFIERS:  # an identifier of an earlier match would now be wrong
                cols[key][i] = None
            continue
        if kind == "synonym":
            report.synonyms.append({"name": name, "accepted": target["scientificName"], "taxonID": ids[0]})
        report.matched.append(name)
        cols["taxon_id"][i], cols["accepted_name"][i] = target["taxonID"], target["scientificName"]
        cols["scientific_name_id"][i] = own.get("scientificNameID") or cols["scientific_name_id"][i]
        cols["genus"][i] = target.get("genus") or cols["genus"][i]
        cols["family"][i] = target.get("family") or cols["family"][i]
        cols["name_according_to"][i], cols["name_according_to_id"][i] = report.nameAccordingTo, report.nameAccordingToID
    return replace(labels, **cols)
