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

from dataclasses import dataclass, field, replace

from plantray import storage
from plantray.config import ConfigError
from plantray.model import taxa
from plantray.model.labels import Labels
from plantray.sources.dwcameta import local_name, packing, read_core_spec

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


def lookup(uri: str, keys: set[str]) -> Found:
    """The rows of a Darwin Core Taxon checklist naming ``keys``, and the accepted taxa of its synonyms.

    Args:
        uri: a Taxon table or a Darwin Core Archive with a Taxon core.
        keys: label keys (:func:`plantray.model.taxa.name_key`).
    Raises:
        ConfigError: a checklist lacking the required columns.
    """
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
    return Found(found, accepted, rows, len(skipped))


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


def match_labels(labels: Labels, checklist: str, kingdom: str | None = "Plantae") -> tuple[Labels, MatchReport]:
    """Fills taxonID, scientificNameID, acceptedNameUsage, genus and family of ``labels`` from ``checklist``.

    Args:
        labels: the model's labels (names and order unchanged).
        checklist: a Taxon table or a Darwin Core Archive with a Taxon core.
        kingdom: only taxa of this kingdom (rows without a kingdom count); None for all.
    Returns:
        (the filled labels, the report). Unmatched labels and homonyms lose their identifiers.
    """
    keys = {taxa.name_key(n) for n in labels.names}
    found = lookup(checklist, keys)
    by_key: dict[str, list[dict]] = {}
    for row in found.rows:
        if kingdom is None or not row.get("kingdom") or row["kingdom"] == kingdom:
            by_key.setdefault(row[KEY], []).append(row)
    decisions = {n: _decide(by_key.get(taxa.name_key(n), [])) for n in labels.names}
    report = MatchReport(labels=len(labels), rows_read=found.rows_read, rows_skipped=found.rows_skipped)
    return _apply(labels, decisions, found.accepted, report), report


_IDENTIFIERS = ("taxon_id", "scientific_name_id", "accepted_name")


def _apply(labels: Labels, decisions: dict, accepted: dict, report: MatchReport) -> Labels:
    """The labels with the decided taxa filled in; the report's lists filled on the way."""
    cols = {k: list(getattr(labels, k)) for k in ("taxon_id", "scientific_name_id", "accepted_name", "genus",
                                                     "family")}
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
    return replace(labels, **cols)
