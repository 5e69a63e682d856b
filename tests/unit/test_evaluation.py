"""The paper's label filter, row selection and per-test scoring, on tables written by hand (no Ray)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from plantray.evaluation.labelfilter import NO_LABEL, TOO_FEW, UNKNOWN, label_filter, select_rows
from plantray.evaluation.report import markdown_table, pct
from plantray.evaluation.score import score_test
from plantray.model.labels import Labels

LABELS = Labels(["A a", "B b", "C c"], ["A", "B", "C"], ["F", "F", "G"], train_images=[13, 12, 100])


def test_label_filter_keeps_more_than_n_training_images():
    kept, stats = label_filter({"A a": 4, "B b": 2, "X x": 3, None: 1}, LABELS, min_train_images=12)
    assert kept == {"A a"}  # 13 > 12 kept, 12 dropped (the paper keeps labels with > 12)
    assert stats["images"] == {"kept": 4, UNKNOWN: 3, TOO_FEW: 2, NO_LABEL: 1}
    assert stats["labels"] == {"kept": 1, UNKNOWN: 1, TOO_FEW: 1}
    assert label_filter({"B b": 2}, LABELS, min_train_images=0)[0] == {"B b"}


def test_select_rows_filters_and_unifies_the_schema():
    table = pa.table({"image_uri": ["1", "2", "3"], "_source": ["1", "2", "3"], "scientificName": ["A a", "B b", None],
                      "extra": [1, 2, 3]})
    out = select_rows(table, "flora", ("A a",))
    assert out.column_names == ["test_set", "image_uri", "_source", "scientificName", "tag", "genus", "family"]
    assert out.to_pylist() == [{"test_set": "flora", "image_uri": "1", "_source": "1", "scientificName": "A a",
                                "tag": None, "genus": None, "family": None}]


def _predictions():
    rows = [  # test_set, true, tag, ranked, predicted genus/family, true genus/family, error
        ("t", "A a", "leaf", ["A a", "B b"], "A", "F", "A", "F", None),
        ("t", "B b", "leaf", ["A a", "B b"], "A", "F", "B", "F", None),
        ("t", "C c", "habit", ["C c", "A a"], "C", "G", "C", "G", None),
        ("t", "C c", "habit", None, None, None, "C", "G", "not found"),
        ("other", "A a", None, ["B b", "A a"], "B", "F", "A", "F", None),
    ]
    names = ["test_set", "scientificName", "tag", "topk_scientificName", "predicted_genus", "predicted_family",
             "true_genus", "true_family", "error"]
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows])


def test_score_test_counts_only_its_set_and_excludes_unreadable():
    scores, unreadable = score_test(_predictions(), "t", LABELS, [1, 2], bootstrap=0, seed=0)
    assert unreadable == {"not found": 1}
    # worked by hand over the 3 readable rows of set "t": top-1 right for rows 1 and 3, top-2 for all
    assert scores["images"] == 3 and scores["top1"] == pytest.approx(2 / 3) and scores["top2"] == 1.0
    assert scores["genus_top1"] == pytest.approx(2 / 3) and scores["family_top1"] == 1.0
    assert scores["per_tag"] == {"habit": {"accuracy": 1.0, "images": 1}, "leaf": {"accuracy": 0.5, "images": 2}}
    assert score_test(None, "t", LABELS, [1], 0, 0)[0]["images"] == 0


def test_markdown_table_has_a_row_per_test_set():
    summary = {"ks": [1, 5], "models": [{"label": "m"}], "tests": [{"name": "t"}],
               "results": [{"model": "m", "test_set": "t", "metrics": {"top1": 0.4012, "top5": 0.63}}]}
    assert markdown_table(summary).splitlines()[-1] == "| t | 40.1 | 63.0 |"
    assert pct(None) == "–"
