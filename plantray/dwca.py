"""Darwin Core Archives (GBIF downloads and publishers' archives) as a lazy dataset of still images.

An archive is a ``.zip`` or a directory holding ``meta.xml``, local or in object storage. ``meta.xml`` is
the only truth about its text files: delimiter (``\\t`` escapes included), quoting, header lines, encoding
and which column holds which term (``<id>``/``<coreid>``, ``<field index=.. term=..>``, fields carrying only
a ``default=``). Images come from the GBIF Simple Multimedia extension (``identifier`` = image URL) and/or
the Audubon Core extension (``ac:accessURI``); the occurrence core supplies the occurrence columns.

Pipeline (Ray Data throughout; the driver reads only meta.xml):

1. one Ray task per text file streams it with ``pyarrow.csv.open_csv`` (a zip member is read in place
   through ``zipfile`` over an fsspec file: ranged reads, no unpacking), keeping only the needed columns;
2. multimedia rows get ``_skip`` (``sound``, ``video``, ``not an image``, ``no url``, ``malformed row``);
3. a hash shuffle on the core id puts each occurrence's images in one block, where identical URLs of one
   occurrence are marked ``duplicate url in occurrence`` (exact: a vectorised group-by per block);
4. multimedia rows are left-outer joined (``Dataset.join``, hash-partitioned) with the core on the core
   id, so no image row is lost, even one without a matching occurrence (its occurrence columns are null);
5. the joined table is materialised in the object store, counted (skips by reason), and returned with
   the skipped rows filtered out lazily.

Memory: the driver holds meta.xml only. Each reader task holds one 16 MiB CSV block; the shuffle and the
join hold one partition per aggregator (archive size / 256 MiB partitions); the materialised image table
(a few hundred bytes per multimedia row) lives in Ray's object store, spilling to disk. Each file is read
once, by one task: a deflated zip member cannot be split.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import xml.etree.ElementTree as ET
import zipfile
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import ray

from plantray import io as pio
from plantray.config import ConfigError

ID = "gbifID"
SKIP = "_skip"
MATCHED = "_matched"
SKIP_REASONS = ("no url", "sound", "video", "not an image", "duplicate url in occurrence", "malformed row")
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
IMAGE_COLUMNS = (ID, *MEDIA_TERMS)
_BLOCK_BYTES = 16 * 1024**2
_PARTITION_BYTES = 256 * 1024**2
_STILL_TYPES = {"stillimage", "image"}
_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}
_HASH_STRATEGIES = {"hash_shuffle", "hash_shuffle_v2", "gpu_shuffle"}


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


# --- meta.xml --------------------------------------------------------------------------------------------

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


def _local(term: str) -> str:
    return term.rstrip("/").replace("#", "/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _file_specs(el: ET.Element, archive: str, kind: str) -> list[FileSpec]:
    """One spec per <location> of a <core>/<extension> element, mapping outputs to indexes/defaults."""
    where = f"{archive} meta.xml <{_tag(el)} rowType={el.get('rowType')!r}>"
    key = next((c for c in el if _tag(c) == ("id" if _tag(el) == "core" else "coreid")), None)
    if key is None or key.get("index") is None:
        raise ConfigError(f"{where} has no <id>/<coreid index=..>: the archive cannot link images to occurrences")
    fields = {}
    for f in (c for c in el if _tag(c) == "field"):
        fields.setdefault(_local(f.get("term", "")), (f.get("index"), f.get("default")))
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
    fs, path = pio.get_fs(uri)
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
    return pio.read_bytes(pio.join(uri, "meta.xml")), sizes


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


# --- reading ---------------------------------------------------------------------------------------------

@contextmanager
def open_member(archive: str, location: str):
    """Opens one text file of an archive for streaming (a zip member is read in place, by ranged reads)."""
    fs, path = pio.get_fs(archive)
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


def _csv_options(spec: FileSpec, invalid: list) -> tuple:
    def on_invalid(row) -> str:
        invalid[0] += 1  # a row with the wrong number of fields is counted, never fatal
        return "skip"

    read = pacsv.ReadOptions(skip_rows=spec.header_lines, autogenerate_column_names=True,
                             encoding=spec.encoding, block_size=_BLOCK_BYTES, use_threads=False)
    parse = pacsv.ParseOptions(delimiter=spec.delimiter, quote_char=spec.quote or False,
                               newlines_in_values=bool(spec.quote), invalid_row_handler=on_invalid)
    names = [f"f{i}" for i in sorted(set(spec.columns.values()))]
    # Identifiers must stay strings: no type inference anywhere.
    convert = pacsv.ConvertOptions(include_columns=names, include_missing_columns=True,
                                   column_types={c: pa.string() for c in names}, strings_can_be_null=False)
    return read, parse, convert


def _column(batch: pa.RecordBatch, spec: FileSpec, name: str) -> pa.Array:
    """One output column: the mapped text column, blanks -> the field's default (or null)."""
    default = pa.scalar(spec.defaults.get(name), pa.string())
    if name not in spec.columns:
        return pa.array([default.as_py()] * batch.num_rows, pa.string())
    values = pc.utf8_trim_whitespace(batch.column(f"f{spec.columns[name]}"))
    return pc.if_else(pc.fill_null(pc.equal(values, ""), True), default, values)


