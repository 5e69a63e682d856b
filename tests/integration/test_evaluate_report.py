"""The reports people read (issue 19, item 8), on real Ray (Ray Train and Ray Data) with a synthetic flora:

- ``plantray train --val`` records validation loss and accuracy per epoch (metrics.jsonl/csv, the curve);
- ``plantray evaluate`` reports accuracy per species (report.md and per_species.csv), the most-confused
  pairs, accuracy against coverage as ``--min-confidence`` varies with the ``--ood`` set's false names, and
  how many images each reliability bin holds.

Every expected value is worked out here from the per-image Parquet (pyarrow) or, for the training figures,
from the saved weights with torchvision, never with plantray's own scoring code.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
import torchvision

from plantray.images.loader import preprocess
from plantray.images.presets import EvalPreset

THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # the report's --min-confidence table


@pytest.fixture
def flora(trained):
    """The session's synthetic flora (tests/integration/conftest.py): 6 species, validation split 'unseen'."""
    return trained["data"]


@pytest.fixture
def report(trained_report):
    """The session's evaluate of the shared model: test set 'held' (1,800 images), --ood 'noplant' (6 pictures)."""
    return trained_report


def _rows(report, test_set: str) -> list[dict]:
    table = pads.dataset(str(report / "predictions" / "model_0"), format="parquet").to_table(
        columns=["test_set", "scientificName", "topk_scientificName", "topk_confidence", "uncalibrated_confidence",
                 "error"])
    return [r for r in table.to_pylist() if r["test_set"] == test_set and r["error"] is None]


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _entry(report) -> dict:
    (entry,) = json.loads((report / "report.json").read_text())["results"]
    return entry


