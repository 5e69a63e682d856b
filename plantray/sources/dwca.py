"""Darwin Core Archives (GBIF downloads and publishers' archives) as a lazy dataset of still images.

The archive's ``meta.xml`` (dialect, column mapping, which files are core and multimedia) is parsed by
:mod:`plantray.sources.dwcameta`; this module streams the rows it describes, classifies media and joins them.

Pipeline (Ray Data throughout; the driver reads only meta.xml and the archive's listing):

1. one Ray task per text file streams it with ``pyarrow.csv.open_csv`` (a zip member is read in place
   through ``zipfile`` over an fsspec file: ranged reads, no unpacking; a tar.gz member is decompressed
   from the stream), keeping only the needed columns;
2. image rows come from multimedia extensions and from the core's ``dwc:associatedMedia`` (one row per
   URL of the list, see :func:`split_media`); they get ``_skip`` (``sound``, ``video``, ``not an image``,
   ``no url``, ``malformed row``);
3. a hash shuffle on the core id puts each occurrence's images in one block, where identical URLs of one
   occurrence are marked ``duplicate url in occurrence`` (exact: a vectorised group-by per block; a
   multimedia row, which carries licence and creator, wins over the same URL from associatedMedia);
4. image rows are left-outer joined (``Dataset.join``, hash-partitioned) with the core on the core id,
   so no image row is lost, even one without a matching occurrence (its occurrence columns are null);
5. the joined table is materialised in the object store, counted (skips by reason), and returned with
   the skipped rows filtered out lazily.

Memory: the driver holds meta.xml only. Each reader task holds one 16 MiB CSV block; the shuffle and the
join hold one partition per aggregator (archive size / 256 MiB partitions); the materialised image table
(a few hundred bytes per image row) lives in Ray's object store, spilling to disk. Each file is read
once per use, by one task: a deflated zip member or a gzip stream cannot be split. Ray is imported inside
the functions that build Ray work, so checking an archive (:class:`DarwinCoreArchive`) needs no Ray.
"""

from __future__ import annotations

import dataclasses
import json
import mimetypes
import re
from functools import cached_property
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from plantray.columns import IMAGE_URI
from plantray.sources.base import IMAGE_SUFFIXES, Source
from plantray.sources.dwcameta import (
    ASSOCIATED,
    ID,
    MEDIA_TERMS,
    OCCURRENCE_TERMS,
    ArchiveMeta,
    FileSpec,
    local_name,
    open_member,
    read_meta,
)
from plantray.sources.manifest import prepare_rows

if TYPE_CHECKING:
    import ray