def read_file(spec: FileSpec):
    """Streams one archive text file as pyarrow tables of ``spec.outputs`` (media files also get ``_skip``).

    Args:
        spec: the file, its dialect and mapping (from :func:`read_meta`).

    Returns:
        A generator of ``pa.Table``.
    """
    invalid = [0]
    read, parse, convert = _csv_options(spec, invalid)
    with open_member(spec.archive, spec.location) as f:
        try:
            reader = pacsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as e:
            if "Empty CSV" in str(e):  # a header-only file holds no rows
                return
            raise
        for batch in reader:
            table = pa.table({name: _column(batch, spec, name) for name in spec.outputs})
            if spec.kind == "media":
                yield classify_media(table)
            else:  # marks joined rows: an image whose occurrence side is null found no occurrence
                yield table.append_column(MATCHED, pa.array([True] * table.num_rows, pa.bool_()))
    if spec.kind == "media" and invalid[0]:
        yield pa.table({**{c: pa.nulls(invalid[0], pa.string()) for c in IMAGE_COLUMNS},
                        SKIP: pa.array(["malformed row"] * invalid[0], pa.string())})


def _media_kind(kind: str | None, fmt: str | None, url: str | None) -> str:
    """image, sound, video or other: the DCMI type decides when given, else the MIME format, else the URL."""
    if kind:
        kind = _local(kind).lower()
        return {"sound": "sound", "movingimage": "video"}.get(kind, "image" if kind in _STILL_TYPES else "other")
    if fmt:
        return {"audio": "sound", "video": "video", "image": "image"}.get(fmt.lower().split("/", 1)[0], "other")
    return "image" if (url or "").split("?", 1)[0].lower().endswith(pio.IMAGE_SUFFIXES) else "other"


def skip_reason(kind: str | None, fmt: str | None, url: str | None) -> str | None:
    """Why a multimedia row is not kept (None when it is a still image with a URL)."""
    media = _media_kind(kind, fmt, url)
    if media != "image":
        return {"sound": "sound", "video": "video"}.get(media, "not an image")
    if not url or "://" not in url or any(c.isspace() for c in url):
        return "no url"  # GBIF empties identifier when the publisher gave an HTML page
    return None


def classify_media(table: pa.Table) -> pa.Table:
    """Adds ``_skip`` (see :func:`skip_reason`) to a table of multimedia rows."""
    reasons = [skip_reason(k, f, u) for k, f, u in zip(table["type"].to_pylist(), table["format"].to_pylist(),
                                                        table["image_uri"].to_pylist())]
    return table.append_column(SKIP, pa.array(reasons, pa.string()))


def mark_duplicates(table: pa.Table) -> pa.Table:
    """Marks repeated (core id, URL) pairs among kept rows ``duplicate url in occurrence``, keeping one.

    Exact when ``table`` holds every row of each occurrence in it (after the shuffle on the core id).
    """
    if table.num_rows == 0:
        return table
    index = pa.array(range(table.num_rows), pa.int64())
    kept = pc.is_null(table[SKIP])
    pairs = pa.table({"k": table[ID], "u": table["image_uri"], "i": index}).filter(kept)
    first = pairs.group_by(["k", "u"], use_threads=False).aggregate([("i", "min")])["i_min"]
    duplicate = pc.and_(kept, pc.invert(pc.is_in(index, value_set=first.combine_chunks())))
    reason = pc.if_else(duplicate, pa.scalar("duplicate url in occurrence"), table[SKIP])
    return table.set_column(table.schema.get_field_index(SKIP), SKIP, reason)


