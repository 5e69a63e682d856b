"""An honest "unknown": classify's --min-confidence, synth's out-of-distribution sets and evaluate --ood.

Real Ray, real files, Parquet read back with pyarrow. Expected ranks are worked out in the test from the
full probability vector the first run writes (top-k = every class), not by plantray's roll-up.
"""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import torch

from plantray.commands import classify as classify_cmd
from plantray.commands import nightly as nightly_cmd
from plantray.commands.classify import ClassifyConfig, classify
from plantray.commands.evaluate import EvaluateConfig, evaluate, validate_ood
from plantray.commands.synth import SynthConfig, synthesize
from plantray.config import ConfigError
from plantray.images.presets import EvalPreset
from plantray.model.artifact import make_card, save_artifact
from plantray.model.labels import Labels
from plantray.model.network import build_model
from tests.helpers import jpeg_bytes, read_output, write

SPECIES = ["Quercus robur", "Quercus petraea", "Fagus sylvatica", "Rosa canina", "Rosa arvensis", "Prunus avium"]
GENUS = [n.split()[0] for n in SPECIES]
FAMILY = ["Fagaceae"] * 3 + ["Rosaceae"] * 3


def save_model(uri: str, names: list[str], genus: list[str], family: list[str], seed: int = 0) -> str:
    """A random resnet18 at 32 px with the given taxonomy; its head is scaled x10 so that the softmax differs
    from image to image (a fresh head gives every image nearly the same, flat probabilities)."""
    torch.manual_seed(seed)
    labels = Labels(list(names), list(genus), list(family))
    model, provenance = build_model("resnet18", len(labels), "random")
    with torch.no_grad():
        model.fc.weight.mul_(10)
    save_artifact(uri, model, labels, make_card("resnet18", labels, EvalPreset(crop_size=32, resize_size=36),
                                                provenance, version="test"))
    return uri


def best_sums(probs: dict[str, float]) -> tuple[float, tuple[str, float], tuple[str, float]]:
    """(top species probability, (best genus, its sum), (best family, its sum)) by plain summation."""
    genus, family = {}, {}
    for name, p in probs.items():
        i = SPECIES.index(name)
        genus[GENUS[i]] = genus.get(GENUS[i], 0.0) + p
        family[FAMILY[i]] = family.get(FAMILY[i], 0.0) + p
    return max(probs.values()), max(genus.items(), key=lambda kv: kv[1]), max(family.items(), key=lambda kv: kv[1])


def pick_threshold(rows: list[tuple]) -> float:
    """A threshold (midway between two observed sums, far from all) giving both genus rows and unknown rows."""
    values = sorted({v for s, g, f in rows for v in (s, g[1], f[1])})
    best, best_score = None, 0
    for lo, hi in zip(values, values[1:]):
        if hi - lo < 2e-4:  # too close to tell float32 sums apart
            continue
        t = (lo + hi) / 2
        genus = sum(s < t <= g[1] for s, g, f in rows)
        unknown = sum(f[1] < t for s, g, f in rows)
        if min(genus, unknown) > best_score:
            best, best_score = t, min(genus, unknown)
    assert best is not None, "the random model gave no threshold with both genus and unknown rows"
    return best