SKIP = "_skip"
MATCHED = "_matched"
FROM_CORE = "_from_core"  # True for image rows from the core's associatedMedia
SKIP_REASONS = ("no url", "sound", "video", "not an image", "duplicate url in occurrence", "malformed row")
IMAGE_COLUMNS = (ID, *MEDIA_TERMS)
_BLOCK_BYTES = 16 * 1024**2
_PARTITION_BYTES = 256 * 1024**2
_STILL_TYPES = {"stillimage", "image"}
_HASH_STRATEGIES = {"hash_shuffle", "hash_shuffle_v2", "gpu_shuffle"}
# "|" separates associatedMedia items (GBIF); "," and ";" do too, but only before another URL, so a URL
# with commas of its own (IIIF regions: ".../0,0,512,512/full/0/default.jpg") stays whole.
_MEDIA_SEPARATORS = re.compile(r"\||[,;](?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_MIME = mimetypes.MimeTypes()  # Python's built-in table only: the same answer on every node


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


def _image_table(columns: dict, reasons: list, from_core: bool) -> pa.Table:
    """Image rows in the one schema every image source yields: ``IMAGE_COLUMNS``, ``_skip``, ``_from_core``."""
    n = len(reasons)
    arrays = {c: columns[c] if c in columns else pa.nulls(n, pa.string()) for c in IMAGE_COLUMNS}
    return pa.table({**arrays, SKIP: pa.array(reasons, pa.string()), FROM_CORE: pa.array([from_core] * n, pa.bool_())})


def read_file(spec: FileSpec):
    """Streams one archive text file as pyarrow tables: core rows (with ``_matched``) or image rows (with
    ``_skip``: multimedia rows as they are, the core's associatedMedia one row per URL).

    Args:
        spec: the file, its dialect and mapping (from :func:`read_meta`).

    Returns:
        A generator of ``pa.Table``.
    """
    invalid = [0]
    read, parse, convert = _csv_options(spec, invalid)
    with open_member(spec.archive, spec.member or spec.location) as f:
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
            elif spec.kind == "associated":
                yield associated_rows(table)
            else:  # marks joined rows: an image whose occurrence side is null found no occurrence
                yield table.append_column(MATCHED, pa.array([True] * table.num_rows, pa.bool_()))
    if spec.kind != "core" and invalid[0]:
        yield _image_table({}, ["malformed row"] * invalid[0], spec.kind == "associated")


def _media_kind(kind: str | None, fmt: str | None, url: str | None) -> str:
    """image, sound, video or other: the DCMI type decides when given, else the MIME format, else the URL."""
    if kind:
        kind = local_name(kind).lower()
        return {"sound": "sound", "movingimage": "video"}.get(kind, "image" if kind in _STILL_TYPES else "other")
    if fmt:
        return {"audio": "sound", "video": "video", "image": "image"}.get(fmt.lower().split("/", 1)[0], "other")
    return "image" if (url or "").split("?", 1)[0].lower().endswith(IMAGE_SUFFIXES) else "other"


def skip_reason(kind: str | None, fmt: str | None, url: str | None) -> str | None:
    """Why a multimedia row is not kept (None when it is a still image with a URL)."""
    media = _media_kind(kind, fmt, url)
    if media != "image":
        return {"sound": "sound", "video": "video"}.get(media, "not an image")
    if not url or "://" not in url or any(c.isspace() for c in url):
        return "no url"  # GBIF empties identifier when the publisher gave an HTML page
    return None


def classify_media(table: pa.Table) -> pa.Table:
    """Multimedia rows in the image-row schema, with ``_skip`` from :func:`skip_reason`."""
    reasons = [skip_reason(k, f, u) for k, f, u in zip(table["type"].to_pylist(), table["format"].to_pylist(),
                                                        table[IMAGE_URI].to_pylist())]
    return _image_table({c: table[c] for c in IMAGE_COLUMNS}, reasons, False)


def split_media(value: str | None) -> list[str]:
    """The URLs of a ``dwc:associatedMedia`` value: split on ``|`` (GBIF's separator) and on ``,``/``;``
    before another URL, each trimmed, empty items dropped.

    ``"http://x/a.jpg | http://x/b.jpg"`` and ``"http://x/a.jpg, http://x/b.jpg"`` give two URLs;
    ``"http://x/iiif/0,0,512,512/full/0/default.jpg"`` gives one.
    """
    parts = (p.strip().strip(",;").strip() for p in _MEDIA_SEPARATORS.split(value or ""))
    return [p for p in parts if p]


def associated_skip_reason(url: str) -> str | None:
    """Why an associatedMedia URL is not kept. Nothing declares its type, so its suffix decides: a sound,
    video or other known non-image suffix is skipped; a URL without one (``.../photos/123/original``,
    common for image services) is kept, and the decoder decides."""
    fmt, _ = _MIME.guess_type(url.split("#", 1)[0].split("?", 1)[0])
    return skip_reason(None, fmt or "image/*", url)


def associated_rows(table: pa.Table) -> pa.Table:
    """Core rows (core id, associatedMedia) -> one image row per URL, with ``_skip``."""
    ids, urls = [], []
    for cid, value in zip(table[ID].to_pylist(), table[ASSOCIATED].to_pylist()):
        for url in split_media(value):
            ids.append(cid)
            urls.append(url)
    columns = {ID: pa.array(ids, pa.string()), IMAGE_URI: pa.array(urls, pa.string())}
    return _image_table(columns, [associated_skip_reason(u) for u in urls], True)


def mark_duplicates(table: pa.Table) -> pa.Table:
    """Marks repeated (core id, URL) pairs among kept rows ``duplicate url in occurrence``, keeping one:
    the first multimedia row, else the first associatedMedia row.

    Exact when ``table`` holds every row of each occurrence in it (after the shuffle on the core id).
    """
    if table.num_rows == 0:
        return table
    index = pa.array(range(table.num_rows), pa.int64())
    rank = index
    if FROM_CORE in table.column_names:  # associatedMedia rows rank after every multimedia row
        rank = pc.add(index, pc.multiply(pc.cast(table[FROM_CORE], pa.int64()), table.num_rows))
    kept = pc.is_null(table[SKIP])
    pairs = pa.table({"k": table[ID], "u": table[IMAGE_URI], "r": rank}).filter(kept)
    first = pairs.group_by(["k", "u"], use_threads=False).aggregate([("r", "min")])["r_min"]
    duplicate = pc.and_(kept, pc.invert(pc.is_in(rank, value_set=first.combine_chunks())))
    reason = pc.if_else(duplicate, pa.scalar("duplicate url in occurrence"), table[SKIP])
    return table.set_column(table.schema.get_field_index(SKIP), SKIP, reason)


def _read_specs(batch: pa.Table):
    for text in batch["spec"].to_pylist():
        yield from read_file(FileSpec(**json.loads(text)))


def _read_files(specs: list[FileSpec]) -> ray.data.Dataset:
    import ray

    items = [{"spec": json.dumps(dataclasses.asdict(s))} for s in specs]
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read_specs, batch_size=1, batch_format="pyarrow")


