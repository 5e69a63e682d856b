"""Matching a model's labels to a taxonomic checklist (e.g. the GBIF Backbone Taxonomy's ``Taxon.tsv``).

The checklist is a file the user downloads (plantray stays offline): a tab- or comma-separated table with
Darwin Core Taxon columns (``taxonID``, ``scientificName``, ``canonicalName``, ``taxonomicStatus``,
``acceptedNameUsageID``, ``genus``, ``family``, ``kingdom``, optional ``scientificNameID``), or a Darwin Core
Archive whose core is Taxon (its ``meta.xml`` names the columns). The Backbone has millions of rows, so it
is streamed with pyarrow's CSV reader and filtered batch by batch to the rows naming a label (pass 1) and
the accepted taxa those synonyms point to (pass 2); only these few rows are kept.

Rules, per label name (a binomial, compared with ``canonicalName``, or ``scientificName`` when the
checklist has no canonical names):

1. rows of another kingdom than ``kingdom`` are ignored (a name can be a plant and an animal);
2. one accepted taxon of that name: matched. Several: a **homonym**, left unmatched and reported with the
   candidates (choosing one would be a guess; edit the labels' taxonID by hand);
3. no accepted taxon but ``doubtful`` ones: the same rule on those;
4. only synonyms: resolved to the accepted taxon through ``acceptedNameUsageID`` and reported; synonyms
   pointing at several accepted taxa (pro parte) are reported as homonyms;
5. no row: **unmatched**.

A matched label gets the accepted taxon's ``taxonID``, ``genus`` and ``family``, its full name in
``acceptedNameUsage``, and the ``scientificNameID`` of the row naming the label (when the checklist has one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from plantray import storage
from plantray.config import ConfigError
from plantray.model.labels import Labels
from plantray.sources.dwcameta import FileSpec, open_member, packing, read_core_spec

TAXON_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Taxon"
WANTED = ("taxonID", "scientificName", "canonicalName", "taxonomicStatus", "acceptedNameUsageID", "genus",
          "family", "kingdom", "scientificNameID")
REQUIRED = ("taxonID", "scientificName", "taxonomicStatus")
_BLOCK = 8 * 1024**2  # bytes per streamed CSV block


@dataclass
class MatchReport:
    """What ``plantray labels match`` found, per label."""

    labels: int = 0
    matched: list[str] = field(default_factory=list)
    synonyms: list[dict] = field(default_factory=list)  # {"name", "accepted", "taxonID"}
    homonyms: list[dict] = field(default_factory=list)  # {"name", "candidates": [taxonID, ...]}
    unmatched: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_skipped: int = 0  # malformed checklist lines (wrong number of fields)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _file_spec(uri: str) -> FileSpec:
    """The checklist's table: an archive's Taxon core, or a plain .tsv/.txt (tab) or .csv file with a header."""
    fs, path = storage.get_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"--checklist {uri!r} does not exist; download e.g. the GBIF Backbone Taxonomy "
                          "(backbone.zip or its Taxon.tsv) and pass its path")
    if packing(uri) != "dir" or fs.isdir(path):
        return read_core_spec(uri, TAXON_ROW_TYPE, f"--checklist {uri!r}")
    delimiter = "," if uri.lower().endswith(".csv") else "\t"
    # GBIF's Taxon.tsv has no quoting and names contain '"': read quotes as text in tab-separated files.
    return FileSpec(uri, uri, "file", delimiter=delimiter, quote='"' if delimiter == "," else "", header_lines=1)


def _open(spec: FileSpec):
    if spec.kind == "file":
        fs, path = storage.get_fs(spec.archive)
        return fs.open(path, "rb")
    return open_member(spec.archive, spec.member)


def _header(spec: FileSpec) -> list[str]:
    """The column names of a plain file's header line."""
    with _open(spec) as raw:
        line = raw.readline().decode(spec.encoding).rstrip("\r\n")
    return [c.strip().strip('"') for c in line.split(spec.delimiter)]


def _reader(spec: FileSpec, raw, names: dict, skipped: list) -> pacsv.CSVStreamingReader:
    """A streaming reader of the columns ``names`` (reader name -> term), all read as strings."""
    def skip(_row) -> str:  # malformed lines are counted, not fatal: a 2 GB file should not die on one
        skipped.append(1)
        return "skip"

    parse = pacsv.ParseOptions(delimiter=spec.delimiter, quote_char=spec.quote or False, invalid_row_handler=skip)
    read = pacsv.ReadOptions(block_size=_BLOCK, encoding=spec.encoding, skip_rows=0 if spec.kind == "file" else
                             spec.header_lines, autogenerate_column_names=spec.kind != "file")
    convert = pacsv.ConvertOptions(include_columns=list(names), column_types={n: pa.string() for n in names},
                                   strings_can_be_null=True)
    return pacsv.open_csv(raw, read_options=read, parse_options=parse, convert_options=convert)


