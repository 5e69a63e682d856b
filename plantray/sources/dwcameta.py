"""Darwin Core Archive structure: ``meta.xml`` parsed into file specs, and archive members opened for reading.

An archive is a ``.zip`` or a directory holding ``meta.xml``, local or in object storage. ``meta.xml`` is
the only truth about its text files: delimiter (``\\t`` escapes included), quoting, header lines, encoding
and which column holds which term (``<id>``/``<coreid>``, ``<field index=.. term=..>``, fields carrying only
a ``default=``). Images come from the GBIF Simple Multimedia extension (``identifier`` = image URL) and/or
the Audubon Core extension (``ac:accessURI``); the occurrence core supplies the occurrence columns.
Only the zip's central directory and ``meta.xml`` are read here, on the driver; :mod:`plantray.dwca`
streams the rows.
"""

from __future__ import annotations

import codecs
import dataclasses
import xml.etree.ElementTree as ET
import zipfile
from contextlib import contextmanager

from plantray import storage
from plantray.config import ConfigError

ID = "gbifID"
OCCURRENCE_ROW_TYPE = "http://rs.tdwg.org/dwc/terms/Occurrence"
MEDIA_ROW_TYPES = ("http://rs.gbif.org/terms/1.0/Multimedia", "http://rs.tdwg.org/ac/terms/Multimedia",
                   "http://rs.gbif.org/terms/1.0/Image")
# Output column -> term local names, most specific first (namespaces vary: dc, dcterms, ac, xmpRights).
MEDIA_TERMS = {"image_uri": ("accessURI", "identifier"), "format": ("format",), "type": ("type",),
               "license": ("license", "WebStatement", "rights", "UsageTerms"),
               "rightsHolder": ("rightsHolder", "Owner"), "creator": ("creator",),
               "references": ("references", "furtherInformationURL")}
OCCURRENCE_TERMS = {"occurrenceID": ("occurrenceID",), "datasetKey": ("datasetKey",),
                    "basisOfRecord": ("basisOfRecord",), "countryCode": ("countryCode",),
                    "publisherScientificName": ("scientificName",),
                    "verbatimScientificName": ("verbatimScientificName",)}
_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}


@dataclasses.dataclass
class FileSpec:
    """One text file of an archive: where it is, its dialect, and output column -> column index."""

    archive: str
    location: str
    kind: str  # "core" or "media"
    delimiter: str = ","
    quote: str = '"'
    header_lines: int = 0
    encoding: str = "utf-8"
    columns: dict = dataclasses.field(default_factory=dict)
    defaults: dict = dataclasses.field(default_factory=dict)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (ID, *(MEDIA_TERMS if self.kind == "media" else OCCURRENCE_TERMS))


@dataclasses.dataclass
class ArchiveMeta:
    """What meta.xml says: the occurrence core, the multimedia extensions and their total size."""

    core: FileSpec
    media: list[FileSpec]
    size_bytes: int


def _unescape(value: str) -> str:
    for escaped, char in _ESCAPES.items():
        value = value.replace(escaped, char)
    return value


def _dialect(el: ET.Element, where: str) -> dict:
    """Dialect attributes with the Darwin Core text guide's defaults, checked for what pyarrow reads."""
    delimiter = _unescape(el.get("fieldsTerminatedBy", ","))
    quote = _unescape(el.get("fieldsEnclosedBy", '"'))
    lines = _unescape(el.get("linesTerminatedBy", "\n"))
    if len(delimiter) != 1 or len(quote) > 1:
        raise ConfigError(f"{where}: fieldsTerminatedBy={delimiter!r} / fieldsEnclosedBy={quote!r} unsupported; "
                          "plantray reads single-character delimiters and quotes (e.g. '\\t' and '' or '\"')")
    if lines not in ("\n", "\r\n", "\r"):
        raise ConfigError(f"{where}: linesTerminatedBy={lines!r} unsupported; use \\n, \\r\\n or \\r")
    try:
        encoding = codecs.lookup(el.get("encoding", "UTF-8")).name
    except LookupError:
        raise ConfigError(f"{where}: unknown encoding {el.get('encoding')!r}; use e.g. UTF-8") from None
    return {"delimiter": delimiter, "quote": quote, "encoding": encoding,
            "header_lines": int(el.get("ignoreHeaderLines", "0") or 0)}


