"""Reading a Catalogue of Life Data Package (ColDP) for ``plantray labels match``.

ColDP (https://github.com/CatalogueOfLife/coldp) is the format ChecklistBank exports the Catalogue of Life and
its eXtended Release (COL XR, the taxonomy GBIF matches names against since it froze its Backbone) in: a zip or
a folder of delimited text files and a ``metadata.yaml``. A data file is named after its entity, case-insensitive,
with any hyphens or underscores, and a suffix that gives its dialect: ``.csv`` is RFC 4180 CSV, ``.tsv``,
``.tab`` and ``.txt`` are tab-separated without quoting. Column names come from the header line, plain
(``scientificName``) or as ChecklistBank writes them (``col:scientificName``), in any case.

Two layouts carry the names:

- ``NameUsage``: one row per name usage; ``status`` tells accepted (``accepted``, ``provisionally accepted``)
  from synonyms (``synonym``, ``ambiguous synonym``, ``misapplied``), whose ``parentID`` is their accepted
  taxon; for accepted usages ``parentID`` is the next higher taxon.
- ``Name`` + ``Taxon`` + ``Synonym``: ``Taxon.nameID`` and ``Synonym.nameID`` point at ``Name.ID``,
  ``Synonym.taxonID`` at the accepted ``Taxon.ID``, ``Taxon.parentID`` at the next higher taxon.

``scientificName`` is the name without authorship (``authorship`` is a column of its own). The genus, family
and kingdom come from the flat classification columns when the export has them, else by walking ``parentID``
up through the higher taxa (kept from the same pass: ranks above species only, a small part of the file).
Every file is streamed (:mod:`plantray.model.taxa`); the rows found are handed to the matching rules of
:mod:`plantray.model.checklist` in its Darwin Core shape, so both forms match alike.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from plantray import storage
from plantray.config import ConfigError
from plantray.model import taxa
from plantray.sources.dwcameta import _archive_listing, packing

SUFFIXES = {"csv": ",", "tsv": "\t", "tab": "\t", "txt": "\t"}
METADATA = "metadata.yaml"
# Ranks at or below species: everything else is a higher taxon, kept for the classification walk.
SPECIES_AND_BELOW = frozenset({
    "species", "subspecies", "infraspecific name", "infrasubspecific name", "variety", "subvariety", "form",
    "subform", "forma specialis", "natio", "proles", "mutatio", "aberration", "morph", "lusus", "convariety",
    "cultivar", "cultivar group", "grex", "strain", "pathovar", "biovar", "chemovar", "morphovar", "phagovar",
    "serovar", "chemoform", "race", "other", "unranked"})
ACCEPTED = {"accepted": "accepted", "provisionally accepted": "doubtful"}  # -> Darwin Core's taxonomicStatus
USAGE = ("ID", "parentID", "status", "scientificName", "authorship", "rank", "genus", "family", "kingdom")
NAME = ("ID", "scientificName", "authorship", "rank")
TAXON = ("ID", "parentID", "nameID", "provisional", "genus", "family", "kingdom")
SYNONYM = ("taxonID", "nameID", "status")
_COL_PREFIX = re.compile(r"^col:", re.IGNORECASE)


def _entity(member: str) -> tuple[str, str] | None:
    """(entity in lower case without hyphens/underscores, suffix) of a data file name, None for other files."""
    name = member.rstrip("/").rsplit("/", 1)[-1]
    stem, _, suffix = name.rpartition(".")
    if suffix.lower() not in SUFFIXES or not stem:
        return None
    return stem.lower().replace("-", "").replace("_", ""), suffix.lower()


def _members(uri: str) -> dict[str, str]:
    """Entity -> member path of a package's data files (the shallowest one where a name repeats), plus
    ``metadata`` -> its metadata.yaml when present."""
    _, sizes = _archive_listing(uri)
    found: dict[str, str] = {}
    for member in sorted(sizes, key=lambda m: (m.count("/"), m)):
        if member.rsplit("/", 1)[-1].lower() == METADATA:
            found.setdefault("metadata", member)
        elif (entity := _entity(member)) is not None:
            found.setdefault(entity[0], member)
    return found


def is_coldp(uri: str) -> bool:
    """Whether ``uri`` (a zip or a folder) is a ColDP package: a NameUsage file, or Name and Taxon files, and
    no Darwin Core ``meta.xml``."""
    fs, path = storage.get_fs(uri)
    if packing(uri) != "zip" and not fs.isdir(path):
        return False
    meta, _ = _archive_listing(uri)
    members = _members(uri)
    return meta is None and ("nameusage" in members or {"name", "taxon"} <= members.keys())


def _file(uri: str, member: str) -> taxa.TextFile:
    delimiter = SUFFIXES[_entity(member)[1]]
    return taxa.TextFile(uri, member, delimiter=delimiter, quote='"' if delimiter == "," else "")


def _columns(uri: str, file: taxa.TextFile, wanted: tuple[str, ...], required: tuple[str, ...]) -> dict:
    """Reader column -> term of a ColDP file's header (``col:`` prefix and case ignored).

    Raises:
        ConfigError: a required column is missing.
    """
    lower = {w.lower(): w for w in wanted}
    names = file.columns(lambda n: lower.get(_COL_PREFIX.sub("", n).lower()))
    missing = [c for c in required if c not in names.values()]
    if missing:
        raise ConfigError(f"--checklist {uri!r}: {file.member} lacks {missing} (header: {file.header()[:12]}); "
                          "a ColDP file needs a header line with the ColDP column names")
    return names


def _lower(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.utf8_lower(pc.utf8_trim_whitespace(column))


def _higher(table: pa.Table) -> pa.Table:
    """Rows of higher taxa (a rank above species), for the classification walk."""
    ranks = _lower(table.column("rank"))
    below = pc.is_in(ranks, value_set=pa.array(sorted(SPECIES_AND_BELOW)))
    return table.filter(pc.fill_null(pc.invert(below), False))


def _scan(uri: str, member: str, wanted: tuple, required: tuple, keep, outputs: int = 1
          ) -> tuple[list[list[pa.Table]], int, int]:
    """Streams one data file; ``keep(batch)`` returns ``outputs`` tables kept from each batch.

    Returns:
        (the kept tables, one list per output; rows read; malformed rows skipped).
    """
    file = _file(uri, member)
    names = _columns(uri, file, wanted, required)
    kept: list[list[pa.Table]] = [[] for _ in range(outputs)]
    skipped, rows = [], 0
    for batch in file.batches(names, skipped):
        rows += batch.num_rows
        for out, table in zip(kept, keep(taxa.with_columns(batch, wanted))):
            out.append(table)
    return kept, rows, len(skipped)


def _classification(start: str | None, higher: dict[str, tuple]) -> dict[str, str | None]:
    """genus, family and kingdom found walking ``parentID`` up from ``start`` (``higher``: ID -> (parentID,
    rank, name)); the walk stops at the root, a missing taxon or a cycle."""
    found: dict[str, str | None] = {"genus": None, "family": None, "kingdom": None}
    seen: set[str] = set()
    node = start
    while node and node in higher and node not in seen:
        seen.add(node)
        parent, rank, name = higher[node]
        if rank in found and found[rank] is None:
            found[rank] = name
        node = parent
    return found


def _row(usage: dict, status: str, accepted_id: str | None, classification: dict, key: str | None) -> dict:
    """A found usage in the Darwin Core shape of :data:`plantray.model.checklist.WANTED` (+ ``_key``)."""
    flat = {k: usage.get(k) or classification.get(k) for k in ("genus", "family", "kingdom")}
    full = " ".join(p for p in (usage.get("scientificName"), usage.get("authorship")) if p)
    return {"taxonID": usage["ID"], "scientificName": full, "canonicalName": usage.get("scientificName"),
            "taxonomicStatus": status, "acceptedNameUsageID": accepted_id, "scientificNameID": None, **flat,
            "_key": key}


def _usage_status(value: str | None) -> str:
    status = (value or "").strip().lower()
    return ACCEPTED.get(status, status)


def lookup_name_usage(uri: str, member: str, keys: set[str]) -> tuple[list[dict], dict[str, dict], int, int]:
    """The NameUsage rows naming ``keys`` and the accepted taxa of its synonyms, in the Darwin Core shape.

    Returns:
        (rows naming a key, taxonID -> accepted row of each synonym's target, rows read, rows skipped).
    """
    def keep(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        accepted = pc.is_in(_lower(batch.column("status")), value_set=pa.array(sorted(ACCEPTED)))
        higher = _higher(batch.filter(pc.fill_null(accepted, False)))
        return taxa.rows_named(batch, "scientificName", keys), higher.select(["ID", "parentID", "rank",
                                                                               "scientificName"])

    (named, high), rows, skipped = _scan(uri, member, USAGE, ("ID", "scientificName", "status"), keep, 2)
    higher = {r["ID"]: (r["parentID"], (r["rank"] or "").strip().lower(), r["scientificName"])
              for r in taxa.concat(high, ("ID", "parentID", "rank", "scientificName")).to_pylist()}
    found = taxa.concat(named, (*USAGE, "_key")).to_pylist()
    targets = {r["parentID"] for r in found if r["parentID"] and _usage_status(r["status"]) not in ACCEPTED.values()}
    by_id = {r["ID"]: r for r in found}
    missing = targets - by_id.keys()
    if missing:  # pass 2: the synonyms' accepted taxa that name no label themselves
        (more,), _, _ = _scan(uri, member, USAGE, ("ID",), lambda b: (taxa.rows_in(b, "ID", missing),))
        by_id.update({r["ID"]: r for r in taxa.concat(more, USAGE).to_pylist()})
    classes = {i: _classification(r["parentID"], higher) for i, r in by_id.items()
               if _usage_status(r["status"]) in ACCEPTED.values()}
    out = []
    for r in found:
        status = _usage_status(r["status"])
        if status in ACCEPTED.values():
            out.append(_row(r, status, None, classes.get(r["ID"], {}), r["_key"]))
        else:  # a synonym takes its accepted taxon's classification (for the kingdom filter)
            target = by_id.get(r["parentID"]) or {}
            cls = {k: target.get(k) or classes.get(r["parentID"], {}).get(k) for k in ("genus", "family", "kingdom")}
            out.append(_row({**r, "genus": None, "family": None, "kingdom": None}, status, r["parentID"], cls,
                            r["_key"]))
    accepted = {t: _row(by_id[t], _usage_status(by_id[t]["status"]), None, classes.get(t, {}), None)
                for t in targets if t in by_id and t in classes}
    return out, accepted, rows, skipped


def _by(tables: list[pa.Table], terms: tuple, key: str = "ID") -> dict[str, dict]:
    return {r[key]: r for r in taxa.concat(tables, terms).to_pylist()}


def _ids(uri: str, member: str, terms: tuple, column: str, values: set[str]) -> dict[str, dict]:
    """The rows of one file whose ``column`` is in ``values``, by ID (one more streamed pass)."""
    if not values:
        return {}
    (kept,), _, _ = _scan(uri, member, terms, (column,), lambda b: (taxa.rows_in(b, column, values),))
    return _by(kept, terms)


def _taxon_status(taxon: dict) -> str:
    return "doubtful" if (taxon.get("provisional") or "").strip().lower() == "true" else "accepted"


def lookup_name_taxon(uri: str, members: dict[str, str], keys: set[str]
                      ) -> tuple[list[dict], dict[str, dict], int, int]:
    """As :func:`lookup_name_usage`, for the Name + Taxon + Synonym layout (``rows read`` counts Name rows)."""
    def keep(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        return taxa.rows_named(batch, "scientificName", keys), _higher(batch).select(["ID", "rank", "scientificName"])

    (named, high), rows, skipped = _scan(uri, members["name"], NAME, ("ID", "scientificName"), keep, 2)
    names = _by(named, (*NAME, "_key"))
    higher_names = {r["ID"]: ((r["rank"] or "").strip().lower(), r["scientificName"])
                    for r in taxa.concat(high, ("ID", "rank", "scientificName")).to_pylist()}
    wanted = names.keys() | higher_names.keys()
    taxon = _ids(uri, members["taxon"], TAXON, "nameID", wanted) if wanted else {}
    higher = {i: (t["parentID"], *higher_names[t["nameID"]]) for i, t in taxon.items() if t["nameID"] in higher_names}
    synonyms = []
    if "synonym" in members and names:
        (kept,), _, _ = _scan(uri, members["synonym"], (*SYNONYM, "ID"), ("taxonID", "nameID"),
                              lambda b: (taxa.rows_in(b, "nameID", set(names)),))
        synonyms = taxa.concat(kept, (*SYNONYM, "ID")).to_pylist()
    taxon.update(_ids(uri, members["taxon"], TAXON, "ID", {s["taxonID"] for s in synonyms} - taxon.keys()))
    target_names = _ids(uri, members["name"], NAME, "ID", {t["nameID"] for t in taxon.values()} - names.keys())

    def usage(t: dict) -> dict:
        name = names.get(t["nameID"]) or target_names.get(t["nameID"]) or {}
        return {**t, "scientificName": name.get("scientificName"), "authorship": name.get("authorship")}

    def classification(t: dict) -> dict:
        walked = _classification(t["parentID"], higher)
        return {k: t.get(k) or walked[k] for k in walked}

    out = [_row(usage(t), _taxon_status(t), None, classification(t), names[t["nameID"]]["_key"])
           for t in taxon.values() if t["nameID"] in names]
    accepted = {}
    for s in synonyms:
        target = taxon.get(s["taxonID"])
        status = (s.get("status") or "synonym").strip().lower()
        name = names[s["nameID"]]
        own = {"ID": s.get("ID") or s["nameID"], "scientificName": name["scientificName"],
               "authorship": name.get("authorship")}
        out.append(_row(own, status, s["taxonID"], classification(target) if target else {}, name["_key"]))
        if target is not None:
            accepted[s["taxonID"]] = _row(usage(target), _taxon_status(target), None, classification(target), None)
    return out, accepted, rows, skipped


def according_to(uri: str, members: dict[str, str]) -> tuple[str | None, str | None]:
    """(nameAccordingTo, nameAccordingToID) from the package's metadata.yaml: its title and version (and
    ChecklistBank dataset key), and its DOI as a URL (else the ChecklistBank dataset page); (None, None)
    without metadata."""
    if "metadata" not in members:
        return None, None
    from plantray.sources.dwcameta import open_member

    try:
        with open_member(uri, members["metadata"]) as f:
            meta = yaml.safe_load(f.read().decode("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        return None, None
    if not isinstance(meta, dict):
        return None, None
    title = str(meta.get("title") or meta.get("alias") or "").strip()
    version = str(meta.get("version") or meta.get("issued") or "").strip()
    key = meta.get("key")
    text = ", ".join(p for p in (title, f"version {version}" if version else "",
                                 f"ChecklistBank dataset {key}" if key else "") if p) or None
    doi = str(meta.get("doi") or "").strip()
    link = (doi if doi.startswith("http") else f"https://doi.org/{doi}") if doi else (
        f"https://www.checklistbank.org/dataset/{key}" if key else None)
    return text, link


def lookup(uri: str, keys: set[str]) -> tuple[list[dict], dict[str, dict], int, int, tuple]:
    """The rows of a ColDP package naming ``keys`` (NameUsage, else Name + Taxon + Synonym).

    Returns:
        (rows naming a key, taxonID -> accepted target row of the synonyms, rows read, rows skipped,
        (nameAccordingTo, nameAccordingToID)).
    """
    members = _members(uri)
    if "nameusage" in members:
        found = lookup_name_usage(uri, members["nameusage"], keys)
    else:
        found = lookup_name_taxon(uri, members, keys)
    return (*found, according_to(uri, members))
