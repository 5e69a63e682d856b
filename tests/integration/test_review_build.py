"""``plantray review build`` on real Ray: which rows become cards and in what order, nightly tables, refusals.

The site's data files are read back as JSON here; the page itself is tested in a browser (tests/e2e).
"""

from __future__ import annotations

import collections
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from plantray.cli import main
from plantray.commands.nightly import NightlyConfig, nightly
from tests.helpers import SPECIES, jpeg_bytes, tiny_model, write
from tests.review_data import prediction_row, read_pages, write_predictions

AGREEMENTS = ["different", "same genus", "same species", "no publisher name"]


def mixed_rows(root, n: int = 40) -> list[dict]:
    """Prediction rows of every kind over ``n`` tiny images (every 10th image missing)."""
    rows = []
    for i in range(n):
        if i % 10 != 9:
            write(str(root / f"imgs/{i}.jpg"), jpeg_bytes(20 + i, 24, seed=i))
        kind = i % 4
        values = {"confidence": round(((i * 37) % 100) / 100, 2), "publisher_agreement": AGREEMENTS[i % 4],
                  "prior": ["restrict", None, "no location"][i % 3]}
        if kind == 1:
            values.update(scientificName=SPECIES[i % 4].split()[0], taxonRank="genus")
        elif kind == 2:
            values.update(scientificName=None, taxonRank=None)
        elif kind == 3 and i % 8 == 7:
            values.update(error="http 404", scientificName=None, confidence=None, topk_scientificName=None,
                          topk_confidence=None, taxonRank=None, publisher_agreement=None)
        rows.append(prediction_row(i, **values))
    return rows


def kind(row: dict) -> str:
    if row["error"]:
        return "errors"
    if row["scientificName"] is None:
        return "unknown"
    return "rolled-up" if row["taxonRank"] == "genus" else "species"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    rows = mixed_rows(root)
    return root, rows, write_predictions(str(root / "preds"), rows)


def build(preds: str, out: str, *flags: str) -> list[dict]:
    assert main(["review", "build", preds, "--out", out, "--image-base", os.path.dirname(preds), *flags]) == 0
    return read_pages(out)


def test_selection_order_and_limit(ray_session, mixed, tmp_path):
    root, rows, preds = mixed
    cards = build(preds, str(tmp_path / "a"), "--select", "unknown,rolled-up", "--select", "confidence=:0.6",
                  "--order", "confidence", "--limit", "6", "--page-rows", "4")
    chosen = [r for r in rows if kind(r) in ("unknown", "rolled-up") and r["confidence"] <= 0.6]
    chosen.sort(key=lambda r: (r["confidence"], r["identificationID"]))
    assert [c["key"] for c in cards] == [r["identificationID"] for r in chosen[:6]]
    assert [c["n"] for c in cards] == list(range(6))
    assert len(os.listdir(tmp_path / "a" / "data")) == 2 + 2  # two page files, labels.js, site.js


def test_default_order_puts_disagreements_first_and_keeps_failed_rows(ray_session, mixed, tmp_path):
    root, rows, preds = mixed
    cards = build(preds, str(tmp_path / "b"), "--select", "agreement=different,same genus", "--select", "prior=applied")
    chosen = [r for r in rows if r["publisher_agreement"] in ("different", "same genus") and r["prior"] == "restrict"]
    rank = {"different": 0, "same genus": 1}
    chosen.sort(key=lambda r: (r["error"] is not None, rank[r["publisher_agreement"]], r["confidence"]))
    assert [c["key"] for c in cards] == [r["identificationID"] for r in chosen]
    everything = build(preds, str(tmp_path / "c"))
    assert len(everything) == len(rows)  # failed rows and missing pictures included
    missing = [c for c in everything if c["images"][0].get("thumbError")]
    assert {c["images"][0]["uri"] for c in missing} == {f"imgs/{i}.jpg" for i in range(9, 40, 10)}
    assert {c["images"][0]["thumbError"] for c in missing} == {"not found"}


def test_sample_per_species_is_stratified_and_seeded(ray_session, mixed, tmp_path):
    root, rows, preds = mixed
    first = build(preds, str(tmp_path / "d"), "--sample-per-species", "2", "--seed", "7")
    again = build(preds, str(tmp_path / "e"), "--sample-per-species", "2", "--seed", "7")
    strata = collections.Counter(r["scientificName"] or (f"error {r['error']}" if r["error"] else "unknown")
                                 for r in rows)
    shown = collections.Counter(c.get("name") or (f"error {c['error']}" if c.get("error") else "unknown")
                                for c in first)
    assert shown == {name: min(2, n) for name, n in strata.items()}
    assert [c["key"] for c in first] == [c["key"] for c in again]


