"""Location priors end to end on Ray: classify/evaluate with a checklist (CSV and DwC-A), counts, refusals.

The checks read the Parquet with pyarrow and the checklist CSV with the csv module, not with plantray.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from plantray.cli import main
from tests.dwca_fixtures import Media, Occ, write_gbif, zip_dir
from tests.helpers import tiny_model

NO_COUNTRY, UNCOVERED = {1, 6}, {3}  # manifest rows without a country, and in a country no checklist lists


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic data with ranges (6 species, 6 countries), a random tiny model and a located manifest."""
    from plantray.commands.synth import SynthConfig, synthesize

    root = tmp_path_factory.mktemp("prior") / "synth"
    info = synthesize(SynthConfig(out=str(root), species=6, images_per_species=1, test_per_species=3,
                                  unseen_per_species=0, countries=6, min_pixels=1500, max_pixels=2500))
    names = list(info["train_counts"])
    model = str(root.parent / "model")
    tiny_model(model, names=names, counts=[20] * len(names))
    test = pq.read_table(root / "test.parquet")
    countries = test.column("countryCode").to_pylist()
    for i in NO_COUNTRY:
        countries[i] = None if i % 2 else ""
    for i in UNCOVERED:
        countries[i] = "ZZ"
    located = test.set_column(test.schema.get_field_index("countryCode"), "countryCode", pa.array(countries))
    pq.write_table(located, root / "located.parquet")
    return root, model, names


def read_checklist_csv(path) -> dict[str, set[str]]:
    """country -> species, read with the csv module."""
    species = defaultdict(set)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            species[row["countryCode"]].add(row["scientificName"])
    return species


def classify(root, model, out, *extra) -> dict:
    assert main(["classify", "--model", model, "--input", str(root / "located.parquet"), "--output", str(out),
                 "--num-actors", "1", "--top-k", "3", "--checklist", str(root / "checklist.csv"), *extra]) == 0
    return json.loads((out / "_plantray_run.json").read_text())["summary"]


def test_restrict_never_names_a_species_absent_from_the_country(ray_session, data, tmp_path):
    root, model, names = data
    summary = classify(root, model, tmp_path / "out", "--prior", "restrict")
    present = read_checklist_csv(root / "checklist.csv")
    dataset = pads.dataset(str(tmp_path / "out"), format="parquet")
    table = dataset.to_table()
    rows = table.to_pylist()
    assert len(rows) == 18 and all(r["error"] is None for r in rows)
    uri_index = {u: i for i, u in enumerate(pq.read_table(root / "located.parquet").column("image_uri").to_pylist())}
    for r in rows:
        i = uri_index[r["image_uri"]]
        if i in NO_COUNTRY | UNCOVERED:
            assert r["prior"] == ("no location" if i in NO_COUNTRY else "region not covered")
            assert "location prior not applied" in r["identificationRemarks"]
            continue
        allowed = present[r["countryCode"]]
        assert r["prior"] == "restrict" and r["scientificName"] in allowed
        # Absent species are dropped from the ranking too, and what is left sums to at most 1.
        assert r["topk_scientificName"] and set(r["topk_scientificName"]) <= allowed
        assert len(r["topk_scientificName"]) == min(3, len(allowed & set(names)))
        assert all(p > 0 for p in r["topk_confidence"]) and sum(r["topk_confidence"]) <= 1 + 1e-5
        assert r["identificationRemarks"].endswith("restricted to the checklist species of the occurrence's region")
    counts = summary["prior"]["counts"]
    assert counts == {"applied": 18 - 3, "no location": 2, "region not covered": 1}
    meta = json.loads(dataset.schema.metadata[b"plantray.prior"])
    assert meta["mode"] == "restrict" and meta["checklist"].endswith("checklist.csv") and meta["species_matched"] == 6


def test_checklist_archive_gives_the_csv_results_and_reweight_runs(ray_session, data, tmp_path):
    root, model, _ = data
    classify(root, model, tmp_path / "csv", "--prior", "restrict")
    assert main(["classify", "--model", model, "--input", str(root / "located.parquet"), "--output",
                 str(tmp_path / "dwca"), "--num-actors", "1", "--top-k", "3", "--checklist",
                 str(root / "checklist-dwca.zip"), "--prior", "restrict"]) == 0
    cols = ["image_uri", "scientificName", "topk_scientificName", "prior"]
    a, b = (pads.dataset(str(tmp_path / d), format="parquet").to_table(columns=cols).sort_by("image_uri")
            for d in ("csv", "dwca"))
    assert a.equals(b)
    summary = classify(root, model, tmp_path / "rw", "--prior", "reweight", "--prior-floor", "0.001")
    table = pads.dataset(str(tmp_path / "rw"), format="parquet").to_table()
    assert summary["prior"]["mode"] == "reweight" and summary["prior"]["floor"] == 0.001
    assert pc.sum(pc.equal(table.column("prior"), "reweight")).as_py() == 15


