"""``plantray labels match`` on the Catalogue of Life eXtended Release as ChecklistBank exports it (ColDP):
the NameUsage layout with ``col:`` headers (zip + metadata.yaml), the Name + Taxon + Synonym layout with plain
headers (CSV, a folder), and predictions that say which checklist their taxonID comes from.

The fixtures follow the ColDP specification (github.com/CatalogueOfLife/coldp); the expected values are worked
out by hand from their rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray.cli import main
from tests.helpers import jpeg_bytes, read_output, write

# (ID, parentID, status, rank, scientificName, authorship): a small tree in the NameUsage layout. Genus,
# family and kingdom come only from the parentID walk (no flat classification columns, as in a "simple"
# ChecklistBank export).
USAGES = [
    ("P", "", "accepted", "kingdom", "Plantae", ""),
    ("N", "", "accepted", "kingdom", "Animalia", ""),
    ("FAGA", "P", "accepted", "family", "Fagaceae", "Dumort."),
    ("QUER", "FAGA", "accepted", "genus", "Quercus", "L."),
    ("4QRB", "QUER", "accepted", "species", "Quercus robur", "L."),
    ("4QPD", "4QRB", "synonym", "species", "Quercus pedunculata", "Ehrh."),
    ("ROSF", "P", "accepted", "family", "Rosaceae", "Juss."),
    ("ROSO", "ROSF", "accepted", "subfamily", "Rosoideae", "Arn."),
    ("ROSA", "ROSO", "accepted", "genus", "Rosa", "L."),
    ("RCAN", "ROSA", "accepted", "species", "Rosa canina", "L."),
    ("ZFAM", "N", "accepted", "family", "Rosidae", "Zoo"),
    ("ZROS", "ZFAM", "accepted", "genus", "Rosa", "Zoo"),
    ("ZRC", "ZROS", "accepted", "species", "Rosa canina", "Zoo, 1900"),  # an animal homonym, kingdom Animalia
    ("LAMI", "P", "accepted", "family", "Lamiaceae", "Martinov"),
    ("MENT", "LAMI", "accepted", "genus", "Mentha", "L."),
    ("MXP", "MENT", "accepted", "species", "Mentha × piperita", "L."),
    ("ASTE", "P", "accepted", "family", "Asteraceae", "Bercht. & J.Presl"),
    ("BELG", "ASTE", "accepted", "genus", "Bellis", "L."),
    ("BPER", "BELG", "provisionally accepted", "species", "Bellis perennis", "L."),
    ("PINA", "P", "accepted", "family", "Pinaceae", "Spreng. ex F.Rudolphi"),
    ("ABIE", "PINA", "accepted", "genus", "Abies", "Mill."),
    ("AB1", "ABIE", "accepted", "species", "Abies alba", "Mill."),
    ("AB2", "ABIE", "accepted", "species", "Abies alba", "Foo"),  # a plant homonym
    ("SALP", "", "bare name", "species", "Salvia pratensis", "L."),  # neither accepted nor a synonym
]
LABELS = ["Quercus robur", "Quercus pedunculata", "Rosa canina", "Mentha x piperita", "Bellis perennis",
          "Abies alba", "Salvia pratensis"]
# label -> (taxonID, acceptedNameUsage, genus, family), by hand from USAGES; None: left without identifiers
EXPECTED = {
    "Quercus robur": ("4QRB", "Quercus robur L.", "Quercus", "Fagaceae"),
    "Quercus pedunculata": ("4QRB", "Quercus robur L.", "Quercus", "Fagaceae"),  # synonym -> its parentID
    "Rosa canina": ("RCAN", "Rosa canina L.", "Rosa", "Rosaceae"),  # the animal is not a Plantae
    "Mentha x piperita": ("MXP", "Mentha × piperita L.", "Mentha", "Lamiaceae"),
    "Bellis perennis": ("BPER", "Bellis perennis L.", "Bellis", "Asteraceae"),  # provisionally accepted
    "Abies alba": None,
    "Salvia pratensis": None,
}
METADATA = """key: 312578
doi: 10.48580/dgplc
title: Catalogue of Life
alias: COL25.10 XR
version: 25.10 XR
issued: 2025-10-10
"""
ACCORDING_TO = ("Catalogue of Life, version 25.10 XR, ChecklistBank dataset 312578", "https://doi.org/10.48580/dgplc")
FILLER = 300


def name_usage_zip(path: str) -> str:
    """NameUsage.tsv as ChecklistBank writes it: tab-separated, no quoting, ``col:`` headers, extra columns."""
    header = ["col:ID", "col:parentID", "col:status", "col:rank", "col:scientificName", "col:authorship",
              "col:extinct", "col:link"]
    filler = [(f"F{i}", "P", "accepted", "species", f"Fillerus f{i}us", "L.") for i in range(FILLER)]
    lines = ["\t".join(header)] + ["\t".join([*u, "false", ""]) for u in [*filler, *USAGES]]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("NameUsage.tsv", "\n".join(lines) + "\n")
        zf.writestr("metadata.yaml", METADATA)
        zf.writestr("VernacularName.tsv", "col:taxonID\tcol:name\n4QRB\toak\n")
    return path


def name_taxon_folder(root) -> str:
    """The same tree as Name + Taxon + Synonym, plain headers, RFC 4180 CSV (quoted commas in authorships),
    file names in other cases and with a hyphen, as the specification allows."""
    os.makedirs(root)
    names, taxon, synonyms = io.StringIO(), io.StringIO(), io.StringIO()
    w_name, w_taxon, w_syn = csv.writer(names), csv.writer(taxon), csv.writer(synonyms)
    w_name.writerow(["ID", "scientificName", "authorship", "rank"])
    w_taxon.writerow(["ID", "parentID", "nameID", "provisional"])
    w_syn.writerow(["ID", "taxonID", "nameID", "status"])
    for uid, parent, status, rank, name, author in USAGES:
        w_name.writerow([f"n-{uid}", name, author, rank])
        if status == "synonym":
            w_syn.writerow([f"s-{uid}", parent, f"n-{uid}", "synonym"])
        elif status != "bare name":
            w_taxon.writerow([uid, parent, f"n-{uid}", "true" if status.startswith("provisionally") else "false"])
    for name, text in (("Name.csv", names), ("taxon.csv", taxon), ("syn_onym.csv", synonyms)):
        (root / name).write_text(text.getvalue(), encoding="utf-8")
    return str(root)


def labels_file(path) -> str:
    path.write_text("scientificName,genus,family,taxonID\n" + "".join(
        f"{n},{n.split()[0]},Old,stale-{i}\n" for i, n in enumerate(LABELS)), encoding="utf-8")
    return str(path)


def check_labels(out: str, according_to: tuple) -> dict:
    with open(out, newline="", encoding="utf-8") as f:
        rows = {r["scientificName"]: r for r in csv.DictReader(f)}
    assert list(rows) == LABELS
    for name, expected in EXPECTED.items():
        r = rows[name]
        if expected is None:
            assert (r["taxonID"], r["acceptedNameUsage"], r["nameAccordingTo"]) == ("", "", ""), name
            continue
        assert (r["taxonID"], r["acceptedNameUsage"], r["genus"], r["family"]) == expected, name
        assert (r["nameAccordingTo"], r["nameAccordingToID"]) == according_to, name
    report = json.loads(open(out + ".match.json").read())["summary"]
    assert report["homonyms"] == [{"name": "Abies alba", "candidates": ["AB1", "AB2"]}]
    assert report["unmatched"] == ["Salvia pratensis"]
    assert report["synonyms"] == [{"name": "Quercus pedunculata", "accepted": "Quercus robur L.", "taxonID": "4QRB"}]
    return report


def test_name_usage_zip_with_col_headers(tmp_path, capsys):
    checklist = name_usage_zip(str(tmp_path / "col-xr.zip"))
    out = str(tmp_path / "labels-col.csv")
    assert main(["labels", "match", "--labels", labels_file(tmp_path / "labels.csv"), "--checklist", checklist,
                 "--output", out]) == 0
    report = check_labels(out, ACCORDING_TO)
    assert report["rows_read"] == FILLER + len(USAGES) and report["checklist_format"] == "ColDP"
    assert "taxonIDs according to: Catalogue of Life, version 25.10 XR" in capsys.readouterr().out


def test_name_taxon_synonym_folder_with_plain_headers(tmp_path):
    checklist = name_taxon_folder(tmp_path / "coldp")
    out = str(tmp_path / "labels-col.csv")
    assert main(["labels", "match", "--labels", labels_file(tmp_path / "labels.csv"), "--checklist", checklist,
                 "--output", out, "--checklist-name", "COL XR 2025-10 (ChecklistBank 312578)"]) == 0
    report = check_labels(out, ("COL XR 2025-10 (ChecklistBank 312578)", ""))
    assert report["rows_read"] == len(USAGES)  # Name rows


def test_a_coldp_without_names_is_refused(tmp_path):
    bad = str(tmp_path / "bad.zip")
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("NameUsage.tsv", "col:ID\tcol:rank\nX\tspecies\n")
    labels = labels_file(tmp_path / "labels.csv")
    assert main(["labels", "match", "--labels", labels, "--checklist", bad]) == 2
    with open(labels, encoding="utf-8") as f:
        assert "stale-0" in f.read()  # nothing written


def test_predictions_say_which_checklist(ray_session, tmp_path):
    """model create -> labels match (COL XR) -> classify: every prediction's taxonID comes with its checklist,
    and the model card (also in the Parquet footer) names it."""
    model = str(tmp_path / "model")
    assert main(["model", "create", model, "--labels", labels_file(tmp_path / "labels.csv"), "--arch", "resnet18",
                 "--image-size", "32", "--version", "t1"]) == 0
    assert main(["labels", "match", "--labels", os.path.join(model, "labels.csv"),
                 "--checklist", name_usage_zip(str(tmp_path / "col.zip"))]) == 0
    card = json.loads(open(os.path.join(model, "model_card.json")).read())
    assert card["taxonomy"]["nameAccordingTo"] == [ACCORDING_TO[0]]
    images = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(40, 44, seed=50 + i)) for i in range(8)]
    manifest = str(tmp_path / "m.parquet")
    pq.write_table(pa.table({"image_uri": images}), manifest)
    out = str(tmp_path / "preds")
    assert main(["classify", "--model", model, "--input", manifest, "--output", out, "--num-actors", "1"]) == 0
    table = read_output(out)
    for r in table.to_pylist():
        expected = EXPECTED[r["scientificName"]]
        if expected is None:  # a homonym or unmatched label: no identifier, so no checklist either
            assert (r["taxonID"], r["nameAccordingTo"]) == (None, None)
        else:
            assert (r["taxonID"], r["nameAccordingTo"], r["nameAccordingToID"]) == (expected[0], *ACCORDING_TO)
    footer = json.loads(pq.ParquetDataset(out).fragments[0].metadata.metadata[b"plantray.model_card"])
    assert footer["taxonomy"]["nameAccordingToID"] == [ACCORDING_TO[1]]


@pytest.mark.parametrize("name", ["name_usage.tsv", "Name-Usage.TSV"])
def test_entity_file_names_are_case_and_separator_insensitive(tmp_path, name):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / name).write_text("ID\tparentID\tstatus\trank\tscientificName\tauthorship\n"
                               "1\t\taccepted\tspecies\tRosa canina\tL.\n", encoding="utf-8")
    labels, out = tmp_path / "l.csv", str(tmp_path / "o.csv")
    labels.write_text("scientificName\nRosa canina\n", encoding="utf-8")
    assert main(["labels", "match", "--labels", str(labels), "--checklist", str(folder), "--output", out,
                 "--kingdom", "any"]) == 0
    with open(out, newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert (row["taxonID"], row["acceptedNameUsage"], row["nameAccordingTo"]) == ("1", "Rosa canina L.", "pkg")
