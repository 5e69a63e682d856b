"""Darwin Core Archive structure: ``meta.xml`` parsed into file specs, and archive members opened for reading.

An archive is a ``.zip``, a ``.tar.gz``/``.tgz`` or a directory holding ``meta.xml``, local or in object
storage. ``meta.xml`` is the only truth about its text files: delimiter (``\\t`` escapes included), quoting,
header lines, encoding and which column holds which term (``<id>``/``<coreid>``, ``<field index=.. term=..>``,
fields carrying only a ``default=``). Images come from the GBIF Simple Multimedia extension (``identifier`` =
image URL), the Audubon Core extension (``ac:accessURI``) and/or the core's ``dwc:associatedMedia`` (a list
of URLs); the occurrence core supplies the occurrence columns. Only ``meta.xml`` and the archive's listing
are read here, on the driver (a zip's central directory; a tar's headers, in one streaming pass, since a
gzip stream has no index); :mod:`plantray.sources.dwca` streams the rows.
"""

from __future__ import annotations

import codecs
import dataclasses
import tarfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from contextlib import contextmanager

from plantray import storage
from plantray.config import ConfigError

ID = "gbifID"
ASSOCIATED = "associatedMedia"
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
# What each kind of file spec reads: multimedia extension rows, core rows, the core's associatedMedia.
TERMS = {"media": MEDIA_TERMS, "core": OCCURRENCE_TERMS, "associated": {ASSOCIATED: (ASSOCIATED,)}}
ARCHIVE_SUFFIXES = {".zip": "zip", ".tar.gz": "tar", ".tgz": "tar"}
_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}
_READ_BLOCK = 4 * 1024**2  # ranged reads of an object-store archive


@dataclasses.dataclass
class FileSpec:
    """One text file of an archive: where it is, its dialect, and output column -> column index.

    ``location`` is the name meta.xml gives; ``member`` the path inside the archive where it was found
    (``dwca/occurrence.txt`` when a publisher zipped the folder).
    """

    archive: str
    location: str
    kind: str  # "core", "media" or "associated" (the core's associatedMedia)
    delimiter: str = ","
    quote: str = '"'
    header_lines: int = 0
    encoding: str = "utf-8"
    columns: dict = dataclasses.field(default_factory=dict)
    defaults: dict = dataclasses.field(default_factory=dict)
    member: str = ""

    @property
    def outputs(self) -> tuple[str, ...]:
        return (ID, *TERMS[self.kind])


@dataclasses.dataclass
class ArchiveMeta:
    """What meta.xml says: the occurrence core, the image sources (multimedia extensions, and the core
    again when it maps associatedMedia) and the archive's total size."""

    core: FileSpec
    media: list[FileSpec]
    size_bytes: int
    associated: list[FileSpec] = dataclasses.field(default_factory=list)


def packing(uri: str) -> str:
    """``"zip"``, ``"tar"`` (``.tar.gz``/``.tgz``) or ``"dir"``, from the URI's suffix."""
    lower = uri.lower().rstrip("/")
    return next((p for suffix, p in ARCHIVE_SUFFIXES.items() if lower.endswith(suffix)), "dir")


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
    for out, names in TERMS[kind].items():
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


def member_name(names: list[str], location: str) -> str | None:
    """The archive member holding ``location``: the exact name, else the first one a folder down.

    Some publishers pack the archive's folder, so files sit one level down (``dwca/occurrence.txt``, or
    ``./occurrence.txt`` from ``tar -C dir .``). None when no member matches.
    """
    if location in names:
        return location
    return next((n for n in names if n.endswith("/" + location)), None)


def _zip_listing(raw) -> tuple[bytes | None, dict[str, int]]:
    with zipfile.ZipFile(raw) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
        meta = member_name(list(sizes), "meta.xml")
        return (zf.read(meta) if meta else None), sizes


def _tar_listing(raw) -> tuple[bytes | None, dict[str, int]]:
    sizes, metas = {}, {}
    with tarfile.open(fileobj=raw, mode="r|*") as tf:  # a stream: headers in order, data skipped
        for info in tf:
            if info.isfile():
                sizes[info.name] = info.size
                if info.name.rsplit("/", 1)[-1] == "meta.xml":
                    metas[info.name] = tf.extractfile(info).read()
    meta = member_name(list(metas), "meta.xml")
    return (metas[meta] if meta else None), sizes


def _archive_listing(uri: str) -> tuple[bytes | None, dict[str, int]]:
    """(meta.xml bytes or None, member name -> size) of a zip, a tar.gz or a directory."""
    fs, path = storage.get_fs(uri)
    pack = packing(uri)
    if pack != "dir":
        with fs.open(path, "rb", block_size=_READ_BLOCK) as raw:
            return (_zip_listing if pack == "zip" else _tar_listing)(raw)
    root = path.rstrip("/")
    sizes = {d["name"][len(root) + 1:]: d.get("size") or 0 for d in fs.find(path, detail=True).values()}
    return (storage.read_bytes(storage.join(uri, "meta.xml")) if "meta.xml" in sizes else None), sizes


