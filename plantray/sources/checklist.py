"""Checklists: which species occur in which country (and, optionally, state or province).

A checklist is small (species x regions), so it is read once, whole, on the driver, before any work. Two
forms are accepted:

- a CSV with ``scientificName`` and ``countryCode`` (ISO 3166-1 alpha-2), optionally ``stateProvince`` and
  ``occurrenceStatus``;
- a checklist Darwin Core Archive (``.zip``, ``.tar.gz``/``.tgz`` or a directory with ``meta.xml``): a
  Taxon core (``scientificName``) with the GBIF Distribution extension
  (``http://rs.gbif.org/terms/1.0/Distribution``: ``countryCode``, or a ``locationID`` such as
  ``ISO3166-1:DE``; optionally ``stateProvince``), joined on the core id, as in a GBIF species-list
  download with distribution data. ``meta.xml`` is parsed by :mod:`plantray.sources.dwcameta`.

Rows whose ``occurrenceStatus`` says the species is not there (``absent``, ``excluded``, ``doubtful``)
are dropped; every ``establishmentMeans`` counts as present (an introduced species still grows there).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field

from plantray import storage
from plantray.config import ConfigError
from plantray.names import canonical
from plantray.sources.dwcameta import _dialect, _parse, _tag, local_name, member_name, open_member, packing

COUNTRY, STATE, NAME, STATUS = "countryCode", "stateProvince", "scientificName", "occurrenceStatus"
TAXON_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Taxon"
DISTRIBUTION_ROW_TYPE = "http://rs.gbif.org/terms/1.0/Distribution"
NOT_PRESENT = frozenset({"absent", "excluded", "doubtful"})
_ISO_LOCATION = re.compile(r"^ISO[ _-]?(?:3166(?:-1)?)?:([A-Za-z]{2})$", re.IGNORECASE)


@dataclass
class Checklist:
    """Where each species occurs, as read from a checklist file.

    Attributes:
        uri: the checklist as given.
        kind: ``"csv"`` or ``"dwca"``.
        entries: (scientificName, countryCode upper-cased, stateProvince or None) per present record.
        dropped: records not used, by reason (``not present``, ``no country``, ``no name``).
    """

    uri: str
    kind: str
    entries: list[tuple[str, str, str | None]]
    dropped: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The distinct scientific names, sorted."""
        return sorted({n for n, _, _ in self.entries})


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _entry(name, country, state, status, dropped: Counter) -> tuple | None:
    """One checklist record -> an entry, or None (counted in ``dropped`` by reason)."""
    name, country, state, status = _clean(name), _clean(country), _clean(state), _clean(status)
    reason = ("no name" if not name else "no country" if not country
              else "not present" if status and status.lower() in NOT_PRESENT else None)
    if reason:
        dropped[reason] += 1
        return None
    return name, country.upper(), state


def _read_csv(uri: str, where: str) -> Checklist:
    try:
        text = storage.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text; save the checklist as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in (NAME, COUNTRY) if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{where} lacks column(s) {missing} (header: {reader.fieldnames}); a checklist CSV "
                          f"has {NAME} and {COUNTRY} (ISO 3166-1 alpha-2), optionally {STATE} and {STATUS}")
    dropped: Counter = Counter()
    entries = [e for r in reader if (e := _entry(r.get(NAME), r.get(COUNTRY), r.get(STATE), r.get(STATUS),
                                                 dropped))]
    return Checklist(uri, "csv", entries, dict(dropped))


def _spec(el, where: str, key_tag: str) -> dict:
    """What a meta.xml <core>/<extension> says: dialect, location, key index and term -> index."""
    key = next((c for c in el if _tag(c) == key_tag), None)
    location = next((loc.text.strip() for loc in el.iter() if _tag(loc) == "location" and loc.text), None)
    if key is None or key.get("index") is None or not location:
        raise ConfigError(f"{where}: <{_tag(el)} rowType={el.get('rowType')!r}> needs <{key_tag} index=..> and "
                          "<files><location>")
    terms = {}
    for f in (c for c in el if _tag(c) == "field" and c.get("index") is not None):
        terms.setdefault(local_name(f.get("term", "")), int(f.get("index")))
    return {"location": location, "key": int(key.get("index")), "terms": terms, **_dialect(el, where)}


def _rows(uri: str, spec: dict, sizes: dict, where: str):
    """The text file of a spec as lists of fields (header lines skipped)."""
    member = member_name(list(sizes), spec["location"])
    if member is None:
        raise ConfigError(f"{where}: meta.xml names {spec['location']!r}, which the archive lacks")
    with open_member(uri, member) as f:
        text = f.read().decode(spec["encoding"])
    reader = csv.reader(io.StringIO(text), delimiter=spec["delimiter"], quotechar=spec["quote"] or None,
                        quoting=csv.QUOTE_MINIMAL if spec["quote"] else csv.QUOTE_NONE)
    rows = list(reader)[spec["header_lines"]:]
    return [r for r in rows if any(v.strip() for v in r)]


