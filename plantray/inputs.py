"""Inputs as lazy Ray Datasets: manifests, image trees and Darwin Core Archives.

Every dataset returned here has ``image_uri`` (as given by the user), ``_source`` (the resolved URI
to read) and every other input column unchanged. Nothing is collected on the driver; a manifest is
read by Ray's Parquet/CSV readers and never listed.
"""

from __future__ import annotations

import io as _io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray

from plantray import io as pio
from plantray.config import ConfigError

IMAGE_URI = "image_uri"
_LIST_CHUNK = 1000  # rows per block when a listed tree becomes a dataset
# Rows per block handed to the CPU stages. A manifest file is one block when read; split it so decoding
# runs as many parallel tasks instead of one long one (a few JPEG decodes per row is ~10 ms of work).
BLOCK_ROWS = 64


def _manifest_columns(uri: str) -> list[str]:
    """Column names of a manifest, read from its footer/header only."""
    fs, path = pio.get_fs(uri)
    try:
        if uri.lower().endswith(".parquet"):
            with fs.open(path, "rb") as f:
                return pq.read_schema(f).names
        with fs.open(path, "rb") as f:
            head = f.read(64 * 1024)
        first = head.split(b"\n", 1)[0] + b"\n"
        return pacsv.read_csv(_io.BytesIO(first)).column_names
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise ConfigError(f"manifest {uri!r} cannot be read ({e}); give a Parquet or CSV file") from None


def prepare_rows(table: pa.Table, base: str, reserved: frozenset) -> pa.Table:
    """Renames input columns that output columns would shadow and adds the resolved ``_source``."""
    renames = {c: f"input_{c}" for c in table.column_names if c in reserved}
    if renames:
        table = table.rename_columns([renames.get(c, c) for c in table.column_names])
    uris = table.column(IMAGE_URI).cast(pa.string()).to_pylist()
    source = pa.array([pio.resolve(u, base) if u else None for u in uris], pa.string())
    return table.append_column(pio.SOURCE_COLUMN, source)


def read_manifest(uri: str, reserved: set[str] = frozenset()) -> ray.data.Dataset:
    """A manifest (.parquet or .csv with ``image_uri``) as a lazy dataset; relative URIs resolve
    against the manifest's own directory.

    Raises:
        ConfigError: no ``image_uri`` column or unreadable manifest.
    """
    columns = _manifest_columns(uri)
    if IMAGE_URI not in columns:
        raise ConfigError(f"manifest {uri!r} has no {IMAGE_URI!r} column (columns: {columns[:10]}); "
                          "name the column holding image paths/URLs image_uri")
    fs, path = pio.arrow_fs(uri)
    if uri.lower().endswith(".parquet"):
        ds = ray.data.read_parquet(path, filesystem=fs)
    else:
        # Identifiers (gbifID, catalogue numbers) must stay strings: never let CSV inference touch them.
        opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns})
        ds = ray.data.read_csv(path, filesystem=fs, convert_options=opts)
    return ds.map_batches(prepare_rows, fn_args=(pio.dirname(uri), frozenset(reserved)),
                          batch_format="pyarrow", batch_size=None, zero_copy_batch=True)


def read_tree(uri: str, labels_from_dirs: bool = False) -> ray.data.Dataset:
    """Every file under a directory/prefix; with ``labels_from_dirs``, ImageFolder-style labels
    (``<root>/<scientificName>/**/<file>``) in ``scientificName``.

    Raises:
        ConfigError: the tree holds no files.
    """
    files = pio.list_files(uri)
    if not files:
        raise ConfigError(f"--input {uri!r} holds no files")
    columns = {IMAGE_URI: files, pio.SOURCE_COLUMN: files}
    if labels_from_dirs:
        root = pio.get_fs(uri)[1].rstrip("/")
        rel = [f.split("://", 1)[-1][len(root) + 1:] for f in files]
        columns["scientificName"] = [r.split("/", 1)[0] if "/" in r else None for r in rel]
    table = pa.table(columns)
    return ray.data.from_arrow(pio.table_chunks(table, _LIST_CHUNK))


def read_input(kind: pio.InputKind, reserved: set[str] = frozenset(), labels_from_dirs: bool = False,
               block_rows: int = BLOCK_ROWS) -> tuple[ray.data.Dataset, dict]:
    """Dispatches on the input kind; returns the dataset (in blocks of at most ``block_rows`` rows)
    and input statistics (e.g. rows skipped from an archive)."""
    stats: dict = {}
    if kind.kind == "manifest":
        ds = read_manifest(kind.uri, reserved)
    elif kind.kind == "images":
        ds = read_tree(kind.uri, labels_from_dirs)
    else:
        from plantray.dwca import read_dwca

        ds, stats = read_dwca(kind.uri)
        ds = ds.map_batches(prepare_rows, fn_args=("", frozenset(reserved)), batch_format="pyarrow",
                            batch_size=None, zero_copy_batch=True)
    return ds.repartition(target_num_rows_per_block=block_rows), stats


def open_dataset(uri: str, labels_from_dirs: bool = False, reserved: set[str] = frozenset()):
    """Detects and reads a DATA/INPUT URI (train, evaluate and classify share this)."""
    return read_input(pio.detect_input(uri), reserved, labels_from_dirs)