def test_min_confidence_withholds_names_and_counts_unknown(ray_session, tmp_path):
    model = save_model(str(tmp_path / "model"), SPECIES, GENUS, FAMILY)
    paths = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(40 + i, 44, seed=100 + i)) for i in range(24)]
    uris = paths + [str(tmp_path / "gone.jpg")]  # a failed row is never "unknown"
    pq.write_table(pa.table({"image_uri": uris, "gbifID": [f"g{i // 2}" for i in range(len(uris))]}),
                   tmp_path / "m.parquet")
    base = dict(model=model, input=str(tmp_path / "m.parquet"), top_k=6, precision="fp32")
    classify(ClassifyConfig(output=str(tmp_path / "plain"), **base))
    plain = {r["image_uri"]: r for r in read_output(str(tmp_path / "plain")).to_pylist() if r["error"] is None}
    sums = {u: best_sums(dict(zip(r["topk_scientificName"], r["topk_confidence"]))) for u, r in plain.items()}
    t = pick_threshold(list(sums.values()))

    out = str(tmp_path / "withheld")
    summary = classify(ClassifyConfig(output=out, min_confidence=t, aggregate="occurrence", **base))
    table = read_output(out)
    seen = {"species": 0, "genus": 0, "family": 0, None: 0}
    for r in table.to_pylist():
        if r["error"] is not None:
            assert r["taxonRank"] is None and r["identificationRemarks"] is None
            continue
        s, (genus, g), (family, f) = sums[r["image_uri"]]
        assert len(r["topk_scientificName"]) == 6 and r["topk_confidence"] == plain[r["image_uri"]]["topk_confidence"]
        if s >= t:
            expected = ("species", r["topk_scientificName"][0], s)
        elif g >= t:
            expected = ("genus", genus, g)
        elif f >= t:
            expected = ("family", family, f)
        else:
            expected = (None, None, f)  # the coarsest rank's best probability stays in confidence
        seen[expected[0]] += 1
        assert (r["taxonRank"], r["scientificName"]) == expected[:2]
        assert r["confidence"] == pytest.approx(expected[2], abs=1e-5)
        if expected[0] is None:
            assert r["genus"] is None and r["family"] is None and r["kingdom"] is None
            assert "unknown" in r["identificationRemarks"] and f"--min-confidence {t:.3f}" in r["identificationRemarks"]
            assert f"best {f:.3f}" in r["identificationRemarks"]
        else:
            assert r["kingdom"] == "Plantae" and "unknown" not in r["identificationRemarks"]
        if expected[0] == "genus":
            assert r["genus"] == genus and r["family"] == FAMILY[GENUS.index(genus)]
    assert seen["genus"] >= 1 and seen[None] >= 1
    # The summary's count against one computed from the Parquet with pyarrow
    withheld = pc.and_(pc.is_null(table.column("error")), pc.is_null(table.column("taxonRank")))
    assert summary["unknown"] == pc.sum(withheld.cast("int64")).as_py() == seen[None]
    assert summary["by_rank"] == {k: v for k, v in seen.items() if k and v}
    assert summary["min_confidence"] == str(t)
    assert f"unknown: {seen[None]:>8}  no species, genus or family reached --min-confidence {t}" in \
        classify_cmd.format_summary(summary)
    assert json.loads((tmp_path / "withheld" / "_plantray_run.json").read_text())["summary"]["unknown"] == seen[None]
    # Occurrences: no name when the combined top-1 is below T, and counted
    occ = read_output(out + "_occurrences").to_pylist()
    named = [o for o in occ if o["scientificName"] is not None]
    assert all(o["confidence"] >= t for o in named)
    nameless = [o for o in occ if o["scientificName"] is None and o["images_used"] > 0]
    assert all(o["confidence"] < t for o in nameless) and summary["occurrences"]["unknown"] == len(nameless)


def test_nightly_summary_prints_the_unknown_count():
    summary = {"status": "committed", "run_id": "n1", "commit_seq": 3, "table": "/t", "timings": {"classify_s": 1.0},
               "counts": {"new": 10, "input_rows": 12, "skipped_done": 2, "failed": 1, "failures_by_reason": {},
                          "by_rank": {"species": 5, "genus": 2}, "unknown": 2, "min_confidence": "0.5"}}
    text = nightly_cmd.format_summary(summary)
    assert "identified at rank: species 5, genus 2" in text
    assert "unknown:        2  no species, genus or family reached --min-confidence 0.5" in text


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5])
def test_min_confidence_out_of_range_is_refused(tmp_path, value):
    model = save_model(str(tmp_path / "model"), SPECIES, GENUS, FAMILY)
    write(f"{tmp_path}/imgs/0.jpg", jpeg_bytes())
    with pytest.raises(ConfigError, match="--min-confidence"):
        classify(ClassifyConfig(model=model, input=str(tmp_path / "imgs"), output=str(tmp_path / "o"),
                                min_confidence=value))


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    summary = synthesize(SynthConfig(str(root), species=4, images_per_species=2, test_per_species=3,
                                     unseen_per_species=0, seed=5, min_pixels=4_000, max_pixels=9_000,
                                     ood_noplant=6, ood_species=2, ood_per_species=3))
    return root, summary


