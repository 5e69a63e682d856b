"""``plantray review apply``: a decisions file applied to real classify outputs (image rows, occurrence rows)
and to a nightly Delta table; refusals of bad decisions files; the training manifest; and ``export dwca`` of
the reviewed predictions (both identifications in the Identification History, the person's current).

Expected values are worked out here from the decisions this test writes and the labels it gave the model,
never read back from plantray's own helpers; outputs are read back with pyarrow, deltalake and
python-dwca-reader.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from dwca.read import DwCAReader

from plantray.cli import main
from tests.helpers import SPECIES, jpeg_bytes, tiny_model, write

DWC = "http://rs.tdwg.org/dwc/terms/"
PLANTRAY = "https://github.com/plantray/plantray/blob/main/docs/terms.md#"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")
HEADER = "identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks"
# The labels this test gives the model: name -> (taxonID, genus, family)
TAXA = {"Quercus robur": ("2878688", "Quercus", "Fagaceae"), "Fagus sylvatica": ("2882316", "Fagus", "Fagaceae"),
        "Bellis perennis": ("3117424", "Bellis", "Asteraceae"), "Rosa canina": ("8395064", "Rosa", "Rosaceae")}
MACHINE = ("scientificName", "taxonRank", "taxonID", "genus", "family", "kingdom", "identificationID",
           "identifiedBy", "dateIdentified", "identificationRemarks", "identificationVerificationStatus",
           "identificationReferences", "classificationMethod")
REMARK = 'leaf only, "juvenile"\nsecond line'  # a quoted CSV field holding a comma, quotes and a line break


@pytest.fixture(scope="module")
def world(tmp_path_factory, ray_session):
    """A tiny model with real taxon IDs, and classify OUTPUT (+ _occurrences) of 12 images of 6 occurrences and
    one broken file."""
    root = tmp_path_factory.mktemp("review")
    model = str(root / "model")
    tiny_model(model)
    with open(os.path.join(model, "labels.csv"), "w", newline="") as f:  # card's SHA-256 covers weights only
        w = csv.writer(f)
        w.writerow(["scientificName", "genus", "family", "taxonID"])
        w.writerows([n, *TAXA[n][1:], TAXA[n][0]] for n in SPECIES)
    images = [write(f"{root}/img/{i}.jpg", jpeg_bytes(40 + i, 44, seed=70 + i)) for i in range(12)]
    images.append(write(f"{root}/img/broken.jpg", b"not an image"))
    manifest = str(root / "m.parquet")
    pq.write_table(pa.table({"image_uri": images, "gbifID": [str(100 + i // 2) for i in range(13)],
                             "tag": ["leaf" if i % 2 else "flower" for i in range(13)]}), manifest)
    out = str(root / "preds")
    assert main(["classify", "--model", model, "--input", manifest, "--output", out, "--num-actors", "1",
                 "--aggregate", "occurrence"]) == 0
    return {"root": root, "model": model, "preds": out, "manifest": manifest}


def read(uri: str) -> list[dict]:
    return pads.dataset(uri, format="parquet").to_table().to_pylist()


def decisions_file(path, rows: list[list]) -> str:
    buf = io.StringIO()
    buf.write(HEADER + "\r\n")
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return str(path)


def design(rows: list[dict]) -> tuple[list[list], dict]:
    """Decisions on the first classified rows (by image_uri), and what each decided row must become."""
    ok = sorted((r for r in rows if r["error"] is None), key=lambda r: r["image_uri"])
    other = next(n for n in SPECIES if n != ok[1]["scientificName"])
    plan = [(ok[0], "accepted", ok[0]["scientificName"], "Ana Lopez", "2026-05-01", ""),
            (ok[1], "corrected", other, "Jean-Pierre Dupont", "2026-05-01T14:03:22Z", REMARK),
            (ok[2], "corrected", "Quercus", "Ana Lopez", "2026-05-02T09:00:00.5+02:00", "genus only"),
            (ok[3], "rejected", "", "Ana Lopez", "2026-05", "blurred"),
            (ok[4], "not a plant", "", "Ana Lopez", "2026-05-03", ""),
            (ok[5], "unsure", "", "Ana Lopez", "2026-05-03T10:00:00Z", "ask a specialist")]
    expected = {}
    for row, decision, name, by, date, remark in plan:
        e = {"review_decision": decision, "review_identifiedBy": by, "review_dateIdentified": date,
             "review_identificationRemarks": remark or None,
             **{"machine_" + c: row[c] for c in MACHINE}}
        if decision == "unsure":
            e.update({c: row[c] for c in MACHINE})
        else:
            taxon = TAXA.get(name)
            rank = "species" if taxon else ("genus" if name else None)
            e.update({"scientificName": name or None, "verbatimIdentification": name or None, "taxonRank": rank,
                      "taxonID": taxon[0] if taxon else None,
                      "genus": taxon[1] if taxon else (name or None),
                      "family": taxon[2] if taxon else ("Fagaceae" if name == "Quercus" else None),
                      "kingdom": None if decision == "not a plant" else "Plantae",
                      "identifiedBy": by, "dateIdentified": date, "classificationMethod": "human",
                      "classificationProbability": None,
                      "identificationVerificationStatus": "verified using recorded media",
                      "identificationReferences": row["image_uri_absolute"],  # a URI that opens
                      "identificationID": str(uuid.uuid5(NAMESPACE, "\n".join(
                          ["review", row["identificationID"], decision, name, by, date])))})
        expected[row["image_uri"]] = e
    return [[r["identificationID"], d, n, b, t, m] for r, d, n, b, t, m in plan], expected


def check_applied(before: list[dict], after: list[dict], expected: dict) -> None:
    assert len(after) == len(before)
    by_uri = {r["image_uri"]: r for r in before}
    assert sorted(by_uri) == sorted(r["image_uri"] for r in after)
    for r in after:
        old = by_uri[r["image_uri"]]
        want = expected.get(r["image_uri"])
        if want is None:  # nobody decided it: every input column as it was, the review columns empty
            assert {k: r[k] for k in old} == old
            assert r["review_decision"] is None and r["machine_scientificName"] is None
            continue
        for k, v in want.items():
            assert r[k] == v, (r["image_uri"], k, r[k], v)
        # what the model said is kept, whatever the person decided
        assert (r["confidence"], r["topk_scientificName"]) == (old["confidence"], old["topk_scientificName"])
        if want["review_decision"] == "rejected":
            assert "rejected by Ana Lopez" in r["identificationRemarks"] and "blurred" in r["identificationRemarks"]
        if want["review_decision"] == "corrected" and want["review_identificationRemarks"] == REMARK:
            assert r["identificationRemarks"].endswith(REMARK)


def test_apply_to_classify_output_is_complete_and_idempotent(world, tmp_path, capsys):
    before = read(world["preds"])
    rows, expected = design(before)
    decisions = decisions_file(tmp_path / "d.csv", rows)
    out, again = str(tmp_path / "applied"), str(tmp_path / "applied-again")
    manifest = str(tmp_path / "train.parquet")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", decisions, "--output", out,
                 "--training-manifest", manifest]) == 0
    assert "applied 6 decisions" in capsys.readouterr().out
    after = read(out)
    check_applied(before, after, expected)
    assert os.path.exists(os.path.join(out, "_SUCCESS"))
    # the model card travels in every file's footer, as in classify's output
    footer = pq.ParquetDataset(out).fragments[0].metadata.metadata
    assert json.loads(footer[b"plantray.model_card"])["version"] == "test"
    # the same decisions again give the same rows; applied to their own output they change nothing
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", decisions, "--output", again]) == 0
    assert read(again) == after
    twice = str(tmp_path / "twice")
    assert main(["review", "apply", "--predictions", out, "--decisions", decisions, "--output", twice]) == 0
    assert read(twice) == after
    # the training manifest: the accepted and corrected species-rank images, with their tag
    species = {u: e for u, e in expected.items() if e["review_decision"] in ("accepted", "corrected")
               and e["taxonRank"] == "species"}
    tags = {r["image_uri"]: r["tag"] for r in before}
    got = pq.read_table(manifest).to_pylist()
    assert sorted((r["image_uri"], r["scientificName"], r["tag"], r["taxonID"]) for r in got) == sorted(
        (u, e["scientificName"], tags[u], e["taxonID"]) for u, e in species.items())


def test_a_later_review_replaces_the_person_but_never_the_machine(world, tmp_path):
    before = read(world["preds"])
    rows, _ = design(before)
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions",
                 decisions_file(tmp_path / "d1.csv", rows), "--output", first]) == 0
    applied = {r["image_uri"]: r for r in read(first)}
    rejected = next(r for r in applied.values() if r["review_decision"] == "rejected")
    # the site, reopened on the applied output, names the row by its current (the person's) identificationID
    again = [[rejected["identificationID"], "corrected", "Rosa canina", "Mia Berg", "2026-06-01", ""]]
    assert main(["review", "apply", "--predictions", first, "--decisions",
                 decisions_file(tmp_path / "d2.csv", again), "--output", second]) == 0
    now = {r["image_uri"]: r for r in read(second)}
    r = now[rejected["image_uri"]]
    assert (r["scientificName"], r["taxonID"], r["identifiedBy"], r["review_decision"]) == (
        "Rosa canina", TAXA["Rosa canina"][0], "Mia Berg", "corrected")
    original = {x["image_uri"]: x for x in before}[rejected["image_uri"]]
    assert all(r["machine_" + c] == original[c] for c in MACHINE)  # still the machine's, not the first review's
    assert all(now[u] == applied[u] for u in now if u != rejected["image_uri"])


def test_occurrence_output_takes_decisions_made_on_its_images(world, tmp_path):
    images = read(world["preds"])
    occurrences = read(world["preds"] + "_occurrences")
    target = next(o for o in occurrences if o["images_used"] == 2)
    ids = [r["identificationID"] for r in images if r["gbifID"] == target["gbifID"] and r["error"] is None]
    # the review page writes one row per image of an occurrence card, all with the same decision
    rows = [[i, "corrected", "Bellis perennis", "Ana Lopez", "2026-05-04", "whole plant"] for i in ids]
    out = str(tmp_path / "occ")
    assert main(["review", "apply", "--predictions", world["preds"] + "_occurrences", "--decisions",
                 decisions_file(tmp_path / "d.csv", rows), "--output", out]) == 0
    after = read(out)
    assert len(after) == len(occurrences)
    for r in after:
        if r["gbifID"] == target["gbifID"]:
            assert (r["scientificName"], r["taxonID"], r["family"], r["review_decision"]) == (
                "Bellis perennis", TAXA["Bellis perennis"][0], "Asteraceae", "corrected")
            assert r["machine_scientificName"] == target["scientificName"]
            assert r["identificationID"] != r["machine_identificationID"]
        else:
            assert r["review_decision"] is None and r["scientificName"] == next(
                o["scientificName"] for o in occurrences if o["gbifID"] == r["gbifID"])
            assert r["identificationID"]  # every occurrence row now has an id a later review can name


def test_a_decisions_file_written_by_hand_applies_alike_with_crlf_and_lf(world, tmp_path):
    before = read(world["preds"])
    ok = sorted((r for r in before if r["error"] is None), key=lambda r: r["image_uri"])
    broken = next(r for r in before if r["error"])
    ids = [r["identificationID"] for r in ok]
    # As a person types it: a date and date-times, a quoted name with its authorship and a comma, a hybrid
    # written with an x, a reviewer "Family, Given", a remark over two lines, quotes inside a quoted remark
    text = f'''identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks
{ids[0]},accepted,{ok[0]["scientificName"]},Ana Lopez,2026-05-01,
{ids[1]},corrected,"Quercus robur L., 1753","Lopez, Ana",2026-05-01T14:03:22Z,oak leaves
{ids[2]},rejected,,Ana Lopez,2026-05-02T09:00:00+02:00,blurred
{ids[3]},not a plant,,Ana Lopez,2026-05-02T10:15Z,a fence post
{ids[4]},unsure,,Ana Lopez,2026-05,"two plants in the image;
ask Jean-Pierre"
{broken["identificationID"]},corrected,Rosa canina,Ana Lopez,2026-05-03,"found the sheet, ""rose"""
'''
    outputs = []
    for name, data in (("lf", text), ("crlf", text.replace("\n", "\r\n"))):
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data.encode("utf-8"))
        out, manifest = str(tmp_path / f"applied-{name}"), str(tmp_path / f"train-{name}.csv")
        assert main(["review", "apply", "--predictions", world["preds"], "--decisions", str(path), "--output", out,
                     "--training-manifest", manifest]) == 0
        outputs.append((read(out), open(manifest, encoding="utf-8").read()))
    assert outputs[0] == outputs[1]  # the same decisions, whatever the line ends
    after = {r["image_uri"]: r for r in outputs[0][0]}
    assert len(after) == len(before)
    got = {u: (r["review_decision"], r["scientificName"], r["verbatimIdentification"], r["taxonID"],
               r["identifiedBy"], r["dateIdentified"], r["review_identificationRemarks"])
           for u, r in after.items() if r["review_decision"]}
    name0 = ok[0]["scientificName"]
    assert got == {
        ok[0]["image_uri"]: ("accepted", name0, name0, TAXA[name0][0], "Ana Lopez", "2026-05-01", None),
        ok[1]["image_uri"]: ("corrected", "Quercus robur", "Quercus robur L., 1753", TAXA["Quercus robur"][0],
                             "Lopez, Ana", "2026-05-01T14:03:22Z", "oak leaves"),
        ok[2]["image_uri"]: ("rejected", None, None, None, "Ana Lopez", "2026-05-02T09:00:00+02:00", "blurred"),
        ok[3]["image_uri"]: ("not a plant", None, None, None, "Ana Lopez", "2026-05-02T10:15Z", "a fence post"),
        ok[4]["image_uri"]: ("unsure", ok[4]["scientificName"], None, ok[4]["taxonID"], ok[4]["identifiedBy"],
                             ok[4]["dateIdentified"], "two plants in the image;\nask Jean-Pierre"),
        broken["image_uri"]: ("corrected", "Rosa canina", "Rosa canina", TAXA["Rosa canina"][0], "Ana Lopez",
                              "2026-05-03", 'found the sheet, "rose"'),
    }
    trained = list(csv.DictReader(io.StringIO(outputs[0][1])))
    assert sorted((r["image_uri"], r["scientificName"]) for r in trained) == sorted(
        [(ok[0]["image_uri"], name0), (ok[1]["image_uri"], "Quercus robur"), (broken["image_uri"], "Rosa canina")])


def _bad_files(rows: list[list], good_id: str) -> dict[str, tuple[str, str]]:
    """Bad decisions files (text) and the line and words each refusal must name."""
    line = ",".join(rows[0])
    return {
        "wrong header": ("id,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks\n" + line,
                         "line 1"),
        "unknown id": (f"{HEADER}\n{line}\nno-such-id,accepted,Rosa canina,Ana,2026-05-01,\n", "line 3"),
        "duplicate": (f"{HEADER}\n{line}\n{line}\n", "line 3"),
        "bad date": (f"{HEADER}\n{good_id},rejected,,Ana,01/05/2026,\n", "line 2"),
        "impossible date": (f"{HEADER}\n{good_id},rejected,,Ana,2026-02-30,\n", "line 2"),
        "unknown name": (f"{HEADER}\n{line}\n\"{rows[1][0]}\",corrected,Abies alba,Ana,2026-05-01,\n", "line 3"),
        "unknown decision": (f"{HEADER}\n{good_id},maybe,,Ana,2026-05-01,\n", "line 2"),
        "name on rejected": (f"{HEADER}\n{good_id},rejected,Rosa canina,Ana,2026-05-01,\n", "line 2"),
        "no reviewer": (f"{HEADER}\n{good_id},rejected,,,2026-05-01,\n", "line 2"),
        "fields": (f"{HEADER}\n{line}\n{good_id},accepted,Rosa canina,Ana,2026-05-01,a,b\n", "line 3"),
    }


def test_bad_decisions_files_are_refused_with_the_line_and_nothing_written(world, tmp_path, capsys):
    before = read(world["preds"])
    rows, _ = design(before)
    rows = [[str(v) for v in r[:5]] + [""] for r in rows]
    for name, (text, line) in _bad_files(rows, rows[3][0]).items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        out, manifest = tmp_path / f"out-{name}", tmp_path / f"m-{name}.csv"
        code = main(["review", "apply", "--predictions", world["preds"], "--decisions", str(path), "--output",
                     str(out), "--training-manifest", str(manifest)])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and line in err, (name, err)
        assert not out.exists() and not manifest.exists(), name
    latin = tmp_path / "latin1.csv"
    latin.write_bytes((HEADER + f"\n{rows[3][0]},rejected,,Jos\xe9,2026-05-01,\n").encode("latin-1"))
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", str(latin), "--output",
                 str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err and not (tmp_path / "o").exists()
    # an OUTPUT that is PREDICTIONS, or holds someone else's data, is refused too
    good = decisions_file(tmp_path / "good.csv", rows[:1])
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", good, "--output",
                 world["preds"]]) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", good, "--output", str(other),
                 "--overwrite"]) == 2
    assert (other / "keep.txt").read_text() == "mine"


def test_export_lists_both_identifications_and_makes_the_persons_current(world, tmp_path):
    before = read(world["preds"])
    rows, expected = design(before)
    out = str(tmp_path / "applied")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions",
                 decisions_file(tmp_path / "d.csv", rows), "--output", out]) == 0
    archive = str(tmp_path / "reviewed.zip")
    assert main(["export", "dwca", out, archive]) == 0
    by_uri = {r["image_uri"]: r for r in before}
    person = {u: e for u, e in expected.items() if e["review_decision"] != "unsure"}
    with DwCAReader(archive) as dwca:
        core = {c.id: c for c in dwca}
        idents = [(c.id, e.data) for c in core.values() for e in c.extensions if e.rowtype == DWC + "Identification"]
    for uri, e in expected.items():
        gbif = by_uri[uri]["gbifID"]
        # identificationReferences names the image by its absolute URI (file://, s3://, https://)
        absolute = by_uri[uri]["image_uri_absolute"]
        mine = [d for occ, d in idents
                if occ == gbif and d[DWC + "identificationReferences"].split(" | ")[0] == absolute]
        machine = [d for d in mine if d[PLANTRAY + "classificationMethod"] == "machine"]
        people = [d for d in mine if d[PLANTRAY + "classificationMethod"] == "human"]
        # the machine's identification, as the model made it
        assert len(machine) == 1 and machine[0][DWC + "identificationID"] == by_uri[uri]["identificationID"]
        assert machine[0][DWC + "scientificName"] == (by_uri[uri]["scientificName"] or "")
        assert machine[0][DWC + "identificationVerificationStatus"] == "unverified"
        assert machine[0][DWC + "identifiedBy"] == by_uri[uri]["identifiedBy"]
        if uri not in person:  # unsure: the machine's stays the only one
            assert people == []
            continue
        assert len(people) == 1
        p = people[0]
        assert (p[DWC + "identificationID"], p[DWC + "scientificName"], p[DWC + "identifiedBy"],
                p[DWC + "dateIdentified"], p[DWC + "identificationVerificationStatus"]) == (
            e["identificationID"], e["scientificName"] or "", e["identifiedBy"], e["dateIdentified"],
            "verified using recorded media")
        assert p[DWC + "verbatimIdentification"] == (e["verbatimIdentification"] or "")
        assert p[DWC + "kingdom"] == (e["kingdom"] or "")
        assert mine.index(p) > mine.index(machine[0])  # oldest first
    # the occurrence's current identification, in the core, is its person's (the later one when two decided)
    current = {}
    for uri, e in person.items():
        gbif = by_uri[uri]["gbifID"]
        if gbif not in current or (e["dateIdentified"], e["identificationID"]) > (
                current[gbif]["dateIdentified"], current[gbif]["identificationID"]):
            current[gbif] = e
    for gbif, c in core.items():
        want = current.get(gbif)
        assert c.data[DWC + "identificationID"] == (want["identificationID"] if want else "")
        assert c.data[DWC + "scientificName"] == ((want["scientificName"] or "") if want else "")
        assert c.data[DWC + "identifiedBy"] == (want["identifiedBy"] if want else "")


@pytest.mark.slow
def test_nightly_table_takes_decisions_as_a_commit_a_rerun_keeps(world, tmp_path):
    from deltalake import DeltaTable

    from plantray.storage.table import latest

    table = str(tmp_path / "table")
    assert main(["nightly", "--model", world["model"], "--input", world["manifest"], "--table", table,
                 "--run-id", "n1", "--num-actors", "1"]) == 0
    machine = DeltaTable(table).to_pyarrow_table().to_pylist()  # one night: one row per image
    rows, expected = design(machine)
    decisions = decisions_file(tmp_path / "d.csv", rows)
    version = DeltaTable(table).version()
    assert main(["review", "apply", "--predictions", table, "--decisions", decisions]) == 0
    applied = DeltaTable(table).version()
    assert applied > version  # the new columns (a schema version of their own), then the decisions' commit
    committed = [r for r in DeltaTable(table).to_pyarrow_table().to_pylist() if r["run_id"].startswith("review-")]
    assert sorted(r["image_uri"] for r in committed) == sorted(expected)
    assert len({r["run_id"] for r in committed}) == 1
    assert DeltaTable(table).transaction_version(committed[0]["run_id"]) == 0  # one commit, chunk 0
    for r in committed:
        for k, v in expected[r["image_uri"]].items():
            assert r[k] == v, (k, r[k], v)
    # the same decisions again: already committed, nothing new
    assert main(["review", "apply", "--predictions", table, "--decisions", decisions]) == 0
    assert DeltaTable(table).version() == applied
    # a later re-classification adds the machine's rows again, and never replaces a person's identification
    assert main(["nightly", "--model", world["model"], "--input", world["manifest"], "--table", table,
                 "--run-id", "n2", "--full", "--num-actors", "1"]) == 0
    now = {r["image_uri"]: r for r in latest(table).take_all()}  # a test-sized table
    assert len(now) == len(machine)
    for uri, r in now.items():
        e = expected.get(uri)
        if e is not None and e["review_decision"] != "unsure":
            assert (r["identifiedBy"], r["classificationMethod"], r["scientificName"]) == (
                e["identifiedBy"], "human", e["scientificName"]), uri
            assert r["machine_identificationID"] == e["machine_identificationID"]
        else:  # nobody decided (or was unsure): the newest machine row
            assert (r["run_id"], r["classificationMethod"]) == ("n2", None if r["error"] else "machine"), uri


@pytest.mark.slow
def test_training_manifest_is_read_by_train(world, tmp_path):
    before = sorted((r for r in read(world["preds"]) if r["error"] is None), key=lambda r: r["image_uri"])
    names = ["Rosa canina", "Quercus robur"]
    rows = [[r["identificationID"], "corrected", names[i % 2], "Ana Lopez", "2026-05-01", ""]
            for i, r in enumerate(before[:6])]
    manifest = str(tmp_path / "train.csv")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions",
                 decisions_file(tmp_path / "d.csv", rows), "--output", str(tmp_path / "applied"),
                 "--training-manifest", manifest]) == 0
    with open(manifest, newline="") as f:
        got = list(csv.DictReader(f))
    assert sorted((r["image_uri"], r["scientificName"]) for r in got) == sorted(
        (r["image_uri"], names[i % 2]) for i, r in enumerate(before[:6]))
    model = tmp_path / "retrained"
    assert main(["train", "--data", manifest, "--output", str(model), "--arch", "resnet18", "--init", "random",
                 "--epochs", "1", "--num-workers", "1", "--image-size", "32", "--batch-size", "2"]) == 0
    labels = (model / "labels.csv").read_text().splitlines()
    counts = {line.split(",")[0]: int(line.split(",")[labels[0].split(",").index("train_images")])
              for line in labels[1:]}
    assert counts == {"Quercus robur": 3, "Rosa canina": 3}


def test_apply_reads_and_writes_object_storage(world, s3, tmp_path):
    before = read(world["preds"])
    rows, expected = design(before)
    prefix = f"plantray-test/review-{uuid.uuid4().hex[:8]}"
    s3.put(world["preds"], f"{prefix}/preds", recursive=True)
    s3.put(decisions_file(tmp_path / "d.csv", rows), f"{prefix}/d.csv")
    assert main(["review", "apply", "--predictions", f"s3://{prefix}/preds", "--decisions", f"s3://{prefix}/d.csv",
                 "--output", f"s3://{prefix}/applied", "--labels", os.path.join(world["model"], "labels.csv"),
                 "--training-manifest", f"s3://{prefix}/train.csv"]) == 0
    s3.invalidate_cache()
    after = pads.dataset(f"{prefix}/applied", format="parquet", filesystem=s3).to_table().to_pylist()
    check_applied(before, after, expected)
    assert s3.exists(f"{prefix}/applied/_SUCCESS") and s3.exists(f"{prefix}/train.csv")
