"""The README's main command, end to end on a tiny scale: every output exists and is readable."""

import json
import os

import pytest

from tests.helpers import read_output


@pytest.mark.slow
def test_quickstart_end_to_end(quickstart_run):
    root, printed = quickstart_run  # tests/e2e/conftest.py: `plantray quickstart --out quickstart`, tiny
    out = str(root / "quickstart")
    assert "Outputs:" in printed and "| synth-test |" in printed
    report = json.loads(open(os.path.join(out, "report", "report.json")).read())
    # Table 1's Top-1 is the share of test images whose first-ranked name is the label, counted here.
    rows = read_output(os.path.join(out, "report", "predictions")).select(["image_uri", "topk_scientificName"])
    truth = read_output(os.path.join(out, "data", "test.parquet")).select(["image_uri", "scientificName"])
    label = dict(zip(*truth.to_pydict().values()))
    ranked = rows.to_pylist()
    hits = sum(r["topk_scientificName"][0] == label[r["image_uri"]] for r in ranked)
    (result,) = report["results"]
    assert result["test_set"] == "synth-test" and result["images"]["scored"] == truth.num_rows == len(ranked)
    assert result["metrics"]["top1"] == pytest.approx(hits / len(ranked))
    predictions = read_output(os.path.join(out, "predictions"))
    unseen = read_output(os.path.join(out, "data", "unseen.parquet"))
    assert predictions.num_rows == unseen.num_rows and predictions.column("error").null_count == unseen.num_rows
    assert os.path.exists(os.path.join(out, "model", "training_curve.png"))