def _get(row: list, terms: dict, name: str) -> str | None:
    i = terms.get(name)
    return row[i] if i is not None and i < len(row) else None


def _country(row: list, terms: dict) -> str | None:
    """``countryCode``, else an ISO 3166-1 ``locationID`` (``ISO3166-1:DE``, ``ISO:DE``)."""
    code = _clean(_get(row, terms, COUNTRY))
    if code:
        return code
    match = _ISO_LOCATION.match(_clean(_get(row, terms, "locationID")) or "")
    return match.group(1) if match else None


def _read_dwca(uri: str, where: str) -> Checklist:
    root, sizes = _parse(uri, where)
    core = next((c for c in root if _tag(c) == "core"), None)
    dist = next((e for e in root if _tag(e) == "extension" and e.get("rowType") == DISTRIBUTION_ROW_TYPE), None)
    if core is None or core.get("rowType") != TAXON_ROW_TYPE or dist is None:
        raise ConfigError(f"{where}: a checklist archive needs a {TAXON_ROW_TYPE} core and a "
                          f"{DISTRIBUTION_ROW_TYPE} extension (a GBIF species list downloaded with distributions); "
                          "or give a CSV with scientificName,countryCode")
    taxon, distribution = _spec(core, where, "id"), _spec(dist, where, "coreid")
    if NAME not in taxon["terms"]:
        raise ConfigError(f"{where}: the Taxon core maps no dwc:scientificName")
    names = {r[taxon["key"]]: _get(r, taxon["terms"], NAME) for r in _rows(uri, taxon, sizes, where)
             if len(r) > taxon["key"]}
    dropped: Counter = Counter()
    entries = []
    for r in _rows(uri, distribution, sizes, where):
        name = names.get(r[distribution["key"]]) if len(r) > distribution["key"] else None
        terms = distribution["terms"]
        entry = _entry(name, _country(r, terms), _get(r, terms, STATE), _get(r, terms, STATUS), dropped)
        if entry:
            entries.append(entry)
    return Checklist(uri, "dwca", entries, dict(dropped))


def read_checklist(uri: str, flag: str = "--checklist") -> Checklist:
    """Reads a checklist CSV or checklist Darwin Core Archive, whole (it is small), on the driver.

    Args:
        uri: local path or object-store URI of a ``.csv``, or of an archive (``.zip``, ``.tar.gz``, ``.tgz``
            or a directory holding ``meta.xml``).
        flag: the flag that named it, for messages.
    Returns:
        The checklist's present records.
    Raises:
        ConfigError: missing or unreadable file, missing columns or terms, or no usable record.
    """
    where = f"{flag} {uri!r}"
    fs, path = storage.get_fs(uri)
    if not fs.exists(path):
        raise ConfigError(f"{where} does not exist; give a checklist CSV or a checklist Darwin Core Archive")
    is_archive = packing(uri) != "dir" or (fs.isdir(path) and fs.exists(f"{path.rstrip('/')}/meta.xml"))
    if fs.isdir(path) and not is_archive:
        raise ConfigError(f"{where} is a directory without meta.xml; give a checklist CSV or archive")
    checklist = _read_dwca(uri, where) if is_archive else _read_csv(uri, where)
    if not checklist.entries:
        raise ConfigError(f"{where} holds no present species with a countryCode (dropped: {checklist.dropped}); "
                          "fill scientificName and countryCode")
    return checklist


def match_names(checklist_names: list[str], labels: list[str]) -> tuple[dict[str, str], list[str]]:
    """Maps checklist names to the model's labels: the exact name, else the name without authorship (its
    infraspecific name, then its species; :func:`plantray.names.canonical`), as GBIF's ``Quercus robur L.``.

    Args:
        checklist_names: the checklist's distinct scientific names.
        labels: the model's label names.
    Returns:
        (checklist name -> label, checklist names matching no label).
    """
    # Labels are compared in their canonical form too: a label "Mentha x piperita" is "Mentha × piperita".
    known = {**{canonical(label).name or label: label for label in labels}, **{label: label for label in labels}}
    matched, unmatched = {}, []
    for name in checklist_names:
        parts = canonical(name)
        label = next((known[c] for c in (name, parts.infraspecific, parts.species) if c and c in known), None)
        if label:
            matched[name] = label
        else:
            unmatched.append(name)
    return matched, unmatched
