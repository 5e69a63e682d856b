"""Scoring of written predictions: per-image Parquet rows -> the metrics of each test set.

``plantray evaluate`` writes one Parquet dataset per model; the metrics are computed only from those
rows, so a report can always be recomputed from the predictions alone.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantray import storage
from plantray.columns import ERROR, SCIENTIFIC_NAME, TAG, TOPK_CONFIDENCE, TOPK_NAMES
from plantray.evaluation import breakdown, metrics
from plantray.model.artifact import Artifact
from plantray.model.labels import Labels

_SCORE_COLUMNS = ["test_set", SCIENTIFIC_NAME, TAG, TOPK_NAMES, TOPK_CONFIDENCE, "predicted_genus", "true_genus",
                  "predicted_family", "true_family", ERROR]


@dataclass
class TestSet:
    """One ``--test NAME=DATA`` with its images per label (read before any work)."""

    name: str
    uri: str
    counts: dict


@dataclass
class ModelRun:
    """One model to evaluate: its report label, URI, artifact and per-test label filters."""

    label: str
    uri: str
    artifact: Artifact
    filters: dict  # test name -> (kept labels, stats)


def read_predictions(uri: str) -> pa.Table | None:
    """The columns metrics need from one model's per-image Parquet (None when no row was written)."""
    fs, path = storage.arrow_fs(uri)
    if not storage.exists(uri):
        return None
    return pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=_SCORE_COLUMNS)


def score_test(table: pa.Table | None, name: str, labels: Labels, ks: list[int], bootstrap: int,
               seed: int) -> tuple[dict, dict]:
    """Metrics of one test set from per-image rows; returns (metrics, unreadable images by reason)."""
    if table is not None:
        table = table.filter(pc.equal(table.column("test_set"), name))
    if table is None or table.num_rows == 0:
        return metrics.score([], [], ks, bootstrap=bootstrap, seed=seed), {}
    unreadable = collections.Counter(e for e in table.column(ERROR).to_pylist() if e)
    ok = table.filter(pc.is_null(table.column(ERROR)))
    ranked = _ranked(ok)
    col = ok.column
    result = metrics.score(
        ranked, col(SCIENTIFIC_NAME).to_pylist(), ks, tags=col(TAG).to_pylist(),
        predicted_genus=col("predicted_genus").to_pylist() if labels.has_genus else None,
        true_genus=col("true_genus").to_pylist(),
        predicted_family=col("predicted_family").to_pylist() if labels.has_family else None,
        true_family=col("true_family").to_pylist(), bootstrap=bootstrap, seed=seed)
    return result, dict(unreadable.most_common())


def _ranked(ok: pa.Table) -> np.ndarray:
    rows = ok.column(TOPK_NAMES).to_pylist()
    return np.array(rows, dtype=object).reshape(len(rows), -1) if rows else np.empty((0, 1), object)


def breakdown_test(table: pa.Table | None, name: str, ks: list[int]) -> dict:
    """Where one test set goes wrong, from its per-image rows (:mod:`plantray.evaluation.breakdown`).

    Args:
        table: one model's rows (:func:`read_predictions`), or None.
        name: the test set.
        ks: the Top-k reported (1 among them).
    Returns:
        ``{"species": per species, "confused": the most-confused pairs, "coverage": at the table's
        thresholds, "coverage_curve": at the plot's}``, over the images scored (readable ones).
    """
    if table is not None:
        table = table.filter(pc.and_(pc.equal(table.column("test_set"), name), pc.is_null(table.column(ERROR))))
    if table is None or table.num_rows == 0:
        return {"species": [], "confused": [], "coverage": breakdown.coverage([], []),
                "coverage_curve": breakdown.coverage([], [], breakdown.CURVE_THRESHOLDS)}
    ranked, true = _ranked(table), table.column(SCIENTIFIC_NAME).to_pylist()
    hit = metrics.hits(ranked, true)
    correct = {k: metrics.correct_at(hit, k) for k in ks}
    predicted = list(ranked[:, 0])
    confidence = pc.list_element(table.column(TOPK_CONFIDENCE), 0).to_numpy(zero_copy_only=False)
    return {"species": breakdown.per_species(true, correct, predicted),
            "confused": breakdown.confused_pairs(true, predicted),
            "coverage": breakdown.coverage(confidence, correct[1]),
            "coverage_curve": breakdown.coverage(confidence, correct[1], breakdown.CURVE_THRESHOLDS)}


def score_run(uri: str, run: ModelRun, tests: list[TestSet], ks: list[int], bootstrap: int, seed: int) -> list[dict]:
    """One report entry per test set for a model: image/label counts per reason, the metrics and where it
    goes wrong (:func:`breakdown_test`)."""
    table = read_predictions(uri)
    entries = []
    for t in tests:
        scores, unreadable = score_test(table, t.name, run.artifact.labels, ks, bootstrap, seed)
        stats = run.filters[t.name][1]
        images = {"test": sum(t.counts.values()), **stats["images"], "unreadable": sum(unreadable.values()),
                  "scored": scores["images"]}
        labels = {"test": len([k for k in t.counts if k is not None]), **stats["labels"], "scored": scores["labels"]}
        entries.append({"model": run.label, "test_set": t.name, "images": images, "labels": labels,
                        "unreadable_by_reason": unreadable, "metrics": scores, **breakdown_test(table, t.name, ks)})
    return entries
