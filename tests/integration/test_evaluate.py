"""``plantray evaluate``: configuration errors, the paper's label filter, and the whole protocol on Ray."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from plantray import cli
from plantray.commands.evaluate import EvaluateConfig, evaluate, validate
from plantray.config import ConfigError
from plantray.images.presets import EvalPreset
from plantray.model.artifact import make_card, save_artifact
from plantray.model.labels import Labels
from plantray.model.network import build_model
from tests.helpers import train_in_process

PRESET = EvalPreset(crop_size=32, resize_size=40)
NAMES = ["Rosa canina", "Quercus robur", "Salvia pratensis", "Acer campestre"]
GENERA = ["Rosa", "Quercus", "Salvia", "Acer"]
FAMILIES = ["Rosaceae", "Fagaceae", "Lamiaceae", "Sapindaceae"]


def make_model(uri: str, counts: list | None, seed: int = 0, model=None) -> str:
    """A resnet18 artifact with hand-made per-class training counts."""
    torch.manual_seed(seed)
    labels = Labels(NAMES, genus=GENERA, family=FAMILIES, train_images=counts or [])
    if model is None:
        model, _ = build_model("resnet18", len(labels), "random")
    save_artifact(uri, model, labels, make_card("resnet18", labels, PRESET, {"init": "random"},
                                                name=os.path.basename(uri)))
    return uri


def make_manifest(root, rows: list[tuple[str | None, str]], broken: set[int] = frozenset()) -> str:
    """Writes tiny JPEGs and a manifest of (scientificName, tag); rows in ``broken`` get garbage bytes."""
    uris = []
    for i, _ in enumerate(rows):
        uris.append(f"img/{i:03d}.jpg")
        path = root / uris[-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in broken:
            path.write_bytes(b"garbage")
        else:
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (44, 52, 3), dtype=np.uint8)).save(path)
    table = pa.table({"image_uri": uris, "scientificName": [r[0] for r in rows], "tag": [r[1] for r in rows]})
    pq.write_table(table, root / "test.parquet")
    return str(root / "test.parquet")


@pytest.fixture()
def counted_model(tmp_path):
    # 12 training images: dropped (the paper keeps MORE than 12); 13: kept; 5: dropped; 100: kept.
    return make_model(str(tmp_path / "counted"), [12, 13, 5, 100])


def test_label_filter_threshold(tmp_path, counted_model):
    rows = ([(NAMES[0], "leaf")] * 2 + [(NAMES[1], "flower")] * 3 + [(NAMES[2], "leaf")]
            + [(NAMES[3], "bark")] * 2 + [("Unknown plant", "leaf")] * 4 + [(None, "leaf")])
    data = make_manifest(tmp_path, rows)
    runs, tests, ks = validate(EvaluateConfig(model=counted_model, test=[f"t={data}"],
                                              output=str(tmp_path / "r")))
    kept, stats = runs[0].filters["t"]
    assert kept == {NAMES[1], NAMES[3]} and ks == [1, 5]
    assert stats["images"] == {"kept": 5, "unknown species": 4, "too few training images": 3, "no label": 1}
    assert stats["labels"] == {"kept": 2, "unknown species": 1, "too few training images": 2}
    # Threshold 11: the 12-image species is now kept too.
    runs, _, _ = validate(EvaluateConfig(model=counted_model, test=[f"t={data}"], output=str(tmp_path / "r"),
                                         min_train_images=11))
    assert runs[0].filters["t"][0] == {NAMES[0], NAMES[1], NAMES[3]}


@pytest.mark.parametrize("change, message", [
    (dict(test=["nodata"]), "NAME=DATA"),
    (dict(test=["=x.parquet"]), "NAME=DATA"),
    (dict(test=["a b={data}"]), "NAME=DATA"),
    (dict(test=["t={data}", "t={data}"]), "unique"),
    (dict(test=["t=/no/such/test.parquet"]), "does not exist"),
    (dict(top_k=0), "--top-k"),
    (dict(model="/no/such/model"), "not a plantray model"),
])
def test_bad_configuration(tmp_path, counted_model, change, message):
    data = make_manifest(tmp_path, [(NAMES[1], "leaf")])
    fields = dict(model=counted_model, test=[f"t={data}"], output=str(tmp_path / "r"))
    fields.update({k: [x.format(data=data) for x in v] if isinstance(v, list) else v for k, v in change.items()})
    with pytest.raises(ConfigError, match=message):
        validate(EvaluateConfig(**fields))


def test_unknown_labels_and_missing_counts_exit_2(tmp_path, capsys):
    data = make_manifest(tmp_path, [("Unknown plant", "leaf"), ("Other plant", "leaf")])
    model = make_model(str(tmp_path / "m"), [20, 20, 20, 20])
    rc = cli.main(["evaluate", "--model", model, "--test", f"t={data}", "--output", str(tmp_path / "r")])
    assert rc == 2 and "none of its 2 labels is known" in capsys.readouterr().err
    uncounted = make_model(str(tmp_path / "uncounted"), None)
    good = make_manifest(tmp_path / "good", [(NAMES[0], "leaf")])
    rc = cli.main(["evaluate", "--model", uncounted, "--test", f"t={good}", "--output", str(tmp_path / "r")])
    assert rc == 2 and "per-class training counts" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work
    # Without the filter, a model without counts is fine.
    validate(EvaluateConfig(model=uncounted, test=[f"t={good}"], output=str(tmp_path / "r"), min_train_images=0))


def test_filtered_rows_and_unreadable_images_on_ray(tmp_path, counted_model, ray_session):
    rows = [(NAMES[1], "flower")] * 3 + [(NAMES[3], "bark")] * 2 + [(NAMES[0], "leaf")] * 2 + [("Nope", "leaf")]
    data = make_manifest(tmp_path, rows, broken={1})
    out = str(tmp_path / "report")
    summary = evaluate(EvaluateConfig(model=counted_model, test=[f"t={data}"], output=out, tta="center",
                                      bootstrap=50))
    entry = summary["results"][0]
    assert entry["images"] == {"test": 8, "kept": 5, "unknown species": 1, "too few training images": 2,
                               "no label": 0, "unreadable": 1, "scored": 4}
    assert entry["unreadable_by_reason"] == {"not an image": 1}
    table = pads.dataset(os.path.join(out, "predictions"), format="parquet").to_table()
    assert sorted(table.column("scientificName").to_pylist()) == sorted([NAMES[1]] * 3 + [NAMES[3]] * 2)
    assert table.filter(pa.compute.is_valid(table.column("error"))).column("correct@1").to_pylist() == [None]


@pytest.mark.slow
def test_end_to_end_ten_crop_two_sets_two_models(tmp_path, ray_session):
    from plantray.commands.synth import SynthConfig, synthesize

    data = tmp_path / "synth"
    info = synthesize(SynthConfig(out=str(data), species=4, images_per_species=16, test_per_species=4,
                                  unseen_per_species=3, min_pixels=3000, max_pixels=8000))
    labels = Labels(list(info["train_counts"]), train_images=list(info["train_counts"].values()))
    rows = pq.read_table(data / "train.parquet").to_pylist()
    first = {r["scientificName"]: r for r in rows}
    labels.genus = [first[n]["genus"] for n in labels.names]
    labels.family = [first[n]["family"] for n in labels.names]
    trained = str(tmp_path / "trained")
    save_artifact(trained, train_in_process(str(data / "train.parquet"), labels, PRESET, steps=40), labels,
                  make_card("resnet18", labels, PRESET, {"init": "random"}, name="trained"))
    torch.manual_seed(1)
    random_model, _ = build_model("resnet18", len(labels), "random")
    baseline = str(tmp_path / "random")
    save_artifact(baseline, random_model, labels, make_card("resnet18", labels, PRESET, {"init": "random"},
                                                            name="random"))
    out = tmp_path / "report"
    rc = cli.main(["evaluate", "--model", trained, "--compare", baseline, "--test", f"test={data / 'test.parquet'}",
                   "--test", f"unseen={data / 'unseen'}", "--tta", "ten-crop", "--min-train-images", "12",
                   "--bootstrap", "100", "--output", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert {(e["model"], e["test_set"]) for e in report["results"]} == {
        (m, t) for m in ("trained", "random") for t in ("test", "unseen")}
    assert json.loads((out / "_plantray_run.json").read_text())["config"]["tta"] == "ten-crop"
    md = (out / "report.md").read_text()
    assert "trained Top-1" in md and "random Top-5" in md and "| unseen |" in md
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pads.dataset(str(out / "predictions"), format="parquet").to_table().to_pylist()
    # The truth from the test manifest ("test") and the unseen tree's directory names ("unseen"), by path.
    manifest = pq.read_table(data / "test.parquet", columns=["image_uri", "scientificName"]).to_pylist()
    truth = {"test": {str(data / r["image_uri"]): r["scientificName"] for r in manifest},
             "unseen": {str(p): p.parent.name for p in (data / "unseen").glob("*/*.jpg")}}
    assert len(truth["test"]) == 16 and len(truth["unseen"]) == 12
    for e in report["results"]:
        m = e["metrics"]
        scored = [r for r in table if r["model"] == e["model"] and r["test_set"] == e["test_set"]
                  and r["error"] is None]
        # Top-1 and Top-5 from the rows' rankings against the truth read here; with 4 species every ranking
        # holds all 4 names, so Top-5 is exactly 1.
        known = truth[e["test_set"]]
        label = {r["image_uri"]: known[str(data / r["image_uri"])] for r in scored}
        assert len(label) == len(known) and all(sorted(r["topk_scientificName"]) == sorted(labels.names)
                                                for r in scored)
        assert m["top1"] == pytest.approx(np.mean([r["topk_scientificName"][0] == label[r["image_uri"]]
                                                   for r in scored]))
        assert m["top5"] == 1.0
        assert len(scored) == m["images"] == e["images"]["scored"] == {"test": 16, "unseen": 12}[e["test_set"]]
        for k in (1, 5):
            recomputed = sum(r["scientificName"] in r["topk_scientificName"][:k] for r in scored) / len(scored)
            assert m[f"top{k}"] == pytest.approx(recomputed)
            assert m[f"top{k}"] == pytest.approx(np.mean([r[f"correct@{k}"] for r in scored]))
        assert all(len(r["topk_scientificName"]) == 4 and r["tag"] for r in scored if e["test_set"] == "test")
        lo, hi = m["ci95"]["top1"]
        assert lo <= m["top1"] <= hi
    trained_top1 = np.mean([e["metrics"]["top1"] for e in report["results"] if e["model"] == "trained"])
    assert trained_top1 > 0.25  # better than chance (4 species) after a few steps
