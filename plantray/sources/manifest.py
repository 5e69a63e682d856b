"""A manifest: a Parquet or CSV file with one row per image and an ``image_uri`` column.

Nothing is collected on the driver: the driver reads the footer (Parquet) or the header line (CSV), and
Ray's Parquet/CSV readers read the rows. Relative ``image_uri`` values resolve against the manifest's own
directory, so a dataset can move to a bucket as a unit.
"""

from __future__ import annotations

import collections
import io
from functools import cached_property
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from plantray import storage
from plantray.columns import IMAGE_URI, SOURCE_COLUMN
from plantray.config import ConfigError
from plantray.sources.base import LABEL, Source

if TYPE_CHECKING:  # pyarrow.dataset loads pandas (a second): only counting labels needs it, never a refusal
    import pyarrow.dataset as pads
    import ray

MANIFEST_FORMATS = {".parquet": "parquet", ".csv": "csv"}
_HEADER_BYTES = 64 * 1024


def manifest_format(uri: str) -> str | None:
    """``"parquet"`` or ``"csv"`` from the URI's suffix (any case); None when it is not a manifest."""
    lower = uri.lower()
    return next((fmt for suffix, fmt in MANIFEST_FORMATS.items() if lower.endswith(suffix)), None)


def prepare_rows(table: pa.Table, base: str, reserved: frozenset) -> pa.Table:
    """``map_batches``: renames input columns that output columns would shadow (``input_<name>``) and adds
    ``_source``, each ``image_uri`` resolved against ``base`` (``""``: kept as given)."""
    renames = {c: f"input_{c}" for c in table.column_names if c in reserved}
    if renames:
        table = table.rename_columns([renames.get(c, c) for c in table.column_names])
    uris = table.column(IMAGE_URI).cast(pa.string()).to_pylist()
    source = pa.array([storage.resolve(u, base) if u else None for u in uris], pa.string())
    return table.append_column(SOURCE_COLUMN, source)


class Manifest(Source):
    """A ``.parquet`` or ``.csv`` manifest (local or object storage) with an ``image_uri`` column."""

    kind = "manifest"

    def __init__(self, uri: str, flag: str = "--input"):
        super().__init__(uri, flag)
        self.format = manifest_format(uri)
        if self.format is None:
            raise ConfigError(f"{self.name}: a manifest ends in {' or '.join(MANIFEST_FORMATS)}")

    @cached_property
    def _columns(self) -> list[str]:
        fs, path = storage.get_fs(self.uri)
        try:
            with fs.open(path, "rb") as f:
                if self.format == "parquet":
                    return pq.read_schema(f).names
                first = f.read(_HEADER_BYTES).split(b"\n", 1)[0] + b"\n"
            return pacsv.read_csv(io.BytesIO(first)).column_names
        except (pa.ArrowInvalid, OSError, ValueError) as e:
            raise ConfigError(f"{self.name}: manifest cannot be read ({e}); give a Parquet or CSV file") from None

    def columns(self, labels_from_dirs: bool = False) -> list[str]:
        """Column names from the Parquet footer or the CSV header line only."""
        return list(self._columns)

    def check(self) -> None:
        """The manifest is readable, has ``image_uri`` and at least one row."""
        if IMAGE_URI not in self._columns:
            raise ConfigError(f"{self.name}: manifest has no {IMAGE_URI!r} column (columns: {self._columns[:10]}); "
                              f"name the column holding image paths/URLs {IMAGE_URI}")
        if not self._has_rows:
            raise ConfigError(f"{self.name}: manifest has a header and no rows, so there is nothing to do; give a "
                              f"manifest with one row per image")

    @cached_property
    def _has_rows(self) -> bool:
        """Whether a row follows the header: the Parquet footer's count, or a non-blank CSV line after the header."""
        fs, path = storage.get_fs(self.uri)
        with fs.open(path, "rb") as f:
            if self.format == "parquet":
                return pq.read_metadata(f).num_rows > 0
            head = f.read(_HEADER_BYTES)
        rest = head.partition(b"\n")[2]
        # A header (or blank lines) longer than what was read cannot tell: the readers will.
        return bool(rest.strip()) or len(head) == _HEADER_BYTES

    def _arrow_format(self) -> pads.FileFormat:
        import pyarrow.dataset as pads

        if self.format == "parquet":
            return pads.ParquetFileFormat()
        # Identifiers (gbifID, catalogue numbers) must stay strings: never let CSV inference touch them.
        return pads.CsvFileFormat(convert_options=self._csv_convert())

    def _csv_convert(self) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(column_types={c: pa.string() for c in self._columns})

    def _count_labels(self) -> dict:
        import pyarrow.dataset as pads

        fs, path = storage.arrow_fs(self.uri)
        counts: collections.Counter = collections.Counter()
        try:
            batches = pads.dataset(path, filesystem=fs, format=self._arrow_format()).to_batches(columns=[LABEL])
            for batch in batches:
                for c in pc.value_counts(batch.column(0).cast(pa.string())).to_pylist():
                    counts[c["values"] or None] += c["counts"]
        except (pa.ArrowInvalid, OSError) as e:
            raise ConfigError(f"{self.name}: no readable {LABEL} column ({e}); a test manifest needs "
                              f"{IMAGE_URI} and {LABEL}") from None
        return dict(counts)

    def _read(self, reserved: frozenset, labels_from_dirs: bool) -> tuple[ray.data.Dataset, dict]:
        import ray

        fs, path = storage.arrow_fs(self.uri)
        if self.format == "parquet":
            ds = ray.data.read_parquet(path, filesystem=fs)
        else:
            ds = ray.data.read_csv(path, filesystem=fs, convert_options=self._csv_convert())
        ds = ds.map_batches(prepare_rows, fn_args=(storage.dirname(self.uri), reserved),
                            batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
        return ds, {}
