"""Metric functions against numbers worked out by hand for a small probability matrix."""

from __future__ import annotations

import numpy as np
import pytest

from plantray.evaluation import metrics
from plantray.inference.ranking import top_k_indices

NAMES = ["A", "B", "C", "D", "E", "F"]
GENUS = {"A": "G1", "B": "G1", "C": "G2", "D": "G2", "E": "G3", "F": "G3"}
FAMILY = {"G1": "F1", "G2": "F1", "G3": "F2"}
# One row per image; the comment gives the ranking by hand.
PROBS = np.array([
    [0.50, 0.20, 0.10, 0.10, 0.06, 0.04],  # true A: A B C D E F -> top1 right
    [0.10, 0.40, 0.20, 0.15, 0.10, 0.05],  # true A: B C D A E F -> top1 B (same genus), A 4th
    [0.30, 0.25, 0.01, 0.20, 0.14, 0.10],  # true C: A B D E F C -> top1 A (other genus, same family), C 6th
    [0.05, 0.05, 0.10, 0.60, 0.10, 0.10],  # true D: D ... -> top1 right
    [0.02, 0.03, 0.05, 0.10, 0.30, 0.50],  # true E: F E ... -> top1 F (same genus)
    [0.31, 0.10, 0.10, 0.10, 0.10, 0.29],  # true F: A F ... -> top1 A (other family), F 2nd
])
TRUE = ["A", "A", "C", "D", "E", "F"]
TAGS = ["flower", "leaf", "flower", "habit", "leaf", None]


def _ranked() -> np.ndarray:
    idx = top_k_indices(PROBS, 5)
    return np.array(NAMES, dtype=object)[idx]


def test_top_k_indices_orders_by_probability():
    assert top_k_indices(PROBS, 3)[1].tolist() == [1, 2, 3]
    assert top_k_indices(PROBS, 10).shape == (6, 6)  # clamped to the classes


def test_score_matches_hand_computation():
    ranked = _ranked()
    top1 = [r[0] for r in ranked]
    out = metrics.score(ranked, TRUE, ks=(1, 5), tags=TAGS,
                        predicted_genus=[GENUS[p] for p in top1], true_genus=[GENUS[t] for t in TRUE],
                        predicted_family=[FAMILY[GENUS[p]] for p in top1],
                        true_family=[FAMILY[GENUS[t]] for t in TRUE], bootstrap=200, seed=3)
    # Worked out from the comments above: right at 1 for images 0 and 3; only image 2 misses the top 5.
    assert out["top1"] == pytest.approx(2 / 6)
    assert out["top5"] == pytest.approx(5 / 6)
    # Per class Top-1: A 1/2, C 0, D 1, E 0, F 0 -> mean over 5 classes.
    assert out["macro_top1"] == pytest.approx((0.5 + 0 + 1 + 0 + 0) / 5)
    # Genus right for images 0, 1, 3, 4; family right for all but image 5.
    assert out["genus_top1"] == pytest.approx(4 / 6)
    assert out["family_top1"] == pytest.approx(5 / 6)
    assert out["per_tag"] == {"flower": {"accuracy": 0.5, "images": 2}, "leaf": {"accuracy": 0.0, "images": 2},
                              "habit": {"accuracy": 1.0, "images": 1}}
    assert out["images"] == 6 and out["labels"] == 5


def test_score_agrees_with_plain_python():
    ranked = _ranked()
    for k in (1, 2, 3, 5):
        expected = sum(1 for r, t in zip(ranked.tolist(), TRUE) if t in r[:k]) / len(TRUE)
        assert metrics.score(ranked, TRUE, ks=(k,), bootstrap=0)[f"top{k}"] == pytest.approx(expected)


def test_level_accuracy_skips_unknown():
    assert metrics.level_accuracy(["G1", None, "G2"], ["G1", "G1", "G3"]) == pytest.approx(0.5)
    assert metrics.level_accuracy([None], ["G1"]) is None


def test_empty_set_gives_none():
    out = metrics.score(np.empty((0, 5), object), [], ks=(1, 5), bootstrap=100)
    assert out["top1"] is None and out["macro_top1"] is None and out["ci95"]["top1"] is None


def test_bootstrap_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    correct = rng.random(400) < 0.37
    p = correct.mean()
    lo, hi = metrics.bootstrap_interval(correct, 1000, seed=7)
    assert lo <= p <= hi and hi - lo > 0
    assert metrics.bootstrap_interval(correct, 1000, seed=7) == (lo, hi)
    # Independent check: the textbook bootstrap, resampling images with replacement.
    boot = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(2000)]
    ref_lo, ref_hi = np.percentile(boot, [2.5, 97.5])
    assert abs(lo - ref_lo) < 0.02 and abs(hi - ref_hi) < 0.02
    assert metrics.bootstrap_interval(correct, 0) is None
