"""Where a model goes wrong, from evaluate's per-image rows: accuracy per species, the species pairs it
confuses most, and accuracy against coverage as ``--min-confidence`` varies. Pure numpy.

Coverage follows what classify does with ``--min-confidence t``: an image is named at species rank when its
top-1 probability (calibrated when the model card has a temperature, the number classify writes as
``confidence``) is at least ``t``. Coverage is the share of images named so; accuracy the Top-1 among them.
Below ``t`` classify rolls up to genus or family, or leaves the image unknown: this table counts those images
as not covered at species rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# --min-confidence values of the report's table (classify accepts [0, 1)); the plot uses CURVE_THRESHOLDS.
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CURVE_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 1.0, 0.01))
CONFUSED_PAIRS = 10  # pairs kept per (model, test set)


def per_species(true: Sequence[str], correct: dict[int, np.ndarray], predicted: Sequence[str | None]) -> list[dict]:
    """Top-k accuracy per true species, and the species most often named instead.

    Args:
        true: the true species of each scored image.
        correct: k -> bool ``[N]``, whether the true species is among the first k ranked.
        predicted: the top-1 species of each image.
    Returns:
        One dict per species, sorted by name: ``scientificName``, ``images``, ``top{k}`` (fraction) for each
        k, ``named_instead`` (the most frequent wrong top-1, ties by name; None when never wrong) and
        ``named_instead_images``.
    """
    true = np.asarray(true, dtype=object)
    if not len(true):
        return []
    names, inverse = np.unique(true.astype(str), return_inverse=True)
    images = np.bincount(inverse, minlength=len(names))
    rows = [{"scientificName": str(n), "images": int(images[i])} for i, n in enumerate(names)]
    for k, ok in sorted(correct.items()):
        hits = np.bincount(inverse, weights=np.asarray(ok, float), minlength=len(names))
        for i, row in enumerate(rows):
            row[f"top{k}"] = float(hits[i] / images[i])
    instead = {p["true"]: p for p in reversed(confused_pairs(true, predicted, limit=None))}
    for row in rows:
        pair = instead.get(row["scientificName"])
        row["named_instead"] = pair["predicted"] if pair else None
        row["named_instead_images"] = pair["images"] if pair else 0
    return rows


def confused_pairs(true: Sequence[str], predicted: Sequence[str | None],
                   limit: int | None = CONFUSED_PAIRS) -> list[dict]:
    """The (true species, species named instead) pairs by how many images they account for.

    Args:
        true: the true species of each scored image.
        predicted: its top-1 species (None: no prediction, left out).
        limit: pairs kept (None: all).
    Returns:
        Dicts ``true``, ``predicted``, ``images``, ``of`` (images of the true species) and ``share``
        (images / of), most images first, then by names.
    """
    true = np.asarray(true, dtype=object)
    predicted = np.asarray(predicted, dtype=object)
    of = dict(zip(*np.unique(true.astype(str), return_counts=True))) if len(true) else {}
    wrong = np.array([p is not None and p != t for t, p in zip(true, predicted)], bool)
    if not wrong.any():
        return []
    keys = np.char.add(np.char.add(true[wrong].astype(str), "\x1f"), predicted[wrong].astype(str))
    pairs, counts = np.unique(keys, return_counts=True)
    rows = []
    for key, count in zip(pairs, counts):
        t, p = str(key).split("\x1f", 1)
        rows.append({"true": t, "predicted": p, "images": int(count), "of": int(of[t]), "share": count / of[t]})
    rows.sort(key=lambda r: (-r["images"], r["true"], r["predicted"]))
    return [{**r, "share": float(r["share"])} for r in rows[:limit]]


def coverage(confidence: np.ndarray, correct: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """Coverage and accuracy at each ``--min-confidence`` threshold (see the module's docstring).

    Args:
        confidence: top-1 probability of each scored image.
        correct: bool ``[N]``, whether its top-1 is the true species.
        thresholds: the values of ``--min-confidence``.
    Returns:
        One dict per threshold: ``threshold``, ``named`` (images at or above it), ``coverage`` (named / N)
        and ``accuracy`` (Top-1 among the named; None when none is).
    """
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, bool)
    out = []
    for t in thresholds:
        named = confidence >= t
        count = int(named.sum())
        out.append({"threshold": float(t), "named": count,
                    "coverage": count / len(confidence) if len(confidence) else None,
                    "accuracy": float(correct[named].mean()) if count else None})
    return out


def named_share(scores: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> list[dict]:
    """For images that are none of the model's species (an ``--ood`` set): the share still named at species
    rank at each threshold (lower is better).

    Returns:
        One dict per threshold: ``threshold``, ``named`` and ``share`` (None for no images).
    """
    scores = np.asarray(scores, np.float64)
    return [{"threshold": float(t), "named": int((scores >= t).sum()),
             "share": float((scores >= t).mean()) if len(scores) else None} for t in thresholds]
