"""Accuracy with and without a location prior, side by side, from evaluate's per-image Parquet.

With ``--prior``, the crop predictor writes both rankings for every image: ``correct@k`` (without the
prior) and ``prior_correct@k`` (with it; rows without a location or in a region the checklist does not
cover are ranked without it), and the ``prior`` column saying which applied.
"""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantray import storage
from plantray.columns import ERROR, PRIOR


def _accuracy(values: list) -> float | None:
    return sum(bool(v) for v in values) / len(values) if values else None


def score_prior_test(table: pa.Table, name: str, ks: list[int]) -> dict:
    """Top-k with and without the prior for one test set's scored rows, and the prior's counts.

    Args:
        table: per-image rows with ``test_set``, ``error``, ``prior``, ``correct@k``, ``prior_correct@k``.
        name: the test set.
        ks: the Top-k reported.
    Returns:
        ``{"images", "counts": {outcome: n}, "without": {"topK": acc}, "with": {"topK": acc}}``.
    """
    rows = table.filter(pc.and_(pc.equal(table.column("test_set"), name), pc.is_null(table.column(ERROR))))
    counts = collections.Counter(rows.column(PRIOR).to_pylist())
    return {"images": rows.num_rows, "counts": dict(sorted(counts.items())),
            "without": {f"top{k}": _accuracy(rows.column(f"correct@{k}").to_pylist()) for k in ks},
            "with": {f"top{k}": _accuracy(rows.column(f"prior_correct@{k}").to_pylist()) for k in ks}}


def score_prior(uri: str, model: str, tests: list, ks: list[int]) -> list[dict]:
    """One entry per test set of a model's predictions at ``uri`` (see :func:`score_prior_test`)."""
    names = ["test_set", ERROR, PRIOR, *(f"{p}correct@{k}" for p in ("", "prior_") for k in ks)]
    if not storage.exists(uri):
        return []
    fs, path = storage.arrow_fs(uri)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=names)
    return [{"model": model, "test_set": t.name, **score_prior_test(table, t.name, ks)} for t in tests]
