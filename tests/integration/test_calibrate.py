"""``plantray calibrate`` on real Ray: temperature scaling that lowers the held-out ECE, from local and S3 data.

Proves issue 13's "Done when": a model trained a few epochs on synthetic plants and calibrated on a
validation split (automatically, by ``plantray train --val``) has a lower ECE on the held-out test split
than its raw softmax, in evaluate's report; classify applies the same temperature and says so in the Parquet
metadata and its summary. The bound "calibrated ECE <= 0.05" is checked on a model trained in the test's own
process, the same every run, because what one temperature leaves depends on the model and Ray Train's model
differs from run to run.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from plantray.cli import main
from plantray.commands.synth import SynthConfig, synthesize


def ece_by_loop(conf: np.ndarray, correct: np.ndarray) -> float:
    """Guo et al.'s ECE written out independently: 15 bins (lo, hi], weighted |accuracy - confidence|."""
    total, edges = 0.0, np.linspace(0, 1, 16)
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


@pytest.mark.slow
def test_trained_then_calibrated_model_has_lower_held_out_ece(trained, trained_report, tmp_path):
    """The session's shared training run (tests/integration/conftest.py): 6 species, 30 training, 80 validation
    (the 'unseen' split) and 300 held-out test images each; ``train --val`` calibrated it on the validation split."""
    from plantray.commands.classify import ClassifyConfig, classify

    data, out, summary, config = trained["data"], trained["model"], trained["summary"], trained["config"]
    species, val_per_species, test_per_species = config["species"], config["val"], config["test"]
    # train --val calibrated the model it wrote: the card has the temperature, the weights are untouched.
    card = json.loads((out / "model_card.json").read_text())
    c = card["calibration"]
    assert c["method"] == "temperature" and c["temperature"] == summary["calibration"]["temperature"]
    assert c["validation"] == {"uri": str(data / "unseen.parquet"), "images": species * val_per_species,
                               "tta": "center"}
    assert c["nll_after"] <= c["nll_before"] and c["fitted_at"].endswith("Z")
    assert hashlib.sha256((out / "weights.pt").read_bytes()).hexdigest() == card["weights"]["sha256"] \
        == summary["sha256"]
    assert json.loads((out / "calibration" / "_plantray_run.json").read_text())["command"] == "calibrate"

    # evaluate on the held-out split (the session's shared report, tests/integration/conftest.py)
    report = trained_report
    (entry,) = json.loads((report / "report.json").read_text())["results"]
    assert entry["test_set"] == "held"
    cal = entry["calibration"]
    # The report's ECE, recomputed from the per-image Parquet (the held-out rows only: the shared report also
    # holds the --ood set's no-plant pictures).
    raw, scaled = _held_out_calibration(report)
    print(f"T={cal['temperature']} top1={scaled['accuracy']:.3f} ECE {raw['ece']:.4f} -> {scaled['ece']:.4f} "
          f"NLL {raw['nll']:.4f} -> {scaled['nll']:.4f} Brier {raw['brier']:.4f} -> {scaled['brier']:.4f}")
    assert raw["images"] == scaled["images"] == species * test_per_species
    # Calibration helps on held-out images: NLL, Brier and ECE lower. How much ECE is left depends on the model,
    # and this run's model is not the same twice (Ray Data streams batches in the order decode tasks finish):
    # its calibrated ECE has ranged from 0.028 to 0.063 (Top-1 0.79 that time), 29-74 % below the raw one.
    # The size of the gain (issue 13's ECE <= 0.05) is asserted on a model that is the same every run, below.
    assert scaled["nll"] < raw["nll"] and scaled["brier"] < raw["brier"] and scaled["ece"] < raw["ece"]
    md = (report / "report.md").read_text()
    assert "## Calibration" in md and f"temperature T = {cal['temperature']:.4g}" in md
    assert (report / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # classify applies the same temperature: the same centre-crop confidences as evaluate's, and says so.
    # 120 of the held-out images (20 per species) are enough to compare each image's confidence.
    held, seen, keep = pq.read_table(data / "test.parquet"), collections.Counter(), []
    for i, name in enumerate(held.column("scientificName").to_pylist()):
        seen[name] += 1
        if seen[name] <= 20:
            keep.append(i)
    # Its image_uri are relative to test.parquet's folder: the subset, written elsewhere, names them in full.
    rel = held.take(keep).column("image_uri").to_pylist()
    subset = tmp_path / "subset.parquet"
    pq.write_table(held.take(keep).set_column(held.schema.get_field_index("image_uri"), "image_uri",
                                               pa.array([str(data / u) for u in rel])), subset)
    pred = tmp_path / "pred"
    cls = classify(ClassifyConfig(model=str(out), input=str(subset), output=str(pred)))
    assert cls["calibration"] == f"temperature {cal['temperature']:.4g}"
    files = sorted(pred.glob("*.parquet"))
    meta = pq.read_schema(files[0]).metadata
    assert json.loads(meta[b"plantray.calibration"])["temperature"] == cal["temperature"]
    got = dict(zip(*pads.dataset(pred, format="parquet").to_table(columns=["image_uri", "confidence"])
                   .to_pydict().values()))
    ev = pads.dataset(report / "predictions", format="parquet").to_table(
        columns=["image_uri", "topk_confidence"], filter=pc.field("test_set") == "held")
    want = {u: c[0] for u, c in zip(*ev.to_pydict().values())}
    assert len(got) == len(rel) == species * 20 and len(want) == raw["images"]
    assert np.allclose([got[str(data / u)] for u in rel], [want[u] for u in rel], atol=1e-5)


def _held_out_calibration(report) -> tuple[dict, dict]:
    """The held-out set's uncalibrated and calibrated figures from a report, each checked against an ECE
    recomputed here (:func:`ece_by_loop`) from the report's per-image Parquet."""
    (entry,) = json.loads((report / "report.json").read_text())["results"]
    raw, scaled = entry["calibration"]["uncalibrated"], entry["calibration"]["calibrated"]
    rows = pads.dataset(report / "predictions", format="parquet").to_table(
        columns=["topk_confidence", "correct@1", "uncalibrated_confidence"],
        filter=pc.field("test_set") == "held").to_pydict()
    correct = np.array(rows["correct@1"], float)
    assert len(correct) == raw["images"] == scaled["images"]
    assert ece_by_loop(np.array([c[0] for c in rows["topk_confidence"]]), correct) == pytest.approx(scaled["ece"])
    assert ece_by_loop(np.array(rows["uncalibrated_confidence"]), correct) == pytest.approx(raw["ece"])
    return raw, scaled


@pytest.mark.slow
def test_calibrating_an_overconfident_model_lowers_its_held_out_ece(synth_plants, ray_session, tmp_path):
    """Issue 13's bound on a model that is the same every run: resnet18 trained in this process (seeded, 100
    steps on the shared run's 180 training images at 32 px, no augmentation) fits them too well and is
    overconfident; ``plantray calibrate`` fits T on the 480 validation images, ``plantray evaluate`` scores the
    1,800 held-out ones. Measured: T 2.38, Top-1 0.71, ECE 0.174 -> 0.024, NLL 1.20 -> 0.84."""
    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import Labels
    from tests.helpers import train_in_process

    train = synth_plants / "train.parquet"
    counts = collections.Counter(pq.read_table(train, columns=["scientificName"]).column(0).to_pylist())
    labels = Labels(sorted(counts), train_images=[counts[n] for n in sorted(counts)])
    preset = EvalPreset(crop_size=32, resize_size=37)
    model = str(tmp_path / "model")
    save_artifact(model, train_in_process(str(train), labels, preset, steps=100), labels,
                  make_card("resnet18", labels, preset, {"init": "random"}))
    assert main(["-q", "calibrate", "--model", model, "--data", str(synth_plants / "unseen.parquet")]) == 0
    report = tmp_path / "report"
    assert main(["-q", "evaluate", "--model", model, "--test", f"held={synth_plants / 'test.parquet'}", "--tta",
                 "center", "--min-train-images", "0", "--bootstrap", "0", "--output", str(report)]) == 0
    raw, scaled = _held_out_calibration(report)
    print(f"top1={scaled['accuracy']:.3f} ECE {raw['ece']:.4f} -> {scaled['ece']:.4f} NLL {raw['nll']:.4f} -> "
          f"{scaled['nll']:.4f} Brier {raw['brier']:.4f} -> {scaled['brier']:.4f}")
    assert json.loads((tmp_path / "model" / "model_card.json").read_text())["calibration"]["temperature"] > 1.5
    assert raw["images"] == 1800 and raw["ece"] >= 0.1  # overconfident, as trained
    assert scaled["nll"] < raw["nll"] and scaled["brier"] < raw["brier"]
    assert scaled["ece"] <= raw["ece"] / 3 and scaled["ece"] <= 0.05


def _tiny_model(uri: str, names: list[str]) -> None:
    import torch

    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import Labels
    from plantray.model.network import build_model

    torch.manual_seed(0)
    labels = Labels(names)
    model, _ = build_model("resnet18", len(labels), "random")
    save_artifact(uri, model, labels, make_card("resnet18", labels, EvalPreset(crop_size=32, resize_size=36),
                                                {"init": "random"}))


def test_calibrate_reads_and_writes_object_storage(s3, ray_session, capsys):
    prefix = f"s3://plantray-test/calib-{uuid.uuid4().hex[:8]}"
    synthesize(SynthConfig(f"{prefix}/data", species=3, images_per_species=1, test_per_species=4,
                           unseen_per_species=0, min_pixels=2000, max_pixels=3000, seed=5))
    names = [line.split(",")[0] for line in s3.cat(f"{prefix.removeprefix('s3://')}/data/labels.csv")
             .decode().splitlines()[1:]]
    model = f"{prefix}/model"
    _tiny_model(model, names)
    card_path = f"{model.removeprefix('s3://')}/model_card.json"
    sha = json.loads(s3.cat(card_path))["weights"]["sha256"]
    code = main(["calibrate", "--model", model, "--data", f"{prefix}/data/test.parquet"])
    assert code == 0, capsys.readouterr().err
    assert "temperature" in capsys.readouterr().out
    card = json.loads(s3.cat(card_path))
    c = card["calibration"]
    assert c["validation"] == {"uri": f"{prefix}/data/test.parquet", "images": 12, "tta": "center"}
    assert 0.05 <= c["temperature"] <= 20 and c["nll_after"] <= c["nll_before"] + 1e-9
    assert card["weights"]["sha256"] == sha == hashlib.sha256(s3.cat(f"{model.removeprefix('s3://')}/weights.pt"))\
        .hexdigest()


def test_bad_input_exits_2(tmp_path, ray_session, capsys):
    model = str(tmp_path / "m")
    _tiny_model(model, ["Rosa canina", "Quercus robur"])
    manifest = tmp_path / "v.csv"
    manifest.write_text("image_uri,scientificName\na.jpg,Bellis perennis\n")
    assert main(["calibrate", "--model", model, "--data", str(manifest)]) == 2
    assert "none of its labels is known" in capsys.readouterr().err
    assert main(["calibrate", "--model", str(tmp_path / "nothing"), "--data", str(manifest)]) == 2
    assert "not a plantray model" in capsys.readouterr().err
    assert "calibration" not in json.loads(open(os.path.join(model, "model_card.json")).read())