def _read_specs(batch: pa.Table):
    for text in batch["spec"].to_pylist():
        yield from read_file(FileSpec(**json.loads(text)))


def _read_files(specs: list[FileSpec]) -> ray.data.Dataset:
    items = [{"spec": json.dumps(dataclasses.asdict(s))} for s in specs]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_specs, batch_size=1, batch_format="pyarrow")


def _partitions(meta: ArchiveMeta) -> int:
    return max(2, min(512, meta.size_bytes // _PARTITION_BYTES + 1))


def image_rows(meta: ArchiveMeta) -> ray.data.Dataset:
    """Every multimedia row with ``_skip`` (null for kept still images), duplicates marked per occurrence."""
    ds = _read_files(meta.media)
    if ray.data.DataContext.get_current().shuffle_strategy.value in _HASH_STRATEGIES:
        # A hash repartition keeps each key in one block (Ray's own map_groups relies on it): vectorised.
        return ds.repartition(_partitions(meta), keys=[ID]).map_batches(
            mark_duplicates, batch_size=None, batch_format="pyarrow")
    return ds.groupby(ID, num_partitions=_partitions(meta)).map_groups(mark_duplicates, batch_format="pyarrow")


def _tally(table: pa.Table) -> pa.Table:
    found = {c["values"]: c["counts"] for c in pc.value_counts(table[SKIP].fill_null("kept")).to_pylist()}
    counts = {r: pa.array([found.get(r, 0)], pa.int64()) for r in ("kept", *SKIP_REASONS)}
    unmatched = pc.and_(pc.is_null(table[SKIP]), pc.is_null(table[MATCHED]))
    return pa.table({**counts, "unmatched": pa.array([pc.sum(pc.cast(unmatched, pa.int64())).as_py() or 0])})


def count_skips(joined: ray.data.Dataset) -> dict:
    """Counts multimedia rows by outcome on the cluster.

    Returns:
        {rows, images, skipped: {reason: n}, unmatched_images}.
    """
    names = ["kept", *SKIP_REASONS, "unmatched"]
    totals = joined.map_batches(_tally, batch_size=None, batch_format="pyarrow").sum(names) or {}
    got = {r: int(totals.get(f"sum({r})") or 0) for r in names}
    kept, unmatched = got.pop("kept"), got.pop("unmatched")
    return {"rows": kept + sum(got.values()), "images": kept, "skipped": {r: n for r, n in got.items() if n},
            "unmatched_images": unmatched}


def _drop_skipped(table: pa.Table) -> pa.Table:
    return table.filter(pc.is_null(table[SKIP])).drop_columns([SKIP, MATCHED])


def read_dwca(uri: str) -> tuple[ray.data.Dataset, dict]:
    """A Darwin Core Archive as a dataset with one row per still image that has a URL.

    The joined image table is materialised in Ray's object store (spilling to disk; a few hundred bytes
    per image, never on the driver) before this returns: a hash shuffle's tasks each need a whole CPU,
    which a model actor pool started in the same streaming pipeline may hold, so joining lazily inside
    ``classify`` could deadlock small machines. The counts then come from that table at no extra read.

    Args:
        uri: ``.zip`` or directory with ``meta.xml``; local, ``s3://`` or any fsspec URI.

    Returns:
        (dataset, stats). Columns: ``gbifID`` (the core id as a string, whatever its term), ``image_uri``
        (the URL), ``format``, ``type``, ``license``, ``rightsHolder``, ``creator``, ``references``,
        ``occurrenceID``, ``datasetKey``, ``basisOfRecord``, ``countryCode``, ``publisherScientificName``
        (the publisher's scientificName), ``verbatimScientificName``. Stats: ``archive``, ``core``,
        ``extensions``, ``rows`` (multimedia rows read), ``images`` (kept), ``skipped`` (reason -> rows)
        and ``unmatched_images`` (kept images whose core id is not in the core; they are kept).

    Raises:
        ConfigError: see :func:`read_meta`.
    """
    meta = read_meta(uri)
    joined = image_rows(meta).join(_read_files([meta.core]), "left_outer", num_partitions=_partitions(meta),
                                   on=(ID,)).materialize()
    stats = {"archive": uri, "core": meta.core.location, "extensions": [s.location for s in meta.media],
             **count_skips(joined)}
    return joined.map_batches(_drop_skipped, batch_size=None, batch_format="pyarrow"), stats
