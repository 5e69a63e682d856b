"""The paper's test-set label filter: keep species the model knows with MORE than N training images.

A test set's label counts come from its source (:meth:`plantray.sources.Source.label_counts`, which reads
only the ``scientificName`` column); ``label_filter`` compares them with a model's labels and per-class
training counts, and says how many images and labels each reason drops.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from plantray.columns import SOURCE_COLUMN
from plantray.model.labels import Labels
from plantray.sources import open_source

if TYPE_CHECKING:  # the filter is computed before Ray starts (evaluate refuses bad test sets without it)
    import ray

UNKNOWN, TOO_FEW, NO_LABEL = "unknown species", "too few training images", "no label"


def label_filter(counts: dict, labels: Labels, min_train_images: int) -> tuple[frozenset, dict]:
    """The paper's filter: species the model knows with MORE than ``min_train_images`` training images.

    Args:
        counts: test images per label (None = unlabelled).
        labels: the model's labels, with ``train_images`` when ``min_train_images > 0``.
        min_train_images: the threshold (12 in the paper: 12 is dropped, 13 kept).
    Returns:
        The kept labels and ``{"images": {reason: n}, "labels": {reason: n}}`` with reasons
        ``kept``, ``unknown species``, ``too few training images``, ``no label``.
    """
    train = dict(zip(labels.names, labels.train_images))
    images, names = collections.Counter(), collections.Counter()
    kept = set()
    for label, n in counts.items():
        if label is None:
            reason = NO_LABEL
        elif label not in train:
            reason = UNKNOWN
        elif min_train_images > 0 and (train[label] or 0) <= min_train_images:
            reason = TOO_FEW
        else:
            reason = "kept"
            kept.add(label)
        images[reason] += n
        names[reason] += 0 if label is None else 1
    reasons = ("kept", UNKNOWN, TOO_FEW, NO_LABEL)
    return frozenset(kept), {"images": {r: images[r] for r in reasons},
                             "labels": {r: names[r] for r in reasons[:3]}}


_ROW_SCHEMA = pa.schema([("test_set", pa.string()), ("image_uri", pa.string()), (SOURCE_COLUMN, pa.string()),
                         ("scientificName", pa.string()), ("tag", pa.string()), ("genus", pa.string()),
                         ("family", pa.string())])


def select_rows(table: pa.Table, test_name: str, kept: tuple | None, extra: tuple = ()) -> pa.Table:
    """``map_batches``: the rows whose label passed the filter (every row when ``kept`` is None: an
    out-of-distribution set), in one schema so sets can be unioned (plus the ``extra`` columns, as
    strings: a location prior's region columns)."""
    if kept is not None:
        labels = table.column("scientificName").cast(pa.string())
        table = table.filter(pc.fill_null(pc.is_in(labels, value_set=pa.array(kept, pa.string())), False))
    n = table.num_rows
    schema = pa.schema([*_ROW_SCHEMA, *((c, pa.string()) for c in extra if c not in _ROW_SCHEMA.names)])
    arrays = [pa.array([test_name] * n, pa.string()) if f.name == "test_set"
              else table.column(f.name).cast(pa.string()) if f.name in table.column_names
              else pa.nulls(n, pa.string()) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def kept_rows(tests: list, filters: dict, extra: tuple = ()) -> ray.data.Dataset:
    """One dataset of every test set's kept rows, in one schema (a ``test_set`` column tells them apart).

    Args:
        tests: the test sets (``name``, ``uri``).
        filters: test name -> (kept labels, stats), from :func:`label_filter`.
        extra: further input columns to keep (a location prior's region columns).
    """
    parts = []
    for t in tests:
        kept = tuple(sorted(filters[t.name][0]))
        ds, _ = open_source(t.uri, flag=f"--test {t.name}=").dataset(labels_from_dirs=True)
        parts.append(ds.map_batches(select_rows, fn_args=(t.name, kept, tuple(extra)), batch_format="pyarrow",
                                    batch_size=None, zero_copy_batch=True))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