def test_training_records_validation_loss_and_accuracy_per_epoch(flora, trained):
    """The shared run: `train --val unseen.parquet --val-every 4` for 10 epochs on 1 worker
    (tests/integration/conftest.py). Validation after every epoch is checked by test_train's worker-failure run."""
    trained, epochs, every = trained["model"], trained["config"]["epochs"], trained["config"]["val_every"]
    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    val = pq.read_table(flora / "unseen.parquet").to_pylist()
    assert [m["epoch"] for m in history] == list(range(1, epochs + 1))
    validated = [m for m in history if "val_loss" in m]
    assert [m["epoch"] for m in validated] == [4, 8, 10] == [e for e in range(1, epochs + 1)
                                                              if e % every == 0 or e == epochs]
    assert all("val_accuracy" not in m and "val_images" not in m for m in history if m not in validated)
    assert all(m["val_images"] == len(val) and m["val_loss"] > 0 and 0 <= m["val_accuracy"] <= 1 for m in validated)
    with open(trained / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["val_loss"] and float(r["val_loss"]) for r in table] == pytest.approx(
        [m.get("val_loss", "") for m in history])
    # The last epoch's figures are those of the saved weights: recomputed here with torchvision.
    card = json.loads((trained / "model_card.json").read_text())
    with open(trained / "labels.csv") as f:
        names = [r["scientificName"] for r in csv.DictReader(f)]
    net = torchvision.models.resnet18(num_classes=len(names))
    net.load_state_dict(torch.load(trained / "weights.pt"))
    net.eval()
    preset = EvalPreset.from_dict(card["input"])
    pixels = np.stack([preprocess((flora / r["image_uri"]).read_bytes(), preset) for r in val])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    y = torch.tensor([names.index(r["scientificName"]) for r in val])
    with torch.no_grad():
        logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    assert history[-1]["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert history[-1]["val_accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert (trained / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _expected_species(rows: list[dict]) -> dict[str, dict]:
    by = collections.defaultdict(list)
    for r in rows:
        by[r["scientificName"]].append(r)
    out = {}
    for name, rs in by.items():
        wrong = collections.Counter(r["topk_scientificName"][0] for r in rs if r["topk_scientificName"][0] != name)
        instead = min(wrong.items(), key=lambda kv: (-kv[1], kv[0])) if wrong else (None, 0)
        out[name] = {"images": len(rs), "top1": sum(r["topk_scientificName"][0] == name for r in rs) / len(rs),
                     "top5": sum(name in r["topk_scientificName"][:5] for r in rs) / len(rs),
                     "named_instead": instead[0], "named_instead_images": instead[1]}
    return out


def test_accuracy_per_species_in_the_csv_and_the_report(report):
    expected = _expected_species(_rows(report, "held"))
    with open(report / "per_species.csv") as f:
        got = {r["scientificName"]: r for r in csv.DictReader(f)}
    label = json.loads((report / "report.json").read_text())["models"][0]["label"]
    assert set(got) == set(expected) and {(r["model"], r["test_set"]) for r in got.values()} == {(label, "held")}
    for name, e in expected.items():
        g = got[name]
        assert (int(g["images"]), g["named_instead"] or None, int(g["named_instead_images"])) == (
            e["images"], e["named_instead"], e["named_instead_images"])
        assert (float(g["top1"]), float(g["top5"])) == pytest.approx((e["top1"], e["top5"]), abs=1e-6)
    md = (report / "report.md").read_text()
    section = md.split("## Accuracy per species", 1)[1].split("\n## ", 1)[0]
    order = sorted(expected, key=lambda n: (expected[n]["top1"], -expected[n]["images"], n))
    lines = [f"| {n} | {expected[n]['images']} | {_pct(expected[n]['top1'])} | {_pct(expected[n]['top5'])} | "
             + (f"{expected[n]['named_instead']} ({expected[n]['named_instead_images']}) |"
                if expected[n]["named_instead"] else "– |") for n in order]
    table = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert table == lines  # every species (6 <= 15), lowest Top-1 first


def test_most_confused_pairs(report):
    rows = _rows(report, "held")
    of = collections.Counter(r["scientificName"] for r in rows)
    pairs = collections.Counter((r["scientificName"], r["topk_scientificName"][0]) for r in rows
                                if r["topk_scientificName"][0] != r["scientificName"])
    expected = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    got = _entry(report)["confused"]
    assert [(p["true"], p["predicted"], p["images"], p["of"]) for p in got] == [
        (t, p, n, of[t]) for (t, p), n in expected]
    md = (report / "report.md").read_text()
    for (t, p), n in expected:
        assert f"| {t} | {p} | {n} of {of[t]} | {_pct(n / of[t])} |" in md
    assert expected, "the model confuses nothing: the test proves little (pick another synth seed)"


def test_accuracy_against_coverage_with_the_ood_set(report):
    rows, noplant = _rows(report, "held"), _rows(report, "noplant")
    assert len(noplant) == 6
    md = (report / "report.md").read_text()
    ood = {o["ood_set"]: o for o in json.loads((report / "report.json").read_text())["ood"]}
    for i, t in enumerate(THRESHOLDS):
        named = [r for r in rows if r["topk_confidence"][0] >= t]
        coverage = len(named) / len(rows)
        hits = sum(r["topk_scientificName"][0] == r["scientificName"] for r in named)
        accuracy = hits / len(named) if named else None
        false_names = sum(r["topk_confidence"][0] >= t for r in noplant) / len(noplant)
        point = _entry(report)["coverage"][i]
        assert (point["threshold"], point["named"]) == (t, len(named))
        assert point["coverage"] == pytest.approx(coverage)
        assert point["accuracy"] == (pytest.approx(accuracy) if named else None)
        assert ood["noplant"]["named"][i]["share"] == pytest.approx(false_names)
        assert f"| {t:g} | {_pct(coverage)} | {_pct(accuracy)} | {_pct(false_names)} |" in md
    coverages = [p["coverage"] for p in _entry(report)["coverage"]]
    assert coverages[0] == 1.0 and coverages[-1] < 1.0  # the thresholds do cut into this test set
    assert "![coverage](coverage.png)" in md and (report / "coverage.png").read_bytes()[:4] == b"\x89PNG"


def _bin_counts(confidences: list[float]) -> list[int]:
    """Images per reliability bin ((m-1)/15, m/15], 0 in the first, worked out with math.ceil."""
    counts = [0] * 15
    for c in confidences:
        counts[max(0, math.ceil(c * 15) - 1)] += 1
    return counts


def test_reliability_bins_count_the_images_they_hold(report):
    rows = _rows(report, "held")
    calibration = _entry(report)["calibration"]
    assert calibration["fitted"]  # train --val put a temperature into the card: both variants are drawn
    assert [b["images"] for b in calibration["calibrated"]["bins"]] == _bin_counts(
        [r["topk_confidence"][0] for r in rows])
    assert [b["images"] for b in calibration["uncalibrated"]["bins"]] == _bin_counts(
        [r["uncalibrated_confidence"] for r in rows])
    assert "how many images each bin holds" in (report / "report.md").read_text()
    png = (report / "reliability.png").read_bytes()
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    assert height > width  # one column per (model, test set), the bin counts under the diagram