def test_nightly_table_shows_the_newest_prediction_per_image(ray_session, tmp_path):
    m1, m2 = str(tmp_path / "m1"), str(tmp_path / "m2")
    tiny_model(m1, seed=0)
    tiny_model(m2, seed=1)
    uris = [write(str(tmp_path / f"imgs/{i}.jpg"), jpeg_bytes(30 + i, 30, seed=i)) for i in range(4)]
    pq.write_table(pa.table({"image_uri": uris}), tmp_path / "in.parquet")
    table = str(tmp_path / "table")
    for model, run in ((m1, "day1"), (m2, "day2")):
        nightly(NightlyConfig(model=model, input=str(tmp_path / "in.parquet"), table=table, run_id=run,
                              decode_batch_size=4))
    committed = DeltaTable(table).to_pyarrow_table().to_pylist()
    assert len(committed) == 8
    newest = {r["identificationID"] for r in committed if r["run_id"] == "day2"}
    cards = build(table, str(tmp_path / "site"))
    assert {c["key"] for c in cards} == newest and len(cards) == 4
    assert all(c["images"][0].get("thumb") for c in cards)


def test_refusals_before_any_work(tmp_path, capsys, mixed):
    root, rows, preds = mixed

    def refused(*args: str) -> str:
        assert main(["review", "build", *args]) == 2
        return capsys.readouterr().err

    assert "does not exist" in refused(str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert "--limit 0 must be >= 1" in refused(preds, "--out", str(tmp_path / "x"), "--limit", "0")
    assert "not a selection" in refused(preds, "--out", str(tmp_path / "x"), "--select", "colour=red")
    foreign = tmp_path / "foreign"
    write(str(foreign / "notes.txt"), b"mine")
    assert "not a plantray review site" in refused(preds, "--out", str(foreign), "--overwrite")
    assert os.listdir(foreign) == ["notes.txt"]
    no_ids = str(tmp_path / "noids")
    os.makedirs(no_ids)
    pq.write_table(pa.Table.from_pylist([{"image_uri": "a.jpg", "error": None}]), os.path.join(no_ids, "p.parquet"))
    assert "lacks identificationID" in refused(no_ids, "--out", str(tmp_path / "x"))
    partial = tmp_path / "partial"
    write(str(partial / "_plantray_progress.json"), b'{"chunks": 2}')
    write(str(partial / "chunk-000000-a.parquet"), open(os.path.join(preds, "part-0.parquet"), "rb").read())
    assert "partial plantray classify output" in refused(str(partial), "--out", str(tmp_path / "x"))
    occurrences = tmp_path / "occ_only"
    os.makedirs(occurrences)
    pq.write_table(pa.table({"gbifID": ["1"], "images_used": [1]}), occurrences / "o.parquet")
    assert "pass --images" in refused(str(occurrences), "--out", str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")  # nothing written by a refused run


def test_rebuild_needs_overwrite_and_removes_only_its_own_files(ray_session, mixed, tmp_path, capsys):
    root, rows, preds = mixed
    out = tmp_path / "site"
    build(preds, str(out), "--limit", "3")
    assert main(["review", "build", preds, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    write(str(out / "thumbs" / "keep-me-not.txt"), b"x")  # inside the site's own folder: goes with it
    build(preds, str(out), "--limit", "5", "--overwrite")
    assert len(read_pages(str(out))) == 5 and not os.path.exists(out / "thumbs" / "keep-me-not.txt")



def test_site_on_object_storage(ray_session, s3, mixed):
    root, rows, preds = mixed
    out = "s3://plantray-test/review-site"
    assert main(["review", "build", preds, "--out", out, "--image-base", str(root), "--limit", "4"]) == 0
    for name in ("index.html", "decisions.js", "review.js", "review.css", "data/site.js", "data/labels.js"):
        assert s3.exists(f"plantray-test/review-site/{name}")
    text = s3.cat("plantray-test/review-site/data/page-000000.js").decode("ascii")
    cards = json.loads(re.fullmatch(r"PlantrayReview\.page\(0,(.*)\);\n", text, re.S).group(1))
    assert len(cards) == 4
    for card in cards:
        image = card["images"][0]
        assert "link" not in image or not image["link"]  # local images: no link from a site in a bucket
        if "thumb" in image:
            assert s3.exists(f"plantray-test/review-site/{image['thumb']}")
        else:
            assert image["thumbError"] == "not found"


def test_an_empty_selection_builds_an_empty_site(ray_session, mixed, tmp_path):
    root, rows, preds = mixed
    assert build(preds, str(tmp_path / "empty"), "--select", "species=Nothing", "--sample-per-species", "2") == []
    site = (tmp_path / "empty" / "data" / "site.js").read_text()
    assert '"cards":0' in site and '"pages":0' in site
