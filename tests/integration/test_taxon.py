"""Taxon identifiers: ``plantray labels match`` from a checklist archive, predictions carrying them, the
publisher's taxonID kept as ``input_taxonID``, ``publisher_agreement``, and the machine-identification
metadata in Parquet and in ``plantray export dwca``."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import xml.etree.ElementTree as ET
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray.cli import main
from plantray.model import taxa
from plantray.model.labels import read_labels
from tests.helpers import jpeg_bytes, read_output, write

DWC = "http://rs.tdwg.org/dwc/terms/"
# Camtrap DP's method and probability have no term URI: plantray declares them in its own documented namespace.
CAMTRAP = "https://github.com/plantray/plantray/blob/main/docs/terms.md#"
NAMES = ["Quercus robur", "Quercus pedunculata", "Abies alba", "Rosa canina", "Bellis perennis"]
# The checklist, as the GBIF Backbone's Taxon.tsv lays it out (a subset of its columns, in its order).
HEADER = ["taxonID", "scientificNameID", "acceptedNameUsageID", "scientificName", "canonicalName", "taxonRank",
          "taxonomicStatus", "kingdom", "family", "genus"]
TAXA = [
    ["2878688", "urn:lsid:ipni.org:names:296345-1", "", "Quercus robur L.", "Quercus robur", "species", "accepted",
     "Plantae", "Fagaceae", "Quercus"],
    ["7287337", "urn:lsid:ipni.org:names:296100-1", "2878688", "Quercus pedunculata Ehrh.", "Quercus pedunculata",
     "species", "synonym", "Plantae", "Fagaceae", "Quercus"],
    # a homonym: two accepted plants named Abies alba
    ["2685484", "", "", "Abies alba Mill.", "Abies alba", "species", "accepted", "Plantae", "Pinaceae", "Abies"],
    ["9999001", "", "", "Abies alba Foo", "Abies alba", "species", "accepted", "Plantae", "Pinaceae", "Abies"],
    # the same name in another kingdom is not a homonym for a plant model
    ["8395064", "", "", "Rosa canina L.", "Rosa canina", "species", "accepted", "Plantae", "Rosaceae", "Rosa"],
    ["5000001", "", "", "Rosa canina Zoo, 1900", "Rosa canina", "species", "accepted", "Animalia", "Rosidae", "Rosa"],
    ["3000001", "", "", 'Quercus "odd" name', "Quercus odd", "species", "doubtful", "Plantae", "Fagaceae", "Quercus"],
]
# What the labels should carry, worked out by hand from TAXA: (taxonID, scientificNameID, accepted, genus, family)
EXPECTED = {
    "Quercus robur": ("2878688", "urn:lsid:ipni.org:names:296345-1", "Quercus robur L.", "Quercus", "Fagaceae"),
    "Quercus pedunculata": ("2878688", "urn:lsid:ipni.org:names:296100-1", "Quercus robur L.", "Quercus",
                            "Fagaceae"),
    "Abies alba": ("", "", "", "", ""),
    "Rosa canina": ("8395064", "", "Rosa canina L.", "Rosa", "Rosaceae"),
    "Bellis perennis": ("", "", "", "", ""),
}
META = f"""<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1"
        rowType="{DWC}Taxon">
    <files><location>Taxon.tsv</location></files>
    <id index="0"/>
{chr(10).join(f'    <field index="{i}" term="{DWC}{t}"/>' for i, t in enumerate(HEADER))}
  </core>
</archive>
"""


def taxon_tsv(filler: int = 0) -> str:
    """Taxon.tsv text; ``filler`` unrelated rows come first, so the matches lie deep in a streamed file."""
    rows = [[str(10_000_000 + i), "", "", f"Fillerus {i}us L.", f"Fillerus {i}us", "species", "accepted",
             "Plantae", "Fillaceae", "Fillerus"] for i in range(filler)]
    return "\n".join("\t".join(r) for r in [HEADER, *rows, *TAXA]) + "\n"


def backbone_zip(path: str, filler: int = 0) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.xml", META)
        zf.writestr("Taxon.tsv", taxon_tsv(filler))
    return path


def labels_csv(path: str) -> str:
    """An old-style labels file (scientificName, genus, family) such as earlier plantray versions wrote."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scientificName", "genus", "family"])
        w.writerows([n, n.split()[0], "Old" + n[0]] for n in NAMES)
    return path


