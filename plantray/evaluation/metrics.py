"""Classification metrics of the paper's external tests, as pure numpy functions.

Everything works on *ranked predictions*: an ``[N, K]`` array of the K best labels per image (label
indices or names, best first), so the per-image Parquet of ``plantray evaluate`` can be scored again
without the probability matrix. :func:`plantray.inference.ranking.top_k_indices` turns
a probability matrix into that ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def hits(ranked: np.ndarray, true: Sequence) -> np.ndarray:
    """bool ``[N, K]``: whether the j-th ranked label of image i is its true label."""
    ranked = np.asarray(ranked, dtype=object)
    true = np.asarray(true, dtype=object).reshape(-1, 1)
    if ranked.size == 0:
        return np.zeros((len(true), ranked.shape[1] if ranked.ndim == 2 else 0), bool)
    return ranked == true


def correct_at(hit: np.ndarray, k: int) -> np.ndarray:
    """bool ``[N]``: the true label is among the first ``k`` ranked (all ranked when k > K)."""
    return hit[:, :k].any(axis=1)


def accuracy(correct: np.ndarray) -> float | None:
    """Mean of a boolean vector; None for no images."""
    return float(np.mean(correct)) if len(correct) else None


def macro_accuracy(correct: np.ndarray, true: Sequence) -> float | None:
    """Per-class accuracy averaged over the classes present (each class weighs the same).

    Args:
        correct: bool ``[N]``.
        true: the true label of each image.
    Returns:
        The mean of per-class accuracies, or None for no images.
    """
    if not len(correct):
        return None
    classes, inverse = np.unique(np.asarray(true, dtype=str), return_inverse=True)
    per_class = np.bincount(inverse, weights=correct.astype(float)) / np.bincount(inverse)
    return float(per_class.mean()) if len(classes) else None


def per_group_accuracy(correct: np.ndarray, groups: Sequence) -> dict[str, dict]:
    """Accuracy per group value (e.g. organ tag); images without a group are left out.

    Returns:
        ``{group: {"accuracy": float, "images": int}}`` sorted by group.
    """
    out = {}
    groups = np.asarray(groups, dtype=object)
    for g in sorted({g for g in groups if g is not None}):
        mask = groups == g
        out[str(g)] = {"accuracy": float(correct[mask].mean()), "images": int(mask.sum())}
    return out


def level_accuracy(predicted: Sequence, true: Sequence) -> float | None:
    """Top-1 at a coarser rank: the predicted species' genus (family) equals the true one.

    Images whose true or predicted value is unknown (None) are left out; None when none is left.
    """
    pairs = [(p, t) for p, t in zip(predicted, true) if p is not None and t is not None]
    return float(np.mean([p == t for p, t in pairs])) if pairs else None


def bootstrap_interval(correct: np.ndarray, samples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of an accuracy.

    For a 0/1 outcome, the number correct in a resample of N images drawn with replacement is
    exactly Binomial(N, observed accuracy), so drawing that is the bootstrap at O(samples) cost,
    whatever the size of the test set.

    Args:
        correct: bool ``[N]``.
        samples: bootstrap replicates (0 disables).
        seed: random seed (same seed, same interval).
        level: coverage of the interval.
    Returns:
        (low, high), or None for no images or no replicates.
    """
    n = len(correct)
    if n == 0 or samples < 1:
        return None
    rng = np.random.default_rng(seed)
    replicates = rng.binomial(n, float(np.mean(correct)), size=samples) / n
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def score(ranked: np.ndarray, true: Sequence, ks: Sequence[int] = (1, 5), tags: Sequence | None = None,
          predicted_genus: Sequence | None = None, true_genus: Sequence | None = None,
          predicted_family: Sequence | None = None, true_family: Sequence | None = None,
          bootstrap: int = 1000, seed: int = 0) -> dict:
    """Every metric of one test set for one model.

    Args:
        ranked: ``[N, K]`` ranked labels (K >= max(ks), or all classes).
        true: ``[N]`` true labels, comparable with ``ranked``.
        ks: the Top-k to report.
        tags: optional organ tag per image, for per-tag Top-1.
        predicted_genus, true_genus, predicted_family, true_family: optional, for genus/family Top-1.
        bootstrap: replicates for the 95% intervals of every Top-k (0 = off).
        seed: bootstrap seed.
    Returns:
        ``{"images", "labels", "top{k}" for each k, "macro_top1", "per_tag", "genus_top1",
        "family_top1", "ci95": {"top{k}": [low, high]}}``; accuracies in [0, 1] or None.
    """
    ranked = np.asarray(ranked, dtype=object)
    ranked = ranked.reshape(len(true), -1) if len(true) else np.empty((0, 1), object)
    hit = hits(ranked, true)
    out: dict = {"images": len(true), "labels": len({t for t in true})}
    ci = {}
    for i, k in enumerate(ks):
        correct = correct_at(hit, k)
        out[f"top{k}"] = accuracy(correct)
        ci[f"top{k}"] = bootstrap_interval(correct, bootstrap, seed + i)
    top1 = correct_at(hit, 1)
    out["macro_top1"] = macro_accuracy(top1, true)
    out["per_tag"] = per_group_accuracy(top1, tags) if tags is not None else {}
    out["genus_top1"] = level_accuracy(predicted_genus, true_genus) if predicted_genus is not None else None
    out["family_top1"] = level_accuracy(predicted_family, true_family) if predicted_family is not None else None
    out["ci95"] = {k: (list(v) if v else None) for k, v in ci.items()}
    return out