def _columns(uri: str, spec: FileSpec) -> dict[str, str]:
    """Reader column name -> term name of the wanted columns present (meta.xml's indexes, or the header).

    Raises:
        ConfigError: a required column is missing.
    """
    if spec.kind == "file":
        names = {n: n for n in _header(spec) if n in WANTED}
    else:  # pyarrow names headerless columns f0, f1, ...
        names = {f"f{i}": term for term, i in spec.columns.items() if term in WANTED}
    missing = [c for c in REQUIRED if c not in names.values()]
    if missing:
        raise ConfigError(f"--checklist {uri!r} lacks {missing}: give a Darwin Core Taxon table such as the GBIF "
                          "Backbone's Taxon.tsv (taxonID, scientificName, canonicalName, taxonomicStatus, "
                          "acceptedNameUsageID, genus, family)")
    return names


def _normalise(batch: pa.RecordBatch, names: dict) -> pa.Table:
    """A batch with every :data:`WANTED` column, by term name (absent ones null)."""
    table = pa.Table.from_batches([batch]).rename_columns([names[n] for n in batch.schema.names])
    return pa.table({t: table.column(t) if t in table.column_names else pa.nulls(table.num_rows, pa.string())
                     for t in WANTED})


def scan(uri: str, column: str, values: list[str]) -> tuple[pa.Table, int, int]:
    """Streams the checklist, keeping the rows whose ``column`` is in ``values`` (never the whole file).

    Args:
        uri: the checklist (archive or file).
        column: ``taxonID``, or ``canonicalName`` (``scientificName`` when the checklist has none).
        values: the values kept.
    Returns:
        (kept rows with the :data:`WANTED` columns, rows read, malformed rows skipped).
    Raises:
        ConfigError: a checklist lacking the required columns.
    """
    spec = _file_spec(uri)
    names = _columns(uri, spec)
    if column == "canonicalName" and column not in names.values():
        column = "scientificName"
    wanted = pa.array(sorted(set(values)), pa.string())
    skipped, kept, rows = [], [], 0
    with _open(spec) as raw:
        for batch in _reader(spec, raw, names, skipped):
            table = _normalise(batch, names)
            rows += table.num_rows
            kept.append(table.filter(pc.fill_null(pc.is_in(table.column(column), value_set=wanted), False)))
    schema = pa.schema([(t, pa.string()) for t in WANTED])
    return (pa.concat_tables(kept) if kept else schema.empty_table()), rows, len(skipped)


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
        (the filled labels, the report). Unmatched labels keep what they had.
    """
    found, rows_read, skipped = scan(checklist, "canonicalName", labels.names)
    by_name: dict[str, list[dict]] = {}
    for row in found.to_pylist():
        if kingdom is None or not row.get("kingdom") or row["kingdom"] == kingdom:
            key = row["canonicalName"] if row.get("canonicalName") else row["scientificName"]
            by_name.setdefault(key, []).append(row)
    decisions = {n: _decide(by_name.get(n, [])) for n in labels.names}
    accepted_ids = [ids[0] for kind, ids, _ in decisions.values() if kind == "synonym"]
    accepted = {}
    if accepted_ids:
        targets, more, bad = scan(checklist, "taxonID", accepted_ids)
        rows_read, skipped = rows_read + more, skipped + bad
        accepted = {r["taxonID"]: r for r in targets.to_pylist()}
    report = MatchReport(labels=len(labels), rows_read=rows_read, rows_skipped=skipped)
    return _apply(labels, decisions, accepted, report), report


def _apply(labels: Labels, decisions: dict, accepted: dict, report: MatchReport) -> Labels:
    """The labels with the decided taxa filled in; the report's lists filled on the way."""
    cols = {k: list(getattr(labels, k)) for k in ("taxon_id", "scientific_name_id", "accepted_name", "genus",
                                                     "family")}
    for i, name in enumerate(labels.names):
        kind, ids, own = decisions[name]
        if kind == "unmatched":
            report.unmatched.append(name)
            continue
        if kind == "homonym":
            report.homonyms.append({"name": name, "candidates": ids})
            continue
        target = own if kind == "accepted" else accepted.get(ids[0])
        if target is None:  # the synonym points at a taxon the checklist does not hold
            report.unmatched.append(name)
            continue
        if kind == "synonym":
            report.synonyms.append({"name": name, "accepted": target["scientificName"], "taxonID": ids[0]})
        report.matched.append(name)
        cols["taxon_id"][i], cols["accepted_name"][i] = target["taxonID"], target["scientificName"]
        cols["scientific_name_id"][i] = own.get("scientificNameID") or cols["scientific_name_id"][i]
        cols["genus"][i] = target.get("genus") or cols["genus"][i]
        cols["family"][i] = target.get("family") or cols["family"][i]
    return replace(labels, **cols)