def local_name(term: str) -> str:
    """A term's name without its namespace: ``http://purl.org/dc/terms/type`` and ``dc:type`` -> ``type``."""
    return term.rstrip("/").replace("#", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _file_specs(el: ET.Element, archive: str, kind: str) -> list[FileSpec]:
    """One spec per <location> of a <core>/<extension> element, mapping outputs to indexes/defaults."""
    where = f"{archive} meta.xml <{_tag(el)} rowType={el.get('rowType')!r}>"
    key = next((c for c in el if _tag(c) == ("id" if _tag(el) == "core" else "coreid")), None)
    if key is None or key.get("index") is None:
        raise ConfigError(f"{where} has no <id>/<coreid index=..>: the archive cannot link images to occurrences")
    fields = {}
    for f in (c for c in el if _tag(c) == "field"):
        fields.setdefault(local_name(f.get("term", "")), (f.get("index"), f.get("default")))
    columns, defaults = {ID: int(key.get("index"))}, {}
    for out, names in (MEDIA_TERMS if kind == "media" else OCCURRENCE_TERMS).items():
        found = next((fields[n] for n in names if n in fields), None)
        if found and found[0] is not None:
            columns[out] = int(found[0])
        if found and found[1] is not None:
            defaults[out] = found[1]
    locations = [loc.text.strip() for loc in el.iter() if _tag(loc) == "location" and loc.text]
    if not locations:
        raise ConfigError(f"{where} names no <files><location>")
    return [FileSpec(archive, loc, kind, columns=columns, defaults=defaults, **_dialect(el, where))
            for loc in locations]


def _tag(el: ET.Element) -> str:
    return el.tag.rsplit("}", 1)[-1]


def _archive_listing(uri: str) -> tuple[bytes, dict[str, int]]:
    """(meta.xml bytes, file name -> size) of a zip (central directory only) or a directory."""
    fs, path = storage.get_fs(uri)
    if path.lower().endswith(".zip"):
        with fs.open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
            sizes = {i.filename: i.file_size for i in zf.infolist()}
            try:
                return zf.read(_zip_name(zf, "meta.xml")), sizes
            except FileNotFoundError:
                raise ConfigError(f"{uri!r} has no meta.xml: not a Darwin Core Archive (GBIF downloads must use "
                                  "the 'Darwin Core Archive' format, which carries image URLs)") from None
    sizes = {p[len(path.rstrip('/')) + 1:]: s for p, s in ((d["name"], d.get("size") or 0)
                                                              for d in fs.find(path, detail=True).values())}
    return storage.read_bytes(storage.join(uri, "meta.xml")), sizes


def read_meta(uri: str) -> ArchiveMeta:
    """Parses and checks meta.xml (driver side, before any work).

    Raises:
        ConfigError: unparsable meta.xml, a core that is not Occurrence, no multimedia extension, or a
            named file missing from the archive.
    """
    try:
        text, sizes = _archive_listing(uri)
        root = ET.fromstring(text)
    except (zipfile.BadZipFile, ET.ParseError, OSError) as e:
        raise ConfigError(f"--input {uri!r}: unreadable Darwin Core Archive ({e})") from None
    core = next((c for c in root if _tag(c) == "core"), None)
    if core is None or core.get("rowType") != OCCURRENCE_ROW_TYPE:
        row_type = core.get("rowType") if core is not None else None
        raise ConfigError(f"--input {uri!r}: the archive's core is {row_type!r}, not {OCCURRENCE_ROW_TYPE}; "
                          "give an occurrence archive (e.g. a GBIF DWCA download)")
    media = [s for e in root if _tag(e) == "extension" and e.get("rowType") in MEDIA_ROW_TYPES
             for s in _file_specs(e, uri, "media")]
    if not media:
        raise ConfigError(f"--input {uri!r} has no multimedia extension ({', '.join(MEDIA_ROW_TYPES)}), so no "
                          "image URLs; request the GBIF download in 'Darwin Core Archive' format")
    core_specs = _file_specs(core, uri, "core")
    size = 0
    for spec in (*core_specs, *media):
        match = [n for n in sizes if n == spec.location or n.endswith("/" + spec.location)]
        if not match:
            raise ConfigError(f"--input {uri!r}: meta.xml names {spec.location!r}, which the archive lacks")
        size += sizes[match[0]]
    if len(core_specs) > 1:
        raise ConfigError(f"--input {uri!r}: a core split over several files is not supported")
    return ArchiveMeta(core_specs[0], media, size)


@contextmanager
def open_member(archive: str, location: str):
    """Opens one text file of an archive for streaming (a zip member is read in place, by ranged reads)."""
    fs, path = storage.get_fs(archive)
    if not path.lower().endswith(".zip"):
        with fs.open(f"{path.rstrip('/')}/{location}", "rb") as f:
            yield f
        return
    with fs.open(path, "rb", block_size=4 * 1024**2) as raw, zipfile.ZipFile(raw) as zf:
        with zf.open(_zip_name(zf, location)) as f:
            yield f


def _zip_name(zf: zipfile.ZipFile, location: str) -> str:
    # Some publishers zip the archive's folder, so files sit one level down (e.g. "dwca/occurrence.txt").
    names = zf.namelist()
    if location in names:
        return location
    nested = [n for n in names if n.endswith("/" + location)]
    if not nested:
        raise FileNotFoundError(location)
    return nested[0]