def test_synth_writes_out_of_distribution_sets(synth_data):
    root, summary = synth_data
    labels = {r["scientificName"] for r in csv.DictReader(open(root / "labels.csv"))}
    in_splits = {n for s in ("train", "test", "unseen") for n in pq.read_table(root / f"{s}.parquet")
                 .column("scientificName").to_pylist()}
    noplant = pq.read_table(root / "ood_noplant.parquet").to_pylist()
    species = pq.read_table(root / "ood_species.parquet").to_pylist()
    assert len(noplant) == 6 and all(r["scientificName"] is None for r in noplant)
    assert {r["tag"] for r in noplant} == {"noise", "texture", "geometric"}
    novel = {r["scientificName"] for r in species}
    assert len(species) == 6 and len(novel) == 2 and not novel & (labels | in_splits)
    for r in noplant + species:
        assert (root / r["image_uri"]).is_file()
    assert sorted(p.parent.name for p in (root / "ood" / "species").glob("*/*.jpg")) == sorted(
        r["scientificName"] for r in species)
    assert summary["ood"]["ood_noplant"]["images"] == 6 and summary["ood"]["ood_species"]["species"] == sorted(novel)


def pairs_auroc(known, unknown) -> float:
    wins = sum(1.0 if k > u else 0.5 if k == u else 0.0 for k, u in itertools.product(known, unknown))
    return wins / (len(known) * len(unknown))


def test_evaluate_ood_reports_auroc_and_fpr95(ray_session, tmp_path, synth_data):
    root, _ = synth_data
    rows = list(csv.DictReader(open(root / "labels.csv")))
    model = save_model(str(tmp_path / "model"), [r["scientificName"] for r in rows], [r["genus"] for r in rows],
                       [r["family"] for r in rows])
    out = tmp_path / "report"
    summary = evaluate(EvaluateConfig(model=model, test=[f"synth={root / 'test.parquet'}"], output=str(out),
                                      ood=[f"noplant={root / 'ood_noplant.parquet'}",
                                           f"newspecies={root / 'ood' / 'species'}"],
                                      tta="center", min_train_images=0, bootstrap=0, precision="fp32"))
    report = json.loads((out / "report.json").read_text())
    assert [e["ood_set"] for e in report["ood"]] == ["noplant", "newspecies"]
    preds = pads.dataset(str(out / "predictions" / "model_0"), format="parquet").to_table().to_pylist()
    scores = {}
    for r in preds:
        assert r["error"] is None
        scores.setdefault(r["test_set"], []).append(r["topk_confidence"][0])
    assert len(scores["synth"]) == 12 and len(scores["noplant"]) == 6 and len(scores["newspecies"]) == 6
    for e in report["ood"]:
        assert e["score"] == "max_softmax_probability"
        assert 0.0 <= e["auroc"] <= 1.0 and 0.0 <= e["fpr_at_95_tpr"] <= 1.0
        assert (e["known_images"], e["unknown_images"]) == (12, 6)
        assert e["auroc"] == pytest.approx(pairs_auroc(scores["synth"], scores[e["ood_set"]]), abs=1e-9)
        known = np.array(scores["synth"])
        # 95% of 12 known images is 11.4: the threshold must keep 12 of them, i.e. it is the lowest known score
        assert e["threshold_at_95_tpr"] == pytest.approx(known.min())
        assert e["fpr_at_95_tpr"] == pytest.approx(np.mean(np.array(scores[e["ood_set"]]) >= known.min()))
    # Test-set metrics see only the test set's rows
    assert summary["results"][0]["images"]["scored"] == 12
    md = (out / "report.md").read_text()
    assert "## Known vs unknown (--ood)" in md and "FPR@95% TPR" in md and "noplant" in md


@pytest.mark.parametrize("ood, message", [(["noplant"], "is not NAME=DATA"), (["a=x", "a=y"], "given twice"),
                                          (["synth=x.parquet"], "also --test names")])
def test_bad_ood_specs_are_refused(tmp_path, ood, message):
    cfg = EvaluateConfig(model="m", test=["synth=t.parquet"], output=str(tmp_path / "o"), ood=ood)
    with pytest.raises(ConfigError, match=message):
        validate_ood(cfg)
