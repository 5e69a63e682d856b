"""Fixtures of the integration tests: one trained model per test session, for every test that needs *a*
trained model (training, calibration, classify of held-out images)."""

from __future__ import annotations

import pytest

from tests.helpers import add_broken_image

# The shared run: 6 synthetic species, 30 training images each (plus one file that is no image), 80
# validation images each (the 'unseen' split, which `train --val` calibrates on) and 300 held-out test images
# each (1,800: at 900 even a perfectly calibrated model's ECE passes 0.044 one time in twenty, and a CI run measured
# 0.0597; see docs/calibration.md), and 6 pictures of no plant (the report's
# --ood set). One worker, 16 images per step: the recipe that reached Top-1 ~0.83 and a calibrated ECE of
# 0.028-0.037 in three runs (0.050 at Top-1 0.77 and 0.063 at 0.79 in later ones: test_calibrate.py bounds
# the calibrated ECE of a model trained in-process, the same every run, and only asks this one's to fall). Two
# workers of 8 (no synchronised batch norm) learnt far less evenly (Top-1 0.58-0.79, calibrated ECE up to
# 0.060); training on 2 workers is tested with tinyresnet in test_train.py.
TRAINED = {"species": 6, "train": 30, "val": 80, "test": 300, "noplant": 6, "epochs": 10, "workers": 1,
           "image_size": 64, "val_every": 4,
           "license": "CC-BY 4.0 (synthetic)", "citation": "plantray synth"}


@pytest.fixture(scope="session")
def synth_plants(tmp_path_factory):
    """The synthetic dataset of :data:`TRAINED`, plus ``train_plus.parquet``: the training manifest with one
    extra row whose file is not a JPEG (``train/<first species>/broken.jpg``)."""
    from plantray.commands.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("plants")
    synthesize(SynthConfig(str(root), species=TRAINED["species"], images_per_species=TRAINED["train"],
                           test_per_species=TRAINED["test"], unseen_per_species=TRAINED["val"],
                           ood_noplant=TRAINED["noplant"], min_pixels=3000, max_pixels=8000, seed=11))
    add_broken_image(root)
    return root


@pytest.fixture(scope="session")
def trained(synth_plants, tmp_path_factory, ray_session):
    """One ``plantray train --val`` run shared by the session: resnet18 from scratch at 64 px on 1 Ray Train
    worker, validated after every 4th and the last epoch, calibrated on the validation split. Returns
    ``{"data", "model", "summary", "config"}`` (config: :data:`TRAINED`)."""
    from plantray.commands.train import TrainConfig, train

    model = tmp_path_factory.mktemp("trained") / "model"
    summary = train(TrainConfig(
        data=str(synth_plants / "train_plus.parquet"), output=str(model), arch="resnet18", init="random",
        epochs=TRAINED["epochs"], num_workers=TRAINED["workers"], image_size=TRAINED["image_size"], batch_size=16,
        lr=2e-3, seed=1, val=str(synth_plants / "unseen.parquet"), checkpoint_every=5,
        val_every=TRAINED["val_every"],
        data_license=TRAINED["license"], data_citation=TRAINED["citation"]))
    return {"data": synth_plants, "model": model, "summary": summary, "config": TRAINED}


@pytest.fixture(scope="session")
def trained_report(trained, tmp_path_factory):
    """``plantray evaluate`` of the shared model on its 1,800 held-out images (test set ``held``, centre crop) with
    the no-plant pictures as ``--ood noplant``; returns the report directory."""
    from plantray.commands.evaluate import EvaluateConfig, evaluate

    out = tmp_path_factory.mktemp("trained_report") / "report"
    data = trained["data"]
    evaluate(EvaluateConfig(model=str(trained["model"]), test=[f"held={data / 'test.parquet'}"],
                            ood=[f"noplant={data / 'ood_noplant.parquet'}"], output=str(out), tta="center",
                            min_train_images=0, bootstrap=0))
    return out