def read_csv(path: str) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["scientificName"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("kind", ["archive", "tsv"])
def test_labels_match_fills_ids_and_reports(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.setattr(taxa, "_BLOCK", 4096)  # many streamed batches from a small file
    if kind == "archive":
        source = backbone_zip(str(tmp_path / "backbone.zip"), filler=3000)
    else:
        source = write(str(tmp_path / "Taxon.tsv"), taxon_tsv(filler=3000).encode())
    labels, out = labels_csv(str(tmp_path / "labels.csv")), str(tmp_path / "matched.csv")
    assert main(["labels", "match", "--labels", labels, "--checklist", source, "--output", out]) == 0
    rows = read_csv(out)
    assert list(rows) == NAMES  # names and order unchanged
    for name, (tid, sid, accepted, genus, family) in EXPECTED.items():
        r = rows[name]
        assert (r["taxonID"], r["scientificNameID"], r["acceptedNameUsage"]) == (tid, sid, accepted), name
        # unmatched labels keep the genus and family they had
        assert (r["genus"], r["family"]) == ((genus, family) if tid else (name.split()[0], "Old" + name[0])), name
    report = json.loads(open(out + ".match.json").read())["summary"]
    assert report["matched"] == ["Quercus robur", "Quercus pedunculata", "Rosa canina"]
    assert report["synonyms"] == [{"name": "Quercus pedunculata", "accepted": "Quercus robur L.",
                                   "taxonID": "2878688"}]
    assert report["homonyms"] == [{"name": "Abies alba", "candidates": ["2685484", "9999001"]}]
    assert report["unmatched"] == ["Bellis perennis"]
    # every checklist row counted once (pass 2, for the synonym's accepted taxon, is not counted again)
    assert report["rows_read"] == 3000 + len(TAXA) and report["rows_skipped"] == 0
    printed = capsys.readouterr().out
    assert "homonym:   Abies alba" in printed and "unmatched: Bellis perennis" in printed
    # plantray reads the filled file back; the old file still loads
    assert read_labels(out).taxon_id == [EXPECTED[n][0] or None for n in NAMES]
    assert read_labels(labels).taxon_id == [None] * len(NAMES)


def test_labels_match_refuses_a_table_without_taxon_columns(tmp_path):
    bad = write(str(tmp_path / "names.tsv"), b"name\tfamily\nQuercus robur\tFagaceae\n")
    labels = labels_csv(str(tmp_path / "labels.csv"))
    assert main(["labels", "match", "--labels", labels, "--checklist", bad]) == 2
    assert main(["labels", "match", "--labels", labels, "--checklist", str(tmp_path / "none.tsv")]) == 2
    occurrence_core = str(tmp_path / "occ.zip")
    with zipfile.ZipFile(occurrence_core, "w") as zf:
        zf.writestr("meta.xml", META.replace(f"{DWC}Taxon", f"{DWC}Occurrence"))
        zf.writestr("Taxon.tsv", taxon_tsv())
    assert main(["labels", "match", "--labels", labels, "--checklist", occurrence_core]) == 2


# --- predictions ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matched_model(tmp_path_factory):
    """``model create`` with a DOI and a URL, then ``labels match`` on the model's own labels.csv."""
    root = tmp_path_factory.mktemp("taxon")
    labels, model = labels_csv(str(root / "labels.csv")), str(root / "model")
    assert main(["model", "create", model, "--labels", labels, "--arch", "resnet18", "--image-size", "32",
                 "--version", "t1", "--doi", "10.5281/zenodo.1234", "--url", "https://example.org/plantray-model"]) == 0
    assert main(["labels", "match", "--labels", os.path.join(model, "labels.csv"),
                 "--checklist", backbone_zip(str(root / "backbone.zip"))]) == 0
    return model


def _manifest(path: str, images: list[str], publisher_names: list | None) -> str:
    columns = {"image_uri": images, "gbifID": [str(100 + i) for i in range(len(images))],
               "taxonID": [f"pub-{i}" for i in range(len(images))]}
    if publisher_names is not None:
        columns["scientificName"] = publisher_names
    pq.write_table(pa.table(columns), path)
    return path


def _designed_publisher_names(predicted: list[str | None]) -> tuple[list, list]:
    """Publisher names made to fall in each agreement class (cycling), and the class expected by hand."""
    names, expected = [], []
    for i, p in enumerate(predicted):
        if p is None:  # the failed row: a name, but no prediction to compare
            names.append("Quercus robur")
            expected.append(None)
            continue
        genus = p.split()[0]
        case = i % 5
        names.append([f"{p} Auct.", f"{genus} zzzz L.", "Othergenus other", None, "  "][case])
        expected.append(["same species", "same genus", "different", "no publisher name", "no publisher name"][case])
    return names, expected


def test_predictions_carry_taxon_ids_agreement_and_metadata(ray_session, tmp_path, matched_model):
    images = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(40 + 5 * i, 44, seed=30 + i)) for i in range(10)]
    images.append(write(f"{tmp_path}/imgs/broken.jpg", b"not an image"))
    first = str(tmp_path / "first")
    assert main(["classify", "--model", matched_model, "--input", _manifest(str(tmp_path / "m1.parquet"), images, None),
                 "--output", first, "--num-actors", "1"]) == 0
    rows = {r["image_uri"]: r for r in read_output(first).to_pylist()}
    doi, url = "https://doi.org/10.5281/zenodo.1234", "https://example.org/plantray-model"
    for i, uri in enumerate(images):
        r = rows[uri]
        assert r["input_taxonID"] == f"pub-{i}"  # the publisher's, kept apart from the prediction's
        if r["error"]:
            assert uri.endswith("broken.jpg")
            assert (r["taxonID"], r["publisher_agreement"], r["identifiedByID"], r["classificationMethod"],
                    r["classificationProbability"]) == (None, None, None, None, None)
            continue
        tid, sid = EXPECTED[r["scientificName"]][:2]
        assert (r["taxonID"], r["scientificNameID"]) == (tid or None, sid or None)
        assert r["publisher_agreement"] == "no publisher name"
        # the image as an absolute URI a reader anywhere opens (image_uri stays as given)
        assert r["image_uri_absolute"] == pathlib.Path(uri).resolve().as_uri()
        assert (r["identifiedByID"], r["identificationReferences"]) == (doi, f"{r['image_uri_absolute']} | {url}")
        assert r["classificationMethod"] == "machine"
        assert r["classificationProbability"] == pytest.approx(r["confidence"]) and 0 < r["confidence"] <= 1

    # Second run: the publisher's own names, designed from the first run's (deterministic) predictions.
    publisher, expected = _designed_publisher_names([rows[u]["scientificName"] for u in images])
    second = str(tmp_path / "second")
    assert main(["classify", "--model", matched_model, "--input",
                 _manifest(str(tmp_path / "m2.parquet"), images, publisher), "--output", second,
                 "--num-actors", "1"]) == 0
    again = {r["image_uri"]: r for r in read_output(second).to_pylist()}
    assert [again[u]["publisher_agreement"] for u in images] == expected
    assert [again[u]["input_scientificName"] for u in images] == publisher
    assert {again[u]["scientificName"] for u in images} == {rows[u]["scientificName"] for u in images}

    # The Darwin Core Archive carries the new terms, declared in meta.xml.
    archive = str(tmp_path / "ids.zip")
    assert main(["export", "dwca", first, archive]) == 0
    with zipfile.ZipFile(archive) as zf:
        meta = ET.fromstring(zf.read("meta.xml"))
        text = zf.read("identification.txt").decode().splitlines()
    ext = next(e for e in meta if e.tag.endswith("extension"))
    terms = {int(f.get("index")): f.get("term") for f in ext if f.tag.endswith("field")}
    for term in (DWC + "taxonID", DWC + "scientificNameID", DWC + "identifiedByID", DWC + "identificationReferences",
                 CAMTRAP + "classificationMethod", CAMTRAP + "classificationProbability"):
        assert term in terms.values(), term
    header = text[0].split("\t")
    assert [terms[i] for i in sorted(terms)] == [
        (CAMTRAP if h.startswith("classification") else "http://purl.org/dc/terms/" if h in
         ("license", "rightsHolder", "creator") else DWC) + h for h in header[1:]]
    data = [dict(zip(header, line.split("\t"))) for line in text[1:]]
    ok = [r for r in rows.values() if not r["error"]]
    assert len(data) == len(ok)
    by_ref = {d["identificationReferences"]: d for d in data}
    for r in ok:
        d = by_ref[f"{r['image_uri_absolute']} | {url}"]  # the archive references the image's absolute URI
        assert d["gbifID"] == r["gbifID"] and d["taxonID"] == (EXPECTED[r["scientificName"]][0])
        assert (d["identifiedByID"], d["classificationMethod"]) == (doi, "machine")
        assert float(d["classificationProbability"]) == pytest.approx(r["confidence"], rel=1e-5)
