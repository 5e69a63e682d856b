"""Per-species accuracy, most-confused pairs and coverage (plantray.evaluation.breakdown), the report's
Markdown text escaping and its choice of species, on hand-made values."""

from __future__ import annotations

import numpy as np
import pytest

from plantray.evaluation.breakdown import confused_pairs, coverage, named_share, per_species
from plantray.evaluation.markdown import text
from plantray.evaluation.sections import lowest_species

TRUE = ["A", "A", "A", "A", "B", "B", "C"]
TOP1 = ["A", "B", "C", "B", "A", "B", "A"]


def test_per_species_counts_hits_and_the_species_named_instead():
    top1 = np.array([t == p for t, p in zip(TRUE, TOP1)])
    top2 = np.array([True, True, False, True, True, True, False])
    rows = per_species(TRUE, {1: top1, 2: top2}, TOP1)
    keys = ("scientificName", "images", "top1", "top2", "named_instead", "named_instead_images")
    assert [tuple(r[k] for k in keys) for r in rows] == [("A", 4, 0.25, 0.75, "B", 2), ("B", 2, 0.5, 1.0, "A", 1),
                                                          ("C", 1, 0.0, 0.0, "A", 1)]
    assert all(set(r) == set(keys) for r in rows)
    assert per_species([], {1: np.zeros(0, bool)}, []) == []


def test_a_species_never_wrong_has_nobody_named_instead():
    (row,) = per_species(["A", "A"], {1: np.array([True, True])}, ["A", "A"])
    assert (row["top1"], row["named_instead"], row["named_instead_images"]) == (1.0, None, 0)


def test_confused_pairs_most_images_first_then_by_name():
    pairs = confused_pairs(TRUE + ["C"], TOP1 + ["B"])
    assert [(p["true"], p["predicted"], p["images"], p["of"]) for p in pairs] == [
        ("A", "B", 2, 4), ("A", "C", 1, 4), ("B", "A", 1, 2), ("C", "A", 1, 2), ("C", "B", 1, 2)]
    assert pairs[0]["share"] == 0.5
    assert len(confused_pairs(TRUE, TOP1, limit=2)) == 2
    assert confused_pairs(["A", "B"], [None, "B"]) == []  # no prediction is no confusion


def test_coverage_counts_images_at_or_above_each_threshold():
    confidence = np.array([0.9, 0.5, 0.5, 0.2])
    correct = np.array([True, False, True, False])
    got = coverage(confidence, correct, thresholds=(0.0, 0.5, 0.6, 0.95))
    assert got == [{"threshold": 0.0, "named": 4, "coverage": 1.0, "accuracy": 0.5},
                   {"threshold": 0.5, "named": 3, "coverage": 0.75, "accuracy": pytest.approx(2 / 3)},
                   {"threshold": 0.6, "named": 1, "coverage": 0.25, "accuracy": 1.0},
                   {"threshold": 0.95, "named": 0, "coverage": 0.0, "accuracy": None}]
    assert coverage([], [], thresholds=(0.5,)) == [{"threshold": 0.5, "named": 0, "coverage": None, "accuracy": None}]


def test_named_share_of_an_ood_set():
    assert named_share(np.array([0.3, 0.6, 0.61]), thresholds=(0.6, 0.7)) == [
        {"threshold": 0.6, "named": 2, "share": pytest.approx(2 / 3)}, {"threshold": 0.7, "named": 0, "share": 0.0}]
    assert named_share(np.zeros(0), thresholds=(0.5,))[0]["share"] is None


def test_text_from_the_data_cannot_make_markup():
    assert text("Rosa | canina") == "Rosa \\| canina"
    assert text("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert text("*bold* [link](x) `code`\nnext") == "\\*bold\\* \\[link\\](x) \\`code\\` next"
    assert text("Mentha × piperita L.") == "Mentha × piperita L."


def test_lowest_species_worst_first_commonest_first_among_equals():
    species = [{"scientificName": n, "top1": t, "images": i}
               for n, t, i in [("a", 0.5, 2), ("b", 0.0, 1), ("c", 0.0, 5), ("d", 1.0, 9), ("e", 0.0, 5)]]
    assert [s["scientificName"] for s in lowest_species({"species": species}, limit=4)] == ["c", "e", "b", "a"]
