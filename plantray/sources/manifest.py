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

from plantray import storage
from plantray.columns import IMAGE_URI, SOURCE_COLUMN
from plantray.config import ConfigError


def _manifest_columns(uri: str) -> list[str]:
    """Column names of a manifest, read from its footer/header only."""
    fs, path = storage.get_fs(uri)
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
    source = pa.array([storage.resolve(u, base) if u else None for u in uris], pa.string())
    return table.append_column(SOURCE_COLUMN, source)


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
    fs, path = storage.arrow_fs(uri)
    if uri.lower().endswith(".parquet"):
        ds = ray.data.read_parquet(path, filesystem=fs)
    else:
        # Identifiers (gbifID, catalogue numbers) must stay strings: never let CSV inference touch them.
        opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns})
        ds = ray.data.read_csv(path, filesystem=fs, convert_options=opts)
    return ds.map_batches(prepare_rows, fn_args=(storage.dirname(uri), frozenset(reserved)),
                          batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
