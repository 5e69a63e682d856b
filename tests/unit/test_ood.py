"""Known-versus-unknown metrics (AUROC, FPR@95% TPR) and the --min-confidence withholding, on hand-made scores.

Expected values come from brute force (every known/unknown pair; every candidate threshold) or by hand,
never from the code under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from plantray.evaluation.ood import auroc, fpr_at_tpr, separation
from plantray.inference.ranking import rollup, withhold


def pairs_auroc(known, unknown) -> float:
    """P(known > unknown) + P(tie)/2 by counting every pair."""
    wins = sum(1.0 if k > u else 0.5 if k == u else 0.0 for k, u in itertools.product(known, unknown))
    return wins / (len(known) * len(unknown))


def brute_fpr(known, unknown, tpr=0.95) -> float:
    """The lowest FPR over every threshold (each score seen) whose TPR reaches ``tpr``."""
    best = 1.0
    for t in sorted(set(known) | set(unknown)):
        if np.mean(np.asarray(known) >= t) >= tpr:
            best = min(best, float(np.mean(np.asarray(unknown) >= t)))
    return best


def test_auroc_by_hand():
    # known 0.9, 0.8, 0.4; unknown 0.5, 0.4: pairs won 2+2+0 and one tie (0.4 vs 0.4): (4 + 0.5) / 6
    assert auroc([0.9, 0.8, 0.4], [0.5, 0.4]) == pytest.approx(4.5 / 6)
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1], [0.9]) == 0.0
    assert auroc([0.3, 0.3], [0.3]) == 0.5
    assert auroc([], [0.3]) is None and fpr_at_tpr([0.2], []) == (None, None)


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_fpr95_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    # Rounded scores make ties frequent, so the tie handling is exercised too.
    known = np.round(rng.beta(5, 2, size=int(rng.integers(5, 60))), 2)
    unknown = np.round(rng.beta(2, 3, size=int(rng.integers(5, 60))), 2)
    assert auroc(known, unknown) == pytest.approx(pairs_auroc(known, unknown), abs=1e-12)
    fpr, threshold = fpr_at_tpr(known, unknown)
    assert fpr == pytest.approx(brute_fpr(known, unknown))
    assert np.mean(known >= threshold) >= 0.95


def test_fpr95_by_hand():
    known = [0.05 * i for i in range(1, 21)]  # 20 known: keeping 19 puts the threshold at the 2nd lowest, 0.10
    unknown = [0.02, 0.08, 0.10, 0.5, 0.99]  # 0.10, 0.5 and 0.99 pass it: 3 of 5
    fpr, threshold = fpr_at_tpr(known, unknown)
    assert threshold == pytest.approx(0.10) and fpr == pytest.approx(3 / 5)


def test_separation_reports_the_score_and_counts():
    out = separation(np.array([0.9, 0.7]), np.array([0.2, 0.8, 0.1]))
    assert out["score"] == "max_softmax_probability"
    assert (out["known_images"], out["unknown_images"]) == (2, 3)
    assert out["auroc"] == pytest.approx(5 / 6)  # 0.9 beats all three, 0.7 beats two
    assert out["known_mean_score"] == pytest.approx(0.8) and out["unknown_mean_score"] == pytest.approx(1.1 / 3)


def test_min_confidence_withholds_below_every_rank():
    species = ["Quercus robur", "Quercus petraea", "Fagus sylvatica", "Rosa canina"]
    genus = ["Quercus", "Quercus", "Fagus", "Rosa"]
    family = ["Fagaceae", "Fagaceae", "Fagaceae", "Rosaceae"]
    probs = np.array([[0.70, 0.10, 0.10, 0.10],   # species clears 0.6
                      [0.35, 0.30, 0.05, 0.30],   # genus Quercus 0.65 clears
                      [0.25, 0.20, 0.25, 0.30],   # family Fagaceae 0.70 clears
                      [0.20, 0.05, 0.20, 0.55]])  # family Fagaceae 0.45, Rosaceae 0.55: nothing clears
    names, ranks, conf = rollup(probs, genus, family, 0.6, species=species)
    names, ranks = withhold(names, ranks, conf, 0.6)
    assert names == ["Quercus robur", "Quercus", "Fagaceae", None]
    assert ranks == ["species", "genus", "family", None]
    assert conf[3] == pytest.approx(0.55)  # the best-supported coarsest name's probability stays