def _parse(uri: str, where: str) -> tuple[ET.Element, dict[str, int]]:
    try:
        text, sizes = _archive_listing(uri)
        if text is None:
            raise ConfigError(f"{where} has no meta.xml: not a Darwin Core Archive (GBIF downloads must use the "
                              "'Darwin Core Archive' format, which carries image URLs)")
        return ET.fromstring(text), sizes
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, ET.ParseError, OSError) as e:
        raise ConfigError(f"{where}: unreadable Darwin Core Archive ({e})") from None


def _core(root: ET.Element, where: str) -> ET.Element:
    core = next((c for c in root if _tag(c) == "core"), None)
    if core is None or core.get("rowType") != OCCURRENCE_ROW_TYPE:
        row_type = core.get("rowType") if core is not None else None
        raise ConfigError(f"{where}: the archive's core is {row_type!r}, not {OCCURRENCE_ROW_TYPE}; "
                          "give an occurrence archive (e.g. a GBIF DWCA download)")
    return core


def _locate(specs: list[FileSpec], sizes: dict[str, int], where: str) -> int:
    """Sets each spec's ``member``; returns their total size."""
    total = 0
    for spec in specs:
        spec.member = member_name(list(sizes), spec.location) or ""
        if not spec.member:
            raise ConfigError(f"{where}: meta.xml names {spec.location!r}, which the archive lacks")
        total += sizes[spec.member]
    return total


def read_meta(uri: str, where: str | None = None) -> ArchiveMeta:
    """Parses and checks meta.xml (driver side, before any work).

    Args:
        uri: the archive (``.zip``, ``.tar.gz``/``.tgz`` or a directory), local or object storage.
        where: how messages name the archive (e.g. ``--input '/data/gbif.zip'``).
    Raises:
        ConfigError: no or unparsable meta.xml, a core that is not Occurrence, no image source (neither a
            multimedia extension nor associatedMedia in the core), or a named file missing from the archive.
    """
    where = where or f"archive {uri!r}"
    root, sizes = _parse(uri, where)
    core = _core(root, where)
    media = [s for e in root if _tag(e) == "extension" and e.get("rowType") in MEDIA_ROW_TYPES
             for s in _file_specs(e, uri, "media")]
    associated = [s for s in _file_specs(core, uri, "associated") if ASSOCIATED in s.columns]
    if not media and not associated:
        raise ConfigError(f"{where} has no multimedia extension ({', '.join(MEDIA_ROW_TYPES)}) and no "
                          f"dwc:{ASSOCIATED} in its core, so no image URLs; request the GBIF download in "
                          "'Darwin Core Archive' format")
    core_specs = _file_specs(core, uri, "core")
    if len(core_specs) > 1:
        raise ConfigError(f"{where}: a core split over several files is not supported")
    size = _locate([*core_specs, *media], sizes, where)
    _locate(associated, sizes, where)
    return ArchiveMeta(core_specs[0], media, size, associated)


@contextmanager
def open_member(archive: str, member: str):
    """Opens one member of an archive for streaming: a file of a directory; a zip member in place, by
    ranged reads; a tar.gz member by decompressing the stream up to it (a gzip stream has no index)."""
    fs, path = storage.get_fs(archive)
    pack = packing(archive)
    if pack == "dir":
        with fs.open(f"{path.rstrip('/')}/{member}", "rb") as f:
            yield f
        return
    with fs.open(path, "rb", block_size=_READ_BLOCK) as raw:
        if pack == "zip":
            with zipfile.ZipFile(raw) as zf, zf.open(member) as f:
                yield f
            return
        with tarfile.open(fileobj=raw, mode="r|*") as tf:
            info = next((i for i in tf if i.name == member), None)
            if info is None:
                raise FileNotFoundError(member)
            with tf.extractfile(info) as f:
                yield f


def read_core_spec(uri: str, row_type: str, where: str | None = None) -> FileSpec:
    """The core file of an archive whose core is ``row_type`` (e.g. a Taxon checklist such as the GBIF
    Backbone Taxonomy), with every mapped term: ``columns`` maps term local names to column indexes.

    Args:
        uri: the archive (``.zip``, ``.tar.gz``/``.tgz`` or a directory holding ``meta.xml``).
        row_type: the core rowType required, e.g. ``http://rs.tdwg.org/dwc/terms/Taxon``.
        where: how messages name the archive.
    Raises:
        ConfigError: no meta.xml, another core, or a core file missing from the archive.
    """
    where = where or f"archive {uri!r}"
    root, sizes = _parse(uri, where)
    core = next((c for c in root if _tag(c) == "core"), None)
    if core is None or core.get("rowType") != row_type:
        found = core.get("rowType") if core is not None else None
        raise ConfigError(f"{where}: the archive's core is {found!r}, not {row_type}")
    key = next((c for c in core if _tag(c) == "id"), None)
    columns = {local_name(f.get("term", "")): int(f.get("index")) for f in core
               if _tag(f) == "field" and f.get("index") is not None}
    if key is not None and key.get("index") is not None:
        columns.setdefault("taxonID", int(key.get("index")))  # a Taxon core's id is its taxonID
    locations = [loc.text.strip() for loc in core.iter() if _tag(loc) == "location" and loc.text]
    if len(locations) != 1:
        raise ConfigError(f"{where}: the core must name exactly one file (it names {locations})")
    spec = FileSpec(uri, locations[0], "core", columns=columns, **_dialect(core, where))
    _locate([spec], sizes, where)
    return spec
