"""``plantray labels match``: counts, cleared identifiers, tab-separated labels, quoted checklist headers, hybrids.

Expected values are worked out by hand from the checklist rows written here.
"""

from __future__ import annotations

import csv
import io
import json

from plantray.cli import main
from plantray.model.labels import parse_labels

HEADER = ["taxonID", "scientificName", "taxonomicStatus", "acceptedNameUsageID", "kingdom", "family", "genus"]
# No canonicalName column: names are compared without their authorship.
ROWS = [
    ["10", "Quercus robur L.", "accepted", "", "Plantae", "Fagaceae", "Quercus"],
    ["11", "Quercus pedunculata Ehrh.", "synonym", "10", "Plantae", "Fagaceae", "Quercus"],
    ["20", "Mentha × piperita L.", "accepted", "", "Plantae", "Lamiaceae", "Mentha"],
    ["21", "Mentha aquatica L.", "accepted", "", "Plantae", "Lamiaceae", "Mentha"],
    ["30", "Abies alba Mill.", "accepted", "", "Plantae", "Pinaceae", "Abies"],
    ["31", "Abies alba Foo", "accepted", "", "Plantae", "Pinaceae", "Abies"],
    ["40", "Quercus robur subsp. broteroana O.Schwarz", "accepted", "", "Plantae", "Fagaceae", "Quercus"],
]
FILLER = 500


def checklist_tsv(path) -> str:
    rows = [[str(1000 + i), f"Fillerus f{i}us L.", "accepted", "", "Plantae", "Fillaceae", "Fillerus"]
            for i in range(FILLER)]
    path.write_text("\n".join("\t".join(r) for r in [HEADER, *rows, *ROWS]) + "\n", encoding="utf-8")
    return str(path)


def stale_labels(path, delimiter: str) -> str:
    """Labels that a match with another checklist filled earlier: every identifier is stale."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(["scientificName", "genus", "family", "taxonID", "scientificNameID", "acceptedNameUsage"])
    for name in ["Quercus robur", "Quercus pedunculata", "Mentha × piperita", "Abies alba", "Bellis perennis"]:
        w.writerow([name, name.split()[0], "OldFam", "old-" + name, "urn:old:" + name, name + " Old."])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return str(path)


def read(path: str) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {r["scientificName"]: r for r in csv.DictReader(f)}


def test_counts_cleared_identifiers_and_hybrids(tmp_path, capsys):
    checklist = checklist_tsv(tmp_path / "Taxon.tsv")
    labels, out = stale_labels(tmp_path / "labels.tsv", "\t"), str(tmp_path / "out.csv")
    assert main(["labels", "match", "--labels", labels, "--checklist", checklist, "--output", out]) == 0
    rows = read(out)
    assert list(rows) == ["Quercus robur", "Quercus pedunculata", "Mentha × piperita", "Abies alba",
                          "Bellis perennis"]  # the tab-separated labels were read as a table
    assert (rows["Quercus robur"]["taxonID"], rows["Quercus robur"]["acceptedNameUsage"]) == ("10", "Quercus robur L.")
    assert rows["Quercus pedunculata"]["taxonID"] == "10"
    assert (rows["Mentha × piperita"]["taxonID"], rows["Mentha × piperita"]["family"]) == ("20", "Lamiaceae")
    for name in ("Abies alba", "Bellis perennis"):  # homonym and unmatched: stale identifiers cleared
        assert (rows[name]["taxonID"], rows[name]["scientificNameID"], rows[name]["acceptedNameUsage"]) == ("", "", "")
        assert (rows[name]["genus"], rows[name]["family"]) == (name.split()[0], "OldFam")
    report = json.loads(open(out + ".match.json").read())["summary"]
    assert report["rows_read"] == FILLER + len(ROWS)  # each checklist row once, though a synonym needed pass 2
    assert report["labels"] == 5
    assert report["unmatched"] == ["Bellis perennis"]
    assert report["homonyms"] == [{"name": "Abies alba", "candidates": ["30", "31"]}]
    printed = capsys.readouterr().out
    assert "matched 3/5 labels" in printed and f"from {FILLER + len(ROWS)} checklist rows" in printed
    assert "unmatched: Bellis perennis" in printed


def test_tab_separated_labels_are_not_one_name_with_tabs():
    labels = parse_labels("scientificName\tgenus\tfamily\nQuercus robur\tQuercus\tFagaceae\n"
                          "Rosa canina\tRosa\tRosaceae\n")
    assert labels.names == ["Quercus robur", "Rosa canina"]
    assert labels.family == ["Fagaceae", "Rosaceae"]


def test_checklist_header_is_parsed_as_csv(tmp_path):
    # A quoted column name holding the delimiter: splitting the header on ',' would ask the reader for
    # columns "family" and "genus" that the file does not have.
    path = tmp_path / "taxa.csv"
    path.write_text('taxonID,"scientificName",taxonomicStatus,"family, genus",kingdom\n'
                    '1,"Rosa canina L.",accepted,"Rosaceae, Rosa",Plantae\n', encoding="utf-8")
    labels, out = tmp_path / "labels.csv", str(tmp_path / "out.csv")
    labels.write_text("scientificName\nRosa canina\n", encoding="utf-8")
    assert main(["labels", "match", "--labels", str(labels), "--checklist", str(path), "--output", out]) == 0
    assert read(out)["Rosa canina"]["taxonID"] == "1"
    assert read(out)["Rosa canina"]["family"] == ""  # "family, genus" is one column, not family
