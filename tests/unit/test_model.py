"""Model artifacts: labels parsing, create/load round trip, provenance, refusals (no Ray needed)."""

import hashlib
import json
import os

import pytest
import torch
import torchvision

from plantray.cli import main
from plantray.commands.model_create import ModelCreateConfig, create_model
from plantray.config import ConfigError
from plantray.model.artifact import load_artifact
from plantray.model.labels import parse_labels
from plantray.model.network import build_model


def test_labels_csv_and_text():
    csv = parse_labels("scientificName,genus,family,taxonID\nQuercus robur,Quercus,Fagaceae,2878688\n"
                       "Bellis perennis,Bellis,Asteraceae,\n")
    assert csv.names == ["Quercus robur", "Bellis perennis"] and csv.family == ["Fagaceae", "Asteraceae"]
    assert csv.taxon_id == ["2878688", None] and not csv.has_counts
    txt = parse_labels("Quercus robur\n\nBellis perennis\n")
    assert txt.names == ["Quercus robur", "Bellis perennis"] and not txt.has_genus


@pytest.mark.parametrize("text,needle", [("", "no labels"), ("name,genus\nA,B\n", "scientificName"),
                                         ("A a\nA a\n", "duplicate")])
def test_bad_labels(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_labels(text)


def test_create_and_load_round_trip(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("scientificName,genus,family\nQuercus robur,Quercus,Fagaceae\nFagus sylvatica,Fagus,Fagaceae\n"
                      "Bellis perennis,Bellis,Asteraceae\n")
    out = str(tmp_path / "m")
    card = create_model(ModelCreateConfig(out=out, labels=str(labels), arch="resnet18", image_size=64))
    weights = (tmp_path / "m" / "weights.pt").read_bytes()
    assert card["weights"]["sha256"] == hashlib.sha256(weights).hexdigest()  # computed here, independently
    assert json.loads((tmp_path / "m" / "model_card.json").read_text())["input"]["crop_size"] == 64
    art = load_artifact(out)
    net = art.build()
    assert net.fc.out_features == 3 and art.labels.genus[2] == "Bellis"
    # refuses to overwrite, and refuses tampered weights
    with pytest.raises(ConfigError, match="already holds data"):
        create_model(ModelCreateConfig(out=out, labels=str(labels), arch="resnet18"))
    (tmp_path / "m" / "weights.pt").write_bytes(weights[:-10] + b"0123456789")
    with pytest.raises(ConfigError, match="SHA-256"):
        load_artifact(out)


def test_init_from_state_dict_keeps_backbone(tmp_path):
    src = torchvision.models.resnet18(num_classes=10)
    torch.save(src.state_dict(), tmp_path / "backbone.pt")
    model, prov = build_model("resnet18", 3, str(tmp_path / "backbone.pt"))
    assert torch.equal(model.conv1.weight, src.conv1.weight) and model.fc.out_features == 3
    assert prov["uri"].endswith("backbone.pt")


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="not a loadable state dict"):
        build_model("resnet18", 3, str(tmp_path / "evil.pt"))


def test_cli_refusals(tmp_path, capsys):
    (tmp_path / "l.txt").write_text("A a\nB b\n")
    assert main(["model", "create", str(tmp_path / "m"), "--labels", str(tmp_path / "l.txt"),
                 "--arch", "resnet9000"]) == 2
    assert "unknown --arch" in capsys.readouterr().err
    assert main(["model", "create", str(tmp_path / "m"), "--labels", str(tmp_path / "nope.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_imagenet_weights_fail_clearly_offline(tmp_path, monkeypatch):
    """No internet here: the real download path runs and fails with the way out in the message."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # nothing cached
    (tmp_path / "l.txt").write_text("A a\nB b\n")
    code = main(["model", "create", str(tmp_path / "m"), "--labels", str(tmp_path / "l.txt"),
                 "--arch", "resnet18", "--weights", "imagenet"])
    if code == 0:
        pytest.skip("this machine can download torchvision weights")
    assert code == 2 and not os.path.exists(tmp_path / "m")


def test_tinyresnet_is_a_small_resnet_for_smoke_tests(tmp_path):
    """plantray's own tinyresnet: built, saved and loaded like a torchvision network, its penultimate features
    the head's input, and no ImageNet weights to ask for."""
    from plantray.model.network import Network

    labels = tmp_path / "l.txt"
    labels.write_text("Quercus robur\nFagus sylvatica\nBellis perennis\n")
    out = str(tmp_path / "m")
    card = create_model(ModelCreateConfig(out=out, labels=str(labels), arch="tinyresnet", image_size=32))
    weights = (tmp_path / "m" / "weights.pt").read_bytes()
    assert card["arch"] == "tinyresnet" and len(weights) < 1_000_000  # ResNet-18's are ~45 MB
    model = load_artifact(out).build()
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.out_features == 3
    net = Network(load_artifact(out), torch.device("cpu"))
    net.keep_features()
    logits = net.logits(torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8).numpy())
    assert logits.shape == (2, 3) and net.features.shape == (2, net.feature_size) and net.feature_size == 64
    # The head's input is the pooled features: the head applied to them gives the logits.
    with torch.no_grad():
        assert torch.allclose(model.fc(net.features.clone()), logits, atol=1e-5)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build_model("tinyresnet", 3, "imagenet")
