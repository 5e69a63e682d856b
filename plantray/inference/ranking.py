"""Ranking class probabilities, and reporting an identification at the most specific rank they support."""

from __future__ import annotations

import numpy as np


def top_k_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable class indices per row, best first (ties: lower index first).

    Args:
        probs: ``[N, C]`` scores.
        k: how many to keep (clamped to C).
    Returns:
        int64 ``[N, min(k, C)]``.
    """
    probs = np.asarray(probs)
    k = min(k, probs.shape[1])
    # A stable sort of -probs keeps the lower index first on ties: reproducible rankings.
    return np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)


def _group_sums(probs: np.ndarray, groups: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Sums class probabilities per group (genus or family); labels without a group are skipped.

    Returns (sums [B, G], group names [G]); G is 0 when no label has a group.
    """
    names = sorted({g for g in groups if g})
    if not names:
        return np.zeros((probs.shape[0], 0), probs.dtype), []
    index = {g: i for i, g in enumerate(names)}
    cols = np.array([c for c, g in enumerate(groups) if g])
    gid = np.array([index[groups[c]] for c in cols])
    order = np.argsort(gid, kind="stable")
    # reduceat over contiguous runs of each group: O(B*C), no dense C x G matrix for 10k-class models.
    starts = np.flatnonzero(np.r_[True, np.diff(gid[order]) != 0])
    return np.add.reduceat(probs[:, cols[order]], starts, axis=1), names


def _best(probs: np.ndarray, names: list[str]) -> tuple[list[str], np.ndarray]:
    best = probs.argmax(axis=1)
    return [names[i] for i in best], probs[np.arange(len(best)), best]


def _check_rollup_args(probs: np.ndarray, species, genus, family, threshold: float) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs has shape {probs.shape}: expected [batch, classes]")
    for name, labels in (("species", species), ("genus", genus), ("family", family)):
        if len(labels) != probs.shape[1]:
            raise ValueError(f"{name} has {len(labels)} labels but probs has {probs.shape[1]} classes: "
                             "pass one entry (or None) per class")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold!r} is invalid: use a probability in [0, 1]")


def rollup(probs: np.ndarray, genus: list[str | None], family: list[str | None], threshold: float, *,
           species: list[str]) -> tuple[list[str], list[str], np.ndarray]:
    """Reports each image at the most specific rank whose probability clears ``threshold``.

    Rule, per image:

    1. the top species if its probability >= threshold (rank "species");
    2. else the genus with the largest summed probability of its species, if that sum >= threshold ("genus");
    3. else likewise the family ("family");
    4. else nothing clears it: the best-supported name at the coarsest rank available (family, or genus when
       no label has a family, or species), with its below-threshold confidence so readers can filter.
       The coarsest rank is the one most likely to be right when the model is unsure.

    Labels whose genus/family is None are skipped at that level (they still count as species).

    Args:
        probs: [B, C] class probabilities (softmax output).
        genus: genus name per class, or None.
        family: family name per class, or None.
        threshold: probability a name must reach, in [0, 1].
        species: scientific name per class.

    Returns:
        (names, ranks, confidence): reported name, its taxonRank and its (summed) probability, per image.
    """
    probs = np.asarray(probs)
    _check_rollup_args(probs, species, genus, family, threshold)
    names, conf = _best(probs, list(species))
    conf = conf.astype(np.float64)
    ranks = ["species"] * len(names)
    levels = []  # (rank, best name per image, its summed probability), finer ranks first
    for rank, groups in (("genus", genus), ("family", family)):
        sums, group_names = _group_sums(probs, groups)
        if group_names:
            levels.append((rank, *_best(sums, group_names)))
    for row in np.flatnonzero(conf < threshold):
        cleared = [lv for lv in levels if lv[2][row] >= threshold]
        choice = cleared[0] if cleared else (levels[-1] if levels else None)
        if choice is not None:
            rank, level_names, level_conf = choice
            names[row], ranks[row], conf[row] = level_names[row], rank, float(level_conf[row])
    return names, ranks, conf


def withhold(names: list[str], ranks: list[str], confidence: np.ndarray, min_confidence: float
             ) -> tuple[list[str | None], list[str | None]]:
    """An honest "unknown": drops the name and rank of every identification below ``min_confidence``.

    Applied to :func:`rollup`'s output (rolled up at ``min_confidence`` or higher), a row is withheld
    exactly when no rank -- species, genus or family -- reached ``min_confidence``. Its confidence (the
    best-supported name's, at the coarsest rank) is kept by the caller so readers see how close it came.

    Args:
        names: reported names, per image.
        ranks: their taxonRank.
        confidence: their probabilities.
        min_confidence: the probability a reported name must reach, in [0, 1).
    Returns:
        (names, ranks) with None where ``confidence < min_confidence``.
    """
    below = np.asarray(confidence) < min_confidence
    return ([None if b else n for n, b in zip(names, below)], [None if b else r for r, b in zip(ranks, below)])