def test_evaluate_with_prior_at_least_as_accurate(ray_session, data, tmp_path):
    root, model, names = data
    out = tmp_path / "report"
    assert main(["evaluate", "--model", model, "--test", f"t={root / 'located.parquet'}", "--tta", "center",
                 "--top-k", "3", "--min-train-images", "0", "--bootstrap", "0", "--num-actors", "1",
                 "--checklist", str(root / "checklist.csv"), "--prior", "restrict", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    (entry,) = report["prior"]["results"]
    scored = pads.dataset(str(out / "predictions"), format="parquet").to_table().to_pylist()
    assert len(scored) == 18
    for k in (1, 3):
        without = sum(r["scientificName"] in r["topk_scientificName"][:k] for r in scored) / 18
        with_prior = sum(r["scientificName"] in r["prior_topk_scientificName"][:k] for r in scored) / 18
        assert entry["without"][f"top{k}"] == pytest.approx(without)
        assert entry["with"][f"top{k}"] == pytest.approx(with_prior)
        assert with_prior >= without
        assert report["results"][0]["metrics"][f"top{k}"] == pytest.approx(without)
    assert entry["counts"] == {"restrict": 15, "no location": 2, "region not covered": 1}
    md = (out / "report.md").read_text()
    assert "## Location prior" in md and "Top-1 with" in md


def test_archive_countrycode_reaches_the_prior(ray_session, data, tmp_path):
    root, model, names = data
    test = pq.read_table(root / "located.parquet").to_pylist()[:4]
    occs = [Occ(str(i), f"urn:o:{i}", r["scientificName"], countryCode=r["countryCode"] or "")
            for i, r in enumerate(test)]
    for i, r in enumerate(test):  # file:// URLs without the species' space
        (tmp_path / f"{i}.jpg").write_bytes((root / r["image_uri"]).read_bytes())
    media = [Media(str(i), (tmp_path / f"{i}.jpg").as_uri()) for i in range(len(test))]
    archive = zip_dir(write_gbif(str(tmp_path / "a"), occs, media), str(tmp_path / "occ.zip"))
    out = tmp_path / "out"
    assert main(["classify", "--model", model, "--input", archive, "--output", str(out), "--num-actors", "1",
                 "--checklist", str(root / "checklist.csv"), "--prior", "restrict"]) == 0
    rows = {r["gbifID"]: r for r in pads.dataset(str(out), format="parquet").to_table().to_pylist()}
    present = read_checklist_csv(root / "checklist.csv")
    for i, r in enumerate(test):
        got = rows[str(i)]
        assert got["countryCode"] == (r["countryCode"] or None)
        expected = "no location" if i in NO_COUNTRY else "region not covered" if i in UNCOVERED else "restrict"
        assert got["prior"] == expected
        if expected == "restrict":
            assert got["scientificName"] in present[r["countryCode"]]


def test_nightly_counts_the_prior(ray_session, data, tmp_path):
    from plantray.commands.nightly import NightlyConfig, nightly

    root, model, _ = data
    table = str(tmp_path / "table")
    summary = nightly(NightlyConfig(model=model, input=str(root / "located.parquet"), table=table, run_id="r1",
                                    num_actors=1, checklist=str(root / "checklist.csv"), prior="restrict"))
    assert summary["counts"]["prior"]["counts"] == {"applied": 15, "no location": 2, "region not covered": 1}
    rows = DeltaTable(table).to_pyarrow_table().to_pylist()  # the committed table, read by delta-rs itself
    present = read_checklist_csv(root / "checklist.csv")
    assert len(rows) == 18
    for r in rows:
        if r["prior"] == "restrict":
            assert r["scientificName"] in present[r["countryCode"]]


@pytest.mark.subprocess
@pytest.mark.parametrize("case, needle", [
    ("columns", "lacks column(s) ['countryCode']"),
    ("species", "is a label of the model"),
    ("no-checklist", "--prior restrict needs --checklist"),
    ("region-column", "--region-column 'country'"),
])
def test_bad_checklist_exits_2(data, tmp_path, case, needle):
    root, model, _ = data
    checklist = tmp_path / "c.csv"
    checklist.write_text({"columns": "scientificName,country\nRosa canina,FR\n",
                          "species": "scientificName,countryCode\nPicea abies,NO\n"}.get(case, "x"))
    args = ["classify", "--model", model, "--input", str(root / "located.parquet"), "--output",
            str(tmp_path / "out"), "--prior", "restrict"]
    if case != "no-checklist":
        args += ["--checklist", str(checklist if case != "region-column" else root / "checklist.csv")]
    if case == "region-column":
        args += ["--region-column", "country"]
    proc = subprocess.run([sys.executable, "-m", "plantray", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert not (tmp_path / "out").exists()
