"""The synthetic PlantNet-like dataset: layout, manifests, sizes, determinism, names, learnability, S3."""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from plantray.commands.synth import SynthConfig, synthesize
from plantray.config import ConfigError

TINY = {"min_pixels": 4_000, "max_pixels": 12_000}
COLUMNS = ["image_uri", "scientificName", "genus", "family", "taxonID", "tag", "width", "height",
           "occurrenceID"]
SPLITS = ["train", "test", "unseen"]


def tiny_cfg(out, **kw) -> SynthConfig:
    """A fast config: 5 species, a handful of ~8K-pixel images each."""
    args = {"species": 5, "images_per_species": 4, "test_per_species": 2, "unseen_per_species": 1, "seed": 3}
    return SynthConfig(str(out), **{**args, **TINY, **kw})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, SynthConfig, dict]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    cfg = tiny_cfg(out)
    return out, cfg, synthesize(cfg)


def manifest(root: Path, split: str):
    return pq.read_table(root / f"{split}.parquet")


def test_layout_and_manifest_columns(dataset):
    root, cfg, summary = dataset
    for name in [f"{s}.parquet" for s in SPLITS] + ["labels.csv", "README.txt", "_plantray_run.json"]:
        assert (root / name).is_file(), name
    assert "CC0" in (root / "README.txt").read_text()
    for split in SPLITS:
        table = manifest(root, split)
        assert table.column_names == COLUMNS
        types = {c: str(table.schema.field(c).type) for c in COLUMNS}
        assert types == {c: "int32" if c in ("width", "height") else "string" for c in COLUMNS}
        for row in table.to_pylist():
            # Relative to OUT, ImageFolder-style: <split>/<exact scientificName>/<6 digits>.jpg
            assert re.fullmatch(rf"{split}/{re.escape(row['scientificName'])}/\d{{6}}\.jpg", row["image_uri"])
            assert (root / row["image_uri"]).is_file()
            assert row["tag"] in {"habit", "flower", "leaf", "fruit", "bark", "stem"}
    on_disk = sorted(str(p.relative_to(root)) for p in root.glob("*/*/*.jpg"))
    listed = sorted(u for s in SPLITS for u in manifest(root, s).column("image_uri").to_pylist())
    assert on_disk == listed
    ids = [i for s in SPLITS for i in manifest(root, s).column("occurrenceID").to_pylist()]
    assert len(ids) == len(set(ids))
    assert summary["images"] == {"train": 5 * 4, "test": 5 * 2, "unseen": 5 * 1}


def test_counts_per_split(dataset):
    root, cfg, _ = dataset
    labels = [r["scientificName"] for r in csv.DictReader(open(root / "labels.csv"))]
    assert len(labels) == cfg.species
    for split, per in [("train", 4), ("test", 2), ("unseen", 1)]:
        counts = Counter(manifest(root, split).column("scientificName").to_pylist())
        assert counts == {name: per for name in labels}
        for name in labels:
            assert len(list((root / split / name).glob("*.jpg"))) == per


def test_image_sizes_and_aspects_within_bounds(dataset):
    root, cfg, _ = dataset
    for split in SPLITS:
        for row in manifest(root, split).to_pylist():
            with Image.open(root / row["image_uri"]) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                w, h = im.size
            assert (w, h) == (row["width"], row["height"])
            assert 4_000 <= w * h <= 12_000
            assert 0.5 <= w / h <= 2.0


def test_sizes_respect_custom_bounds(tmp_path):
    synthesize(tiny_cfg(tmp_path / "o", species=2, min_aspect=1.2, max_aspect=1.6,
                        min_pixels=5_000, max_pixels=6_000))
    for row in manifest(tmp_path / "o", "train").to_pylist():
        assert 5_000 <= row["width"] * row["height"] <= 6_000
        assert 1.2 <= row["width"] / row["height"] <= 1.6


def test_same_seed_identical_bytes_different_seed_differs(dataset, tmp_path):
    root, cfg, _ = dataset
    again = tmp_path / "again"
    synthesize(tiny_cfg(again))
    for name in ["train.parquet", "test.parquet", "unseen.parquet", "labels.csv"]:
        assert (again / name).read_bytes() == (root / name).read_bytes(), name
    for uri in manifest(root, "train").column("image_uri").to_pylist()[:3]:
        assert (again / uri).read_bytes() == (root / uri).read_bytes()
    other = tmp_path / "other"
    synthesize(tiny_cfg(other, seed=4))
    assert (other / "labels.csv").read_bytes() != (root / "labels.csv").read_bytes()
    assert manifest(other, "train").to_pylist() != manifest(root, "train").to_pylist()


def test_imbalance_gives_long_tailed_train_counts(tmp_path):
    n, a = 20, 1.0
    summary = synthesize(tiny_cfg(tmp_path / "o", species=5, images_per_species=n, test_per_species=1,
                                  unseen_per_species=0, imbalance=a))
    labels = [r["scientificName"] for r in csv.DictReader(open(tmp_path / "o" / "labels.csv"))]
    counts = Counter(manifest(tmp_path / "o", "train").column("scientificName").to_pylist())
    expected = [20, 10, 7, 5, 4]  # max(2, round(20 / (k + 1))) worked out by hand
    assert [counts[name] for name in labels] == expected
    assert list(summary["train_counts"].values()) == expected
    test_counts = Counter(manifest(tmp_path / "o", "test").column("scientificName").to_pylist())
    assert test_counts == dict.fromkeys(labels, 1)
    assert manifest(tmp_path / "o", "unseen").num_rows == 0


