"""A directory or object-store prefix of images (ImageFolder layout gives labels)."""

from __future__ import annotations

import pyarrow as pa
import ray

from plantray import storage
from plantray.columns import IMAGE_URI, SOURCE_COLUMN
from plantray.config import ConfigError

_LIST_CHUNK = 1000  # rows per block when a listed tree becomes a dataset


def read_tree(uri: str, labels_from_dirs: bool = False) -> ray.data.Dataset:
    """Every file under a directory/prefix; with ``labels_from_dirs``, ImageFolder-style labels
    (``<root>/<scientificName>/**/<file>``) in ``scientificName``.

    Raises:
        ConfigError: the tree holds no files.
    """
    files = storage.list_files(uri)
    if not files:
        raise ConfigError(f"--input {uri!r} holds no files")
    columns = {IMAGE_URI: files, SOURCE_COLUMN: files}
    if labels_from_dirs:
        root = storage.get_fs(uri)[1].rstrip("/")
        rel = [f.split("://", 1)[-1][len(root) + 1:] for f in files]
        columns["scientificName"] = [r.split("/", 1)[0] if "/" in r else None for r in rel]
    table = pa.table(columns)
    return ray.data.from_arrow(table_chunks(table, _LIST_CHUNK))


def table_chunks(table: pa.Table, rows: int) -> list[pa.Table]:
    """Splits a table into chunks of at most ``rows`` rows (to make several Ray blocks)."""
    return [table.slice(i, rows) for i in range(0, max(table.num_rows, 1), rows)]