def _partitions(meta: ArchiveMeta) -> int:
    return max(2, min(512, meta.size_bytes // _PARTITION_BYTES + 1))


def image_rows(meta: ArchiveMeta) -> ray.data.Dataset:
    """Every image row (multimedia extensions and the core's associatedMedia) with ``_skip`` (null for kept
    still images), duplicates marked per occurrence."""
    import ray

    ds = _read_files([*meta.media, *meta.associated])
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
    """Counts image rows by outcome on the cluster.

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
    return table.filter(pc.is_null(table[SKIP])).drop_columns([SKIP, MATCHED, FROM_CORE])


def read_dwca(uri: str, meta: ArchiveMeta | None = None) -> tuple[ray.data.Dataset, dict]:
    """A Darwin Core Archive as a dataset with one row per still image that has a URL.

    The joined image table is materialised in Ray's object store (spilling to disk; a few hundred bytes
    per image, never on the driver) before this returns: a hash shuffle's tasks each need a whole CPU,
    which a model actor pool started in the same streaming pipeline may hold, so joining lazily inside
    ``classify`` could deadlock small machines. The counts then come from that table at no extra read.

    Args:
        uri: ``.zip``, ``.tar.gz``/``.tgz`` or directory with ``meta.xml``; local, ``s3://`` or any fsspec URI.
        meta: its parsed meta.xml, when already read (else read here).

    Returns:
        (dataset, stats). Columns: :data:`ARCHIVE_COLUMNS`: ``gbifID`` (the core id as a string, whatever its
        term), ``image_uri`` (the URL), ``format``, ``type``, ``license``, ``rightsHolder``, ``creator``,
        ``references``, ``occurrenceID``, ``datasetKey``, ``basisOfRecord``, ``countryCode``,
        ``publisherScientificName`` (the publisher's scientificName), ``verbatimScientificName``. Stats:
        ``archive``, ``core``, ``extensions``, ``associated_media`` (whether the core's associatedMedia was
        read), ``rows`` (image rows read), ``images`` (kept), ``skipped`` (reason -> rows) and
        ``unmatched_images`` (kept images whose core id is not in the core; they are kept).

    Raises:
        ConfigError: see :func:`read_meta`.
    """
    meta = meta or read_meta(uri)
    joined = image_rows(meta).join(_read_files([meta.core]), "left_outer", num_partitions=_partitions(meta),
                                   on=(ID,)).materialize()
    stats = {"archive": uri, "core": meta.core.location, "extensions": [s.location for s in meta.media],
             "associated_media": bool(meta.associated), **count_skips(joined)}
    return joined.map_batches(_drop_skipped, batch_size=None, batch_format="pyarrow"), stats


ARCHIVE_COLUMNS = (*IMAGE_COLUMNS, *OCCURRENCE_TERMS)


class DarwinCoreArchive(Source):
    """A Darwin Core Archive (``.zip``, ``.tar.gz``/``.tgz`` or a directory with ``meta.xml``): one row per
    still image, with its occurrence's columns. It has no ``scientificName`` (the publisher's is
    ``publisherScientificName``), so it is not a labelled input."""

    kind = "dwca"

    @cached_property
    def meta(self) -> ArchiveMeta:
        """The archive's parsed and checked meta.xml (read once, on the driver)."""
        return read_meta(self.uri, where=self.name)

    def columns(self, labels_from_dirs: bool = False) -> list[str]:
        """The columns every archive gives (null where meta.xml maps no term)."""
        return list(ARCHIVE_COLUMNS)

    def check(self) -> None:
        """meta.xml parses, the core is an Occurrence core, an image source exists, every named file exists."""
        self.meta  # noqa: B018 -- reading it is the check

    def _read(self, reserved: frozenset, labels_from_dirs: bool) -> tuple[ray.data.Dataset, dict]:
        ds, stats = read_dwca(self.uri, self.meta)
        ds = ds.map_batches(prepare_rows, fn_args=("", reserved), batch_format="pyarrow", batch_size=None,
                            zero_copy_batch=True)
        return ds, stats
