"""Known versus unknown: how well a confidence score separates in-distribution images from the rest.

``plantray evaluate --ood NAME=DATA`` runs the model on each out-of-distribution set (images of no plant,
species the model never learned) in the same pipeline as the test sets, and scores every image by the
**maximum softmax probability** (MSP, Hendrycks & Gimpel 2017): the top-1 of the crop-averaged softmax,
calibrated when the model card has a temperature -- the same number classify writes as ``confidence`` for
a species and compares with ``--min-confidence``. The in-distribution test images (every ``--test`` set's
scored images, pooled) are the positives ("known"), the OOD set's images the negatives ("unknown"):

- **AUROC**: the probability that a random known image scores higher than a random unknown one (ties
  count one half); 0.5 is chance, 1.0 perfect separation.
- **FPR@95% TPR**: the fraction of unknown images that still pass the threshold keeping 95% of the known
  ones (lower is better); the threshold is reported as ``threshold_at_95_tpr``.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads
import ray

from plantray import storage
from plantray.columns import ERROR, TOPK_CONFIDENCE
from plantray.evaluation.breakdown import CURVE_THRESHOLDS, named_share
from plantray.evaluation.labelfilter import select_rows
from plantray.sources import open_source

SCORE = "max_softmax_probability"
TPR_TARGET = 0.95
# The rows of an OOD set in the label filter's schema (plantray.evaluation.labelfilter), so they share
# one pipeline and one predictions dataset with the test sets (a ``test_set`` column tells them apart).
def auroc(known: np.ndarray, unknown: np.ndarray) -> float | None:
    """Area under the ROC curve of ``known`` (positives) against ``unknown`` (negatives), higher = known.

    Computed from ranks (Mann-Whitney U with mid-ranks for ties), O(n log n).

    Args:
        known: scores of in-distribution images.
        unknown: scores of out-of-distribution images.
    Returns:
        P(known > unknown) + P(tie) / 2, or None when either side is empty.
    """
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if known.size == 0 or unknown.size == 0:
        return None
    scores = np.concatenate([known, unknown])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    # Mid-ranks: every tied score gets the mean rank of its run.
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_sum = np.bincount(inverse, weights=ranks)
    ranks = (rank_sum / counts)[inverse]
    u = ranks[: known.size].sum() - known.size * (known.size + 1) / 2
    return float(u / (known.size * unknown.size))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = TPR_TARGET) -> tuple[float | None, float | None]:
    """False-positive rate at the threshold that accepts at least ``tpr`` of the known images.

    An image is accepted as known when its score >= the threshold. The threshold is the highest one that
    keeps ``ceil(tpr * n_known)`` known images, which gives the lowest FPR among thresholds meeting ``tpr``.

    Args:
        known: scores of in-distribution images.
        unknown: scores of out-of-distribution images.
        tpr: the true-positive rate to reach, in (0, 1].
    Returns:
        (FPR, threshold), or (None, None) when either side is empty.
    """
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if known.size == 0 or unknown.size == 0:
        return None, None
    keep = max(1, math.ceil(tpr * known.size - 1e-9))  # -1e-9: 0.95 * 20 is 19.000000000000004 in floats
    threshold = float(np.sort(known)[::-1][keep - 1])
    return float(np.mean(unknown >= threshold)), threshold


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def separation(known: np.ndarray, unknown: np.ndarray) -> dict:
    """AUROC, FPR@95% TPR and its threshold, and the mean score of each side.

    Args:
        known: scores of in-distribution images.
        unknown: scores of out-of-distribution images.
    Returns:
        ``{"score", "known_images", "unknown_images", "auroc", "fpr_at_95_tpr", "threshold_at_95_tpr",
        "known_mean_score", "unknown_mean_score"}``.
    """
    fpr, threshold = fpr_at_tpr(known, unknown)
    return {"score": SCORE, "known_images": len(known), "unknown_images": len(unknown), "auroc": auroc(known, unknown),
            "fpr_at_95_tpr": fpr, "threshold_at_95_tpr": threshold, "known_mean_score": _mean(known),
            "unknown_mean_score": _mean(unknown)}


def ood_rows(sets: list[tuple[str, str]], extra: tuple = ()) -> ray.data.Dataset:
    """One dataset of every OOD set's rows in the test rows' schema (their labels, if any, are ignored).

    Args:
        sets: (name, uri) pairs from ``--ood NAME=DATA``.
        extra: further input columns to keep, as for the test sets (a location prior's region columns).
    """
    parts = []
    for name, uri in sets:
        ds, _ = open_source(uri, flag=f"--ood {name}=").dataset()
        parts.append(ds.map_batches(select_rows, fn_args=(name, None, tuple(extra)), batch_format="pyarrow",
                                    batch_size=None, zero_copy_batch=True))
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def read_scores(uri: str) -> dict[str, np.ndarray]:
    """Each set's scores (top-1 of ``topk_confidence``) from one model's predictions, unreadable rows left out.

    Args:
        uri: the per-image Parquet dataset evaluate wrote for the model.
    Returns:
        set name -> float64 scores.
    """
    if not storage.exists(uri):
        return {}
    fs, path = storage.arrow_fs(uri)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["test_set", TOPK_CONFIDENCE, ERROR])
    table = table.filter(pc.is_null(table.column(ERROR)))
    top1 = pc.list_element(table.column(TOPK_CONFIDENCE), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    names = np.asarray(table.column("test_set").to_pylist(), dtype=object)
    return {str(n): top1[names == n] for n in np.unique(names)} if len(names) else {}


def score_ood(uri: str, model_label: str, test_names: list[str], ood_sets: list[tuple[str, str]]) -> list[dict]:
    """One entry per OOD set for a model: the separation of the pooled test sets' scores from the set's.

    Args:
        uri: the model's per-image predictions (test and OOD rows).
        model_label: the model's name in the report.
        test_names: the in-distribution ``--test`` set names.
        ood_sets: (name, uri) of each ``--ood`` set.
    Returns:
        ``{"model", "ood_set", "uri", **separation(...), "named", "named_curve"}`` per OOD set, where
        ``named``/``named_curve`` are the shares of the set's images still named at species rank as
        ``--min-confidence`` varies (:func:`plantray.evaluation.breakdown.named_share`).
    """
    scores = read_scores(uri)
    known = np.concatenate([scores.get(t, np.zeros(0)) for t in test_names]) if test_names else np.zeros(0)
    out = []
    for name, set_uri in ood_sets:
        unknown = scores.get(name, np.zeros(0))
        out.append({"model": model_label, "ood_set": name, "uri": set_uri, **separation(known, unknown),
                    "named": named_share(unknown), "named_curve": named_share(unknown, CURVE_THRESHOLDS)})
    return out
