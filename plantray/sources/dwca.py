"""Darwin Core Archives (GBIF downloads and publishers' archives) as a lazy dataset of still images.

The archive's ``meta.xml`` (dialect, column mapping, which files are core and multimedia) is parsed by
:mod:`plantray.dwcameta`; this module streams the rows it describes, classifies media and joins them.

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

import dataclasses
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import ray

from plantray.sources import IMAGE_SUFFIXES
from plantray.sources.dwcameta import ID, MEDIA_TERMS, ArchiveMeta, FileSpec, local_name, open_member, read_meta

SKIP = "_skip"
MATCHED = "_matched"
SKIP_REASONS = ("no url", "sound", "video", "not an image", "duplicate url in occurrence", "malformed row")
IMAGE_COLUMNS = (ID, *MEDIA_TERMS)
_BLOCK_BYTES = 16 * 1024**2
_PARTITION_BYTES = 256 * 1024**2
_STILL_TYPES = {"stillimage", "image"}
_HASH_STRATEGIES = {"hash_shuffle", "hash_shuffle_v2", "gpu_shuffle"}


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
