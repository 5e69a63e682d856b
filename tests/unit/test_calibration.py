"""Calibration metrics and the temperature fit against hand-computed, numpy and torch values (no Ray)."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from plantray.config import ConfigError
from plantray.evaluation import calibration as cal
from plantray.images.presets import EvalPreset
from plantray.model.artifact import load_artifact, make_card, save_artifact, write_calibration
from plantray.model.labels import Labels
from plantray.model.network import build_model


def test_ece_by_hand():
    # Bin 15 (14/15, 1]: four at 0.95, three right -> |0.75 - 0.95| * 4/6; bin 9 (8/15, 9/15]: two at 0.55,
    # one right -> |0.5 - 0.55| * 2/6. ECE = (0.8 + 0.1) / 6 = 0.15.
    conf = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55]
    ok = [True, True, True, False, True, False]
    assert cal.ece(conf, ok) == pytest.approx(0.15)
    bins = cal.reliability_bins(conf, ok)
    assert len(bins) == 15 and [b["images"] for b in bins] == [0] * 8 + [2] + [0] * 5 + [4]
    assert bins[14]["accuracy"] == pytest.approx(0.75) and bins[8]["confidence"] == pytest.approx(0.55)
    assert bins[8]["low"] == pytest.approx(8 / 15) and bins[8]["high"] == pytest.approx(9 / 15)
    assert cal.ece([], []) is None


def test_bins_are_right_closed():
    # A confidence of exactly 2/15 belongs to (1/15, 2/15], bin 2; just above it to bin 3.
    bins = cal.reliability_bins([2 / 15, 2 / 15 + 1e-9, 1.0], [True, False, True])
    assert [b["images"] for b in bins[:3]] == [0, 1, 1] and bins[14]["images"] == 1


def test_ece_of_a_perfectly_calibrated_bin_is_zero_and_matches_a_loop():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 5000)
    ok = rng.uniform(size=5000) < conf
    expected = 0.0
    edges = np.linspace(0, 1, 16)
    for lo, hi in zip(edges[:-1], edges[1:]):  # Guo et al.'s loop
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            expected += mask.mean() * abs(ok[mask].mean() - conf[mask].mean())
    assert cal.ece(conf, ok) == pytest.approx(expected)
    assert cal.ece([0.6] * 10, [True] * 6 + [False] * 4) == pytest.approx(0.0)


def test_nll_and_brier_by_hand():
    assert cal.nll([0.5, 0.25]) == pytest.approx(1.5 * math.log(2))
    assert cal.brier_rows(np.array([[0.7, 0.2, 0.1]]), np.array([0]))[0] == pytest.approx(0.3**2 + 0.2**2 + 0.1**2)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), size=50)
    true = rng.integers(0, 6, 50)
    onehot = np.eye(6)[true]
    assert cal.brier_rows(probs, true) == pytest.approx(((probs - onehot) ** 2).sum(axis=1))


def test_probabilities_and_nll_average_crops_as_the_predictor():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(7, 3, 5)).astype(np.float32) * 3
    true = rng.integers(0, 5, 7)
    expected = torch.softmax(torch.from_numpy(logits).double() / 1.7, dim=-1).mean(dim=1).numpy()
    assert cal.probabilities(logits, 1.7) == pytest.approx(expected)
    assert cal.nll_at(logits, true, 1.7) == pytest.approx(-np.log(expected[np.arange(7), true]).mean())


def test_chunking_gives_the_same_answer(monkeypatch):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(50, 2, 4)) * 2
    true = rng.integers(0, 4, 50)
    whole = cal.nll_at(logits, true, 0.8), cal.probabilities(logits, 0.8)
    monkeypatch.setattr(cal, "CHUNK_VALUES", 8)  # one image per chunk
    assert cal.nll_at(logits, true, 0.8) == pytest.approx(whole[0])
    assert cal.probabilities(logits, 0.8) == pytest.approx(whole[1])


def test_golden_section_finds_a_parabola_minimum():
    assert cal.golden_section(lambda x: (x - 1.234) ** 2, -5, 5, tol=1e-7) == pytest.approx(1.234, abs=1e-6)


def test_fit_recovers_a_known_temperature_and_matches_a_torch_grid():
    # Labels drawn from softmax(z / 2.5): the NLL-optimal temperature is close to 2.5.
    rng = np.random.default_rng(4)
    z = rng.normal(size=(20000, 5)) * 4
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(axis=1, keepdims=True)
    true = (p.cumsum(axis=1) > rng.uniform(size=(20000, 1))).argmax(axis=1)
    t = cal.fit_temperature(z, true)
    assert t == pytest.approx(2.5, rel=0.05)
    # Independent: torch's cross-entropy over a fine grid of T.
    grid = np.linspace(2.0, 3.0, 1001)
    zt, yt = torch.from_numpy(z), torch.from_numpy(true)
    losses = [torch.nn.functional.cross_entropy(zt / g, yt).item() for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(losses))], abs=2e-3)
    assert cal.nll_at(z, true, t) < cal.nll_at(z, true, 1.0)


def test_fit_on_overconfident_logits_lowers_ece():
    # Accuracy 70% but logits that claim ~99%: T > 1 brings the confidence down to the accuracy.
    rng = np.random.default_rng(5)
    n, c = 4000, 4
    true = rng.integers(0, c, n)
    guess = np.where(rng.uniform(size=n) < 0.7, true, (true + rng.integers(1, c, n)) % c)
    z = np.zeros((n, c))
    z[np.arange(n), guess] = 6.0
    t = cal.fit_temperature(z, true)
    before, after = cal.figures(z, true, 1.0), cal.figures(z, true, t)
    assert t > 1 and after["ece"] < 0.02 < before["ece"] and after["nll"] < before["nll"]
    # Closed form: p_top = e^(6/T) / (e^(6/T) + 3) = 0.7 at the optimum (all images have the same logits).
    assert math.exp(6 / t) / (math.exp(6 / t) + 3) == pytest.approx(0.7, abs=0.02)
    with pytest.raises(ValueError, match="no validation images"):
        cal.fit_temperature(np.zeros((0, 1, 3)), np.zeros(0, int))


def test_score_rows_reads_both_variants():
    table = pa.table({"topk_confidence": [[0.9, 0.1], [0.6, 0.3]], "correct@1": [True, False],
                      "true_probability": [0.9, 0.3], "brier": [0.02, 0.54],
                      "uncalibrated_confidence": [0.99, 0.95], "uncalibrated_true_probability": [0.99, 0.04],
                      "uncalibrated_brier": [0.0002, 1.8]})
    scores = cal.score_rows(table)
    c, u = scores["calibrated"], scores["uncalibrated"]
    assert c["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.3)) / 2)
    assert c["brier"] == pytest.approx(0.28) and u["brier"] == pytest.approx(0.9001)
    # calibrated: bins of 0.9 (right) and 0.6 (wrong) -> (0.1 + 0.6) / 2; raw: one bin, acc 0.5, conf 0.97.
    assert c["ece"] == pytest.approx(0.35) and u["ece"] == pytest.approx(0.47)
    assert c["accuracy"] == u["accuracy"] == 0.5


@pytest.fixture()
def model_dir(tmp_path):
    torch.manual_seed(0)
    labels = Labels(["A a", "B b", "C c"])
    model, _ = build_model("resnet18", 3, "random")
    uri = str(tmp_path / "m")
    save_artifact(uri, model, labels, make_card("resnet18", labels, EvalPreset(crop_size=32, resize_size=36),
                                                {"init": "random"}))
    return uri


def test_card_calibration_keeps_weights_and_every_predictor_applies_it(model_dir):
    from plantray.inference.predictor import CropPredictor, Predictor

    before = load_artifact(model_dir)
    assert before.calibration is None and before.temperature == 1.0
    weights = (open(f"{model_dir}/weights.pt", "rb").read(), before.sha256)
    write_calibration(model_dir, {"method": "temperature", "temperature": 3.0})
    after = load_artifact(model_dir)
    assert after.temperature == 3.0 and (after.weights, after.sha256) == weights
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    raw = Predictor(model_dir).net.logits(images)
    expected = torch.softmax(raw / 3.0, dim=1).numpy()
    assert Predictor(model_dir).probabilities(images, 2) == pytest.approx(expected, abs=1e-6)
    crop = CropPredictor(model_dir, "m", ks=(1,))
    assert crop.probabilities(images, 2) == pytest.approx(expected, abs=1e-6)
    assert crop.raw == pytest.approx(torch.softmax(raw, dim=1).numpy(), abs=1e-6)
    meta = json.loads(Predictor(model_dir).metadata[b"plantray.calibration"])
    assert meta == {"method": "temperature", "temperature": 3.0}


def test_uncalibrated_model_says_so_and_bad_temperature_is_refused(model_dir):
    from plantray.inference.predictor import Predictor

    assert json.loads(Predictor(model_dir).metadata[b"plantray.calibration"]) == {"method": "none"}
    write_calibration(model_dir, {"method": "temperature", "temperature": 0})
    with pytest.raises(ConfigError, match="calibration.temperature 0"):
        load_artifact(model_dir)
