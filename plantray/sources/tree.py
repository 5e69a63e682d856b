"""A directory or object-store prefix of images; the ImageFolder layout ``<root>/<scientificName>/**/<file>``
gives labels.

The tree is listed once, on the driver (hidden and ``_``-prefixed names are skipped); a manifest is the
input for collections too large to list.
"""

from __future__ import annotations

import collections
from functools import cached_property
from typing import TYPE_CHECKING

import pyarrow as pa

from plantray import storage
from plantray.columns import IMAGE_URI, SOURCE_COLUMN
from plantray.config import ConfigError
from plantray.sources.base import LABEL, Source

if TYPE_CHECKING:
    import ray

_LIST_CHUNK = 1000  # rows per block when a listed tree becomes a dataset


def dir_labels(files: list[str], root: str) -> list[str | None]:
    """ImageFolder labels: each file's first directory below ``root`` (None for a file directly in it).

    Args:
        files: listed file URIs (``s3://bucket/root/Rosa canina/a.jpg``) or local paths.
        root: the tree's path without scheme (as ``storage.get_fs`` returns it).
    """
    root = root.rstrip("/")
    rel = [f.split("://", 1)[-1][len(root) + 1:] for f in files]
    return [r.split("/", 1)[0] if "/" in r else None for r in rel]


def table_chunks(table: pa.Table, rows: int) -> list[pa.Table]:
    """Splits a table into chunks of at most ``rows`` rows (to make several Ray blocks)."""
    return [table.slice(i, rows) for i in range(0, max(table.num_rows, 1), rows)]


class ImageTree(Source):
    """Every file under a directory/prefix, one row each."""

    kind = "images"

    @cached_property
    def files(self) -> list[str]:
        """Every file of the tree, sorted (listed once, then cached)."""
        return storage.list_files(self.uri)

    def labels(self) -> list[str | None]:
        """Each file's ImageFolder label, in the order of :attr:`files`."""
        return dir_labels(self.files, storage.get_fs(self.uri)[1])

    def columns(self, labels_from_dirs: bool = False) -> list[str]:
        """``image_uri``, and ``scientificName`` when labels come from directories."""
        return [IMAGE_URI, LABEL] if labels_from_dirs else [IMAGE_URI]

    def check(self) -> None:
        """The tree holds at least one file."""
        if not self.files:
            raise ConfigError(f"{self.name} holds no files")

    def _count_labels(self) -> dict:
        return dict(collections.Counter(self.labels()))

    def _read(self, reserved: frozenset, labels_from_dirs: bool) -> tuple[ray.data.Dataset, dict]:
        import ray

        columns = {IMAGE_URI: self.files, SOURCE_COLUMN: self.files}
        if labels_from_dirs:
            columns[LABEL] = self.labels()
        return ray.data.from_arrow(table_chunks(pa.table(columns), _LIST_CHUNK)), {}