def test_names_are_binomials_with_consistent_taxonomy(tmp_path):
    # Taxonomy only: 1-image splits at the smallest size keep this fast for 40 species.
    synthesize(tiny_cfg(tmp_path / "o", species=40, images_per_species=1, test_per_species=0,
                        unseen_per_species=0, min_pixels=1024, max_pixels=1024,
                        min_aspect=1.0, max_aspect=1.0))
    rows = list(csv.DictReader(open(tmp_path / "o" / "labels.csv")))
    names = [r["scientificName"] for r in rows]
    assert names == sorted(names) and len(set(names)) == 40
    family_of, species_in_genus, genera_in_family = {}, Counter(), defaultdict(set)
    for r in rows:
        assert re.fullmatch(r"[A-Z][a-z]+ [a-z]+", r["scientificName"]), r
        assert r["genus"] == r["scientificName"].split()[0]
        assert r["family"].endswith("aceae")
        assert family_of.setdefault(r["genus"], r["family"]) == r["family"], "a genus in two families"
        assert r["taxonID"].isdigit()
        species_in_genus[r["genus"]] += 1
        genera_in_family[r["family"]].add(r["genus"])
    assert len({r["taxonID"] for r in rows}) == 40
    # Genus- and family-level accuracy must mean something: shared genera and shared families.
    assert sum(c >= 2 for c in species_in_genus.values()) >= 5
    assert sum(len(g) >= 2 for g in genera_in_family.values()) >= 3
    # The manifest carries the same taxonomy as labels.csv.
    by_name = {r["scientificName"]: (r["genus"], r["family"], r["taxonID"]) for r in rows}
    for m in manifest(tmp_path / "o", "train").to_pylist():
        assert by_name[m["scientificName"]] == (m["genus"], m["family"], m["taxonID"])


def hue_features(path: Path) -> np.ndarray:
    """Saturation-weighted hue histogram of a 16x16 thumbnail, plus its mean RGB."""
    with Image.open(path) as im:
        small = im.convert("RGB").resize((16, 16), Image.BILINEAR)
    hsv = np.asarray(small.convert("HSV"), dtype=float).reshape(-1, 3) / 255.0
    hist, _ = np.histogram(hsv[:, 0], bins=24, range=(0, 1), weights=hsv[:, 1] * hsv[:, 2])
    rgb = np.asarray(small, dtype=float).reshape(-1, 3).mean(0) / 255.0
    return np.concatenate([hist / max(hist.sum(), 1e-9), rgb * 0.5])


def test_learnable_by_nearest_centroid(tmp_path):
    k = 8
    synthesize(tiny_cfg(tmp_path / "o", species=k, images_per_species=12, test_per_species=6,
                        unseen_per_species=0, seed=11))
    feats = {}
    for split in ["train", "test"]:
        rows = manifest(tmp_path / "o", split).to_pylist()
        feats[split] = (np.stack([hue_features(tmp_path / "o" / r["image_uri"]) for r in rows]),
                        np.array([r["scientificName"] for r in rows]))
    x, y = feats["train"]
    classes = sorted(set(y))
    centroids = np.stack([x[y == c].mean(0) for c in classes])
    xt, yt = feats["test"]
    predicted = np.array(classes)[np.argmin(((xt[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)]
    accuracy = float((predicted == yt).mean())
    assert accuracy >= 3 / k, f"nearest-centroid accuracy {accuracy:.2f} is not 3x chance ({1 / k:.3f})"


@pytest.mark.parametrize("override, word", [
    ({"species": 1}, "species"),
    ({"species": 10_000}, "species"),
    ({"images_per_species": 0}, "images_per_species"),
    ({"test_per_species": -1}, "test_per_species"),
    ({"min_pixels": 20_000, "max_pixels": 10_000}, "min_pixels"),
    ({"min_pixels": 100, "max_pixels": 200}, "min_pixels"),
    ({"min_aspect": 2.0, "max_aspect": 1.0}, "min_aspect"),
    ({"min_aspect": 0.0}, "min_aspect"),
    ({"imbalance": -1.0}, "imbalance"),
    ({"quality": 0}, "quality"),
])
def test_bad_config_is_refused(tmp_path, override, word):
    with pytest.raises(ConfigError, match=word):
        tiny_cfg(tmp_path / "o", **override)
    assert not (tmp_path / "o").exists()


def test_impossible_sizes_refused_before_writing(tmp_path):
    # 1100 pixels at exactly aspect 1 has no integer solution (33*33=1089, 34*34=1156).
    cfg = tiny_cfg(tmp_path / "o", min_pixels=1100, max_pixels=1100, min_aspect=1.0, max_aspect=1.0)
    with pytest.raises(ConfigError, match="widen"):
        synthesize(cfg)
    assert not (tmp_path / "o").exists()


def test_non_empty_out_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="empty"):
        synthesize(tiny_cfg(out, species=2))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthesize(tiny_cfg(empty, species=2, images_per_species=1))["images"]["train"] == 2


def test_writes_to_s3(s3):
    prefix = f"plantray-test/synth-{uuid.uuid4().hex[:8]}"
    cfg = tiny_cfg(f"s3://{prefix}", species=2, images_per_species=2, test_per_species=1,
                   unseen_per_species=1)
    synthesize(cfg)
    s3.invalidate_cache()
    for name in ["train.parquet", "test.parquet", "unseen.parquet", "labels.csv", "README.txt"]:
        assert s3.exists(f"{prefix}/{name}"), name
    with s3.open(f"{prefix}/train.parquet", "rb") as f:
        rows = pq.read_table(f).to_pylist()
    assert len(rows) == 4
    for r in rows:
        with Image.open(io.BytesIO(s3.cat_file(f"{prefix}/{r['image_uri']}"))) as im:
            assert im.size == (r["width"], r["height"])
    with pytest.raises(ConfigError, match="empty"):
        synthesize(cfg)
