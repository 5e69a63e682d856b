"""The review loop as one product, in a real browser (issue 20, "How it is tested").

classify -> ``review build`` -> decisions by keyboard in headless Chromium (accept, pick a top name, type a name,
a genus, a name only a checklist has, reject, not a plant, unsure with a remark; on species, rolled-up and failed
rows) -> reload -> **Export decisions** -> ``review apply`` (refused without the checklist, then with it, and
``--training-manifest``) -> ``export dwca`` -> ``review build`` on the applied output, which shows what was
decided and takes one more decision; and the same through occurrence cards (one decision, a row per image) into
both the occurrence output and classify's.

Expected values are worked out here from what the test did on the page and from the labels and checklist it
wrote; outputs are read back with pyarrow and python-dwca-reader, never through plantray.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from dwca.read import DwCAReader
from PIL import Image

from plantray.cli import main
from tests.review_browser import dom_cards, open_site, wait_loaded

pytestmark = pytest.mark.browser

HEADER = ["identificationID", "decision", "scientificName", "identifiedBy", "dateIdentified",
          "identificationRemarks"]
# The model's labels: name -> (taxonID, genus, family); two oaks, so a genus can be the best-supported name
TAXA = {"Quercus robur": ("2878688", "Quercus", "Fagaceae"), "Quercus petraea": ("2880539", "Quercus", "Fagaceae"),
        "Fagus sylvatica": ("2882316", "Fagus", "Fagaceae"), "Rosa canina": ("8395064", "Rosa", "Rosaceae")}
OUTSIDE = "Abies alba"  # in the checklist only
OUTSIDE_TAXON = ("2685484", "Abies", "Pinaceae")
REVIEWER = "Ana Lopez"
REMARK = 'leaf only, "juvenile"?'
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/plantray/plantray/identification")
DWC = "http://rs.tdwg.org/dwc/terms/"
PLANTRAY = "https://github.com/plantray/plantray/blob/main/docs/terms.md#"
IDENTIFICATION = ("scientificName", "taxonRank", "taxonID", "genus", "family", "kingdom", "identificationID",
                  "identifiedBy", "dateIdentified", "identificationVerificationStatus", "classificationMethod")
MACHINE = (*IDENTIFICATION, "identificationRemarks")  # kept in machine_<column> on a decided row


def _model(path: str) -> None:
    """A tinyresnet whose head is scaled up (confident, varied answers) and leans to the oaks, so that with
    ``--rollup-threshold 0.6`` some images get a species, some the genus Quercus, some the family Fagaceae."""
    import torch

    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import Labels
    from plantray.model.network import build_model

    names = list(TAXA)
    labels = Labels(names, [TAXA[n][1] for n in names], [TAXA[n][2] for n in names], [TAXA[n][0] for n in names])
    torch.manual_seed(0)
    model, provenance = build_model("tinyresnet", len(names), "random")
    with torch.no_grad():
        model.fc.weight.mul_(30.0)
        model.fc.bias.copy_(torch.tensor([1.5, 1.5, 0.0, 0.0]))
    save_artifact(path, model, labels, make_card("tinyresnet", labels, EvalPreset(crop_size=32, resize_size=36),
                                                 provenance, version="test"))


def _jpeg(path: str, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)  # one colour per image, with noise: the model answers differently
    pixels = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG")


def kind(row: dict) -> str:
    if row["error"]:
        return "errors"
    return "rolled-up" if row["taxonRank"] in ("genus", "family") else "species"


@pytest.fixture(scope="module")
def world(ray_session, tmp_path_factory):
    """classify OUTPUT (+ ``_occurrences``) of 12 images (6 occurrences), one image over ``--max-pixels`` and
    one missing file; a checklist with a name the labels lack."""
    root = tmp_path_factory.mktemp("loop")
    model = str(root / "model")
    _model(model)
    rows = []
    for i in range(12):
        _jpeg(str(root / f"imgs/{i}.jpg"), 48, 40, seed=i)
        rows.append({"image_uri": f"imgs/{i}.jpg", "gbifID": str(100 + i // 2), "tag": "leaf" if i % 2 else "flower"})
    _jpeg(str(root / "imgs/big.jpg"), 80, 60, seed=12)  # 4,800 px: over --max-pixels, a person still sees it
    rows += [{"image_uri": "imgs/big.jpg", "gbifID": "200", "tag": "leaf"},
             {"image_uri": "imgs/missing.jpg", "gbifID": "201", "tag": "leaf"}]
    manifest = str(root / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    preds = str(root / "preds")
    assert main(["classify", "--model", model, "--input", manifest, "--output", preds, "--top-k", "4",
                 "--rollup-threshold", "0.6", "--max-pixels", "3000", "--aggregate", "occurrence",
                 "--num-actors", "1"]) == 0
    checklist = root / "Taxon.tsv"
    checklist.write_text("taxonID\tscientificName\ttaxonomicStatus\tkingdom\tfamily\tgenus\n"
                         f"{OUTSIDE_TAXON[0]}\t{OUTSIDE} Mill.\taccepted\tPlantae\t{OUTSIDE_TAXON[2]}\t"
                         f"{OUTSIDE_TAXON[1]}\n", encoding="utf-8")
    made = [kind(r) for r in read(preds)]
    ranks = {r["taxonRank"] for r in read(preds)}
    assert made.count("species") >= 6 and made.count("errors") == 2 and {"genus", "family"} <= ranks, (
        "the fixture's model no longer gives species, genus and family rows", made, ranks)
    return {"root": str(root), "model": model, "preds": preds, "occ": preds + "_occurrences",
            "checklist": str(checklist)}


def read(uri: str) -> list[dict]:
    return pads.dataset(uri, format="parquet").to_table().to_pylist()


# ------------------------------------------------------------------------------------------------ on the page

def start_reviewing(page) -> dt.datetime:
    page.fill("#reviewer", REVIEWER)
    page.press("#reviewer", "Enter")  # the first card is selected
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def focused_hint(page) -> str:
    return page.evaluate("() => document.querySelector('#cards article.focused .hint').textContent")


def plan(keys: list[str], by_id: dict) -> dict[str, tuple]:
    """What the test does to each card, in page order: key -> (keys to press or text to type, decision, name,
    remark); a card without a plan is skipped with ``j``."""
    species = iter([("a", "accepted", None, ""), ("2", "corrected", 1, ""),
                    ("c", "corrected", "other", ""), ("c", "corrected", OUTSIDE, ""),
                    ("e", "unsure", None, REMARK), ("n", "not a plant", None, "")])
    rolled = {"genus": iter([("a", "accepted", None, "")]),
              "family": iter([("c", "corrected", "Quercus", ""), ("r", "rejected", None, "")])}
    out = {}
    for key in keys:
        row = by_id[key]
        step = None
        if kind(row) == "species":
            step = next(species, None)
        elif kind(row) == "rolled-up":
            step = next(rolled[row["taxonRank"]], None)
        elif row["error"] == "image too large":  # not classified; the person identifies it from the full image
            step = ("c", "corrected", "Fagus sylvatica", "")
        if step is None:
            continue
        press, decision, name, remark = step
        if name is None and decision == "accepted":
            name = row["scientificName"]
        elif name == 1:
            name = row["topk_scientificName"][1]
        elif name == "other":
            name = next(n for n in TAXA if n != row["scientificName"])
        out[key] = (press, decision, name or "", remark)
    return out


def decide(page, steps: dict, keys: list[str]) -> None:
    """Makes the planned decisions with the keyboard, card after card (a decision selects the next card)."""
    for key in keys:
        if key not in steps:
            page.keyboard.press("j")
            continue
        press, decision, name, remark = steps[key]
        page.keyboard.press(press)
        if press == "c":
            # a label's name typed in lower case is saved as the label spells it (review apply compares spellings)
            page.keyboard.type(name if name == OUTSIDE else name.lower())
            hint = focused_hint(page)
            if name == OUTSIDE:  # allowed, with a warning saying what review apply will do with it
                assert "review apply refuses" in hint and "--checklist" in hint, hint
            else:  # species, genera and families of the labels are all names review apply takes
                assert hint == "", (name, hint)
            page.keyboard.press("Enter")
            alerts = page.text_content("#alerts")
            assert (f"Saved \u201c{OUTSIDE}\u201d" in alerts) if name == OUTSIDE else alerts == "", alerts
        elif press == "e":
            page.keyboard.type(remark)
            page.keyboard.press("Enter")
            page.keyboard.press("u")


def check_page(page, wanted: dict, total: int, before: bool = False) -> None:
    """Every card shows its decision (or none) and the header the progress."""
    for card in dom_cards(page):
        if card["key"] not in wanted:
            assert "decided-" not in card["cls"] and card["state"] == "", card
            continue
        decision, name, _ = wanted[card["key"]][1:]
        classes = card["cls"].split()
        assert "decided-" + decision.replace(" ", "-") in classes and ("decided-before" in classes) == before
        assert card["state"].startswith(decision.capitalize()) and f"by {REVIEWER}" in card["state"]
        assert (" as " + name in card["state"]) if name else " as " not in card["state"]
    assert page.text_content("#progress-text") == f"Reviewed {len(wanted)} / {total}"


def export(page, path) -> list[list[str]]:
    with page.expect_download() as download:
        page.click("#export")
    shutil.copy(download.value.path(), path)
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


# ------------------------------------------------------------------------------------------------ expectations

def person(machine: dict, decision: str, name: str, date: str) -> dict:
    """The identification columns a person's decision gives a row (the labels' and checklist's taxa)."""
    if decision == "unsure":
        return {c: machine[c] for c in IDENTIFICATION}
    taxon = TAXA.get(name) or (OUTSIDE_TAXON if name == OUTSIDE else None)
    genus_family = {"Quercus": "Fagaceae", "Fagus": "Fagaceae", "Rosa": "Rosaceae"}
    return {"scientificName": name or None,
            "taxonRank": "species" if taxon else ("genus" if name in genus_family else None),
            "taxonID": taxon[0] if taxon else None,
            "genus": taxon[1] if taxon else (name or None),
            "family": taxon[2] if taxon else genus_family.get(name),
            "kingdom": None if decision == "not a plant" else "Plantae",
            "identifiedBy": REVIEWER, "dateIdentified": date, "classificationMethod": "human",
            "identificationVerificationStatus": "verified using recorded media",
            "identificationID": str(uuid.uuid5(NAMESPACE, "\n".join(
                ["review", machine["identificationID"], decision, name, REVIEWER, date])))}


def check_applied(before: list[dict], after: list[dict], decided: dict, key: str = "identificationID") -> None:
    """``decided``: the rows' ``key`` value -> (decision, name, remark, date)."""
    assert len(after) == len(before)
    old = {r[key]: r for r in before}
    for r in after:
        ident = r["machine_" + key] if key == "identificationID" and r["review_decision"] else r[key]
        machine = old[ident]
        if ident not in decided:  # nobody decided it: as it was
            assert {k: r[k] for k in machine} == machine and r["review_decision"] is None
            continue
        decision, name, remark, date = decided[ident]
        assert (r["review_decision"], r["review_identifiedBy"], r["review_dateIdentified"],
                r["review_identificationRemarks"]) == (decision, REVIEWER, date, remark or None)
        assert {c: r[c] for c in IDENTIFICATION} == person(machine, decision, name, date), ident
        if remark and decision != "unsure":  # unsure: the machine's remarks stay, the person's in review_*
            assert r["identificationRemarks"].endswith(remark)
        assert all(r["machine_" + c] == machine[c] for c in MACHINE if c in machine)  # the machine's kept
        assert (r["confidence"], r["topk_scientificName"]) == (machine["confidence"], machine["topk_scientificName"])
        if decision != "unsure":
            assert r["classificationProbability"] is None


# ------------------------------------------------------------------------------------------------ the tests

def test_decisions_made_on_the_page_reach_the_predictions_the_archive_and_the_training_manifest(
        browser, world, tmp_path, capsys):
    rows = read(world["preds"])
    by_id = {r["identificationID"]: r for r in rows}
    site = str(tmp_path / "site")
    assert main(["review", "build", world["preds"], "--out", site, "--order", "confidence"]) == 0
    page = open_site(browser, site, len(rows))
    keys = [c["key"] for c in dom_cards(page)]
    assert sorted(keys) == sorted(by_id)
    steps = plan(keys, by_id)
    assert {s[1] for s in steps.values()} == {"accepted", "corrected", "rejected", "not a plant", "unsure"}
    started = start_reviewing(page)
    decide(page, steps, keys)
    check_page(page, steps, len(rows))
    page.reload()  # decisions survive a reload
    wait_loaded(page, len(rows))
    check_page(page, steps, len(rows))

    # Export: one row per decision, as made on the page
    table = export(page, tmp_path / "decisions.csv")
    page.close()
    assert table[0] == HEADER and sorted(r[0] for r in table[1:]) == sorted(steps)
    now = dt.datetime.now(dt.timezone.utc)
    decided = {}
    for ident, decision, name, by, date, remark in table[1:]:
        assert (decision, name, by, remark) == (*steps[ident][1:3], REVIEWER, steps[ident][3])
        assert started <= dt.datetime.fromisoformat(date.replace("Z", "+00:00")) <= now
        decided[ident] = (decision, name, remark, date)

    # review apply: the name only the checklist has is refused (its line named) until the checklist is given
    decisions, applied, manifest = str(tmp_path / "decisions.csv"), str(tmp_path / "applied"), str(tmp_path / "t.csv")
    apply = ["review", "apply", "--predictions", world["preds"], "--decisions", decisions, "--output", applied,
             "--training-manifest", manifest]
    assert main(apply) == 2
    err = capsys.readouterr().err
    line = 2 + [r[2] for r in table[1:]].index(OUTSIDE)  # no record spans two lines
    assert f"line {line}" in err and OUTSIDE in err and "--checklist" in err
    assert not os.path.exists(applied) and not os.path.exists(manifest)
    assert main([*apply, "--checklist", world["checklist"]]) == 0
    after = read(applied)
    check_applied(rows, after, decided)

    # The training manifest: images people named at species rank, with their taxon and organ tag
    with open(manifest, newline="", encoding="utf-8") as f:
        got = sorted((r["image_uri"], r["scientificName"], r["taxonID"], r["tag"]) for r in csv.DictReader(f))
    trainable = {i: d for i, d in decided.items() if d[0] in ("accepted", "corrected") and
                 (d[1] in TAXA or d[1] == OUTSIDE)}
    assert got == sorted((os.path.join(world["root"], by_id[i]["image_uri"]), d[1],
                          (TAXA.get(d[1]) or OUTSIDE_TAXON)[0], by_id[i]["tag"]) for i, d in trainable.items())
    assert any(by_id[i]["error"] for i in trainable)  # the image the model could not read, named by a person

    # export dwca: the machine's and the person's identification of each reviewed image, the person's current
    archive = str(tmp_path / "reviewed.zip")
    assert main(["export", "dwca", applied, archive]) == 0
    check_archive(archive, rows, decided)

    # Re-checking: a site built from the applied output shows what was decided, by whom; takes a new decision
    check_rebuilt(browser, world, applied, tmp_path, rows, steps, decided)


def check_archive(archive: str, rows: list[dict], decided: dict) -> None:
    by_id = {r["identificationID"]: r for r in rows}
    with DwCAReader(archive) as dwca:
        core = {c.id: c.data for c in dwca}
        idents = {e.data[DWC + "identificationID"]: (c.id, e.data) for c in dwca for e in c.extensions
                  if e.rowtype == DWC + "Identification"}
    people = {i: d for i, (_, d) in idents.items() if d[PLANTRAY + "classificationMethod"] == "human"}
    assert len(people) == sum(d[0] != "unsure" for d in decided.values())
    current = {}
    for ident, (decision, name, _, date) in decided.items():
        row = by_id[ident]
        # the model's identification, unverified, unless the model could not read the image
        if row["error"]:
            assert ident not in idents
        else:
            occ, machine = idents[ident]
            assert occ == row["gbifID"] and machine[DWC + "identificationVerificationStatus"] == "unverified"
            assert (machine[PLANTRAY + "classificationMethod"], machine[DWC + "scientificName"]) == (
                "machine", row["scientificName"])
        if decision == "unsure":
            continue
        want = person(row, decision, name, date)
        occ, d = idents[want["identificationID"]]
        assert occ == row["gbifID"]
        assert (d[DWC + "scientificName"], d[DWC + "taxonRank"], d[DWC + "taxonID"], d[DWC + "identifiedBy"],
                d[DWC + "dateIdentified"], d[DWC + "identificationVerificationStatus"]) == (
            name, want["taxonRank"] or "", want["taxonID"] or "", REVIEWER, date, "verified using recorded media")
        key = (date, want["identificationID"])
        if row["gbifID"] not in current or key > current[row["gbifID"]][0]:
            current[row["gbifID"]] = (key, want)
    failed = {r["gbifID"] for r in rows if r["error"] and r["identificationID"] not in decided}
    assert set(core) == {r["gbifID"] for r in rows} - failed  # the undecided missing image is left out
    for gbif, data in core.items():
        want = current.get(gbif, (None, {}))[1]
        assert (data[DWC + "identificationID"], data[DWC + "scientificName"], data[DWC + "identifiedBy"]) == (
            want.get("identificationID", ""), want.get("scientificName") or "", want.get("identifiedBy", ""))


def check_rebuilt(browser, world, applied: str, tmp_path, rows: list[dict], steps: dict, decided: dict) -> None:
    site = str(tmp_path / "site-again")
    assert main(["review", "build", applied, "--out", site, "--order", "confidence"]) == 0
    page = open_site(browser, site, len(rows))
    cards = {c["key"]: c for c in dom_cards(page)}
    assert sorted(cards) == sorted(r["identificationID"] for r in rows)  # keyed by the machine's ids still
    check_page(page, steps, len(rows), before=True)
    for r in rows:  # the model's names, and the images found through the run the predictions came from
        card = cards[r["identificationID"]]
        assert card["topk"] == (r["topk_scientificName"] or [])
        assert len(card["thumbs"]) == (0 if r["error"] == "not found" else 1)
    assert page.evaluate("() => document.querySelectorAll('#labels option').length") == len(
        TAXA) + len({t[1] for t in TAXA.values()}) + len({t[2] for t in TAXA.values()})
    page.select_option("#f-reviewed", "todo")
    undecided = [k for k in cards if k not in steps]
    assert [c["key"] for c in dom_cards(page)] == [k for k in cards if k in undecided]
    # one more decision on a card nobody decided: exported alone, applied to the applied output
    target = next(k for k in undecided if not next(r for r in rows if r["identificationID"] == k)["error"])
    start_reviewing(page)  # a new browser profile: the reviewer's name again
    page.click(f"#cards article[data-key='{target}'] .meta")  # select the card with the mouse
    page.keyboard.press("r")
    table = export(page, tmp_path / "more.csv")
    page.close()
    assert [r[:2] for r in table[1:]] == [[target, "rejected"]]
    again = str(tmp_path / "applied-again")
    assert main(["review", "apply", "--predictions", applied, "--decisions", str(tmp_path / "more.csv"), "--output",
                 again]) == 0
    check_applied(rows, read(again), {**decided, target: ("rejected", "", "", table[1][4])})


def test_occurrence_decisions_apply_to_the_occurrences_and_to_their_images(browser, world, tmp_path):
    images, occurrences = read(world["preds"]), read(world["occ"])
    site = str(tmp_path / "site")
    assert main(["review", "build", world["occ"], "--out", site]) == 0
    page = open_site(browser, site, len(occurrences))
    keys = [c["key"] for c in dom_cards(page)]
    occ = {o["gbifID"]: o for o in occurrences}
    classified = [k for k in keys if occ[k]["images_used"]]
    choices = {classified[0]: ("2", "corrected", occ[classified[0]]["topk_scientificName"][1]),
               classified[1]: ("n", "not a plant", ""), classified[3]: ("u", "unsure", "")}
    start_reviewing(page)
    for key in keys:
        page.keyboard.press(choices[key][0] if key in choices else "j")
    table = export(page, tmp_path / "decisions.csv")
    page.close()
    # one row per classified image of each decided occurrence, all saying the same
    expected = sorted((r["identificationID"], *choices[r["gbifID"]][1:]) for r in images
                      if r["gbifID"] in choices and r["error"] is None)
    assert sorted((r[0], r[1], r[2]) for r in table[1:]) == expected and {r[3] for r in table[1:]} == {REVIEWER}
    date = {r[0]: r[4] for r in table[1:]}
    by_occurrence = {}
    for r in images:
        if r["identificationID"] in date:
            by_occurrence[r["gbifID"]] = date[r["identificationID"]]

    # applied to the occurrence output: the occurrence rows
    out = str(tmp_path / "occ-applied")
    assert main(["review", "apply", "--predictions", world["occ"], "--decisions", str(tmp_path / "decisions.csv"),
                 "--output", out]) == 0
    after = read(out)
    assert sorted(r["gbifID"] for r in after) == sorted(occ)
    for r in after:
        o = occ[r["gbifID"]]
        if r["gbifID"] not in choices:
            assert r["review_decision"] is None and r["scientificName"] == o["scientificName"]
            continue
        _, decision, name = choices[r["gbifID"]]
        taxon = TAXA.get(name)
        assert (r["review_decision"], r["review_identifiedBy"], r["review_dateIdentified"]) == (
            decision, REVIEWER, by_occurrence[r["gbifID"]])
        assert r["machine_scientificName"] == o["scientificName"]
        assert (r["scientificName"], r["taxonID"], r["family"]) == (
            (name, taxon[0], taxon[2]) if decision == "corrected" else
            (o["scientificName"], None, None) if decision == "unsure" else (None, None, None))

    # re-checking: a site built from the applied occurrences shows their decisions; one more applies to them
    site = str(tmp_path / "site-again")
    assert main(["review", "build", out, "--out", site]) == 0
    page = open_site(browser, site, len(occurrences))
    shown = {c["key"]: c for c in dom_cards(page)}
    for gbif, (_, decision, name) in choices.items():
        assert "decided-before" in shown[gbif]["cls"].split() and shown[gbif]["state"].startswith(
            f"{decision.capitalize()}{' as ' + name if name else ''} by {REVIEWER}")
    target = next(k for k in classified if k not in choices)
    start_reviewing(page)
    page.click(f"#cards article[data-key='{target}'] .meta")
    page.keyboard.press("n")
    table = export(page, tmp_path / "more.csv")
    page.close()
    assert sorted(r[0] for r in table[1:]) == sorted(
        r["identificationID"] for r in images if r["gbifID"] == target and r["error"] is None)
    again = str(tmp_path / "occ-applied-again")
    assert main(["review", "apply", "--predictions", out, "--decisions", str(tmp_path / "more.csv"), "--output",
                 again]) == 0
    assert {r["gbifID"]: r["review_decision"] for r in read(again)} == {
        **{g: None for g in occ}, **{g: c[1] for g, c in choices.items()}, target: "not a plant"}

    # the same file applied to classify's OUTPUT: every image of those occurrences, then the archive
    out = str(tmp_path / "img-applied")
    assert main(["review", "apply", "--predictions", world["preds"], "--decisions", str(tmp_path / "decisions.csv"),
                 "--output", out]) == 0
    decided = {r["identificationID"]: (*choices[r["gbifID"]][1:], "", date[r["identificationID"]])
               for r in images if r["identificationID"] in date}
    check_applied(images, read(out), decided)
    archive = str(tmp_path / "occ.zip")
    assert main(["export", "dwca", out, archive]) == 0
    with DwCAReader(archive) as dwca:
        core = {c.id: c.data for c in dwca}
    for gbif, (_, decision, name) in choices.items():
        person_named = decision != "unsure"
        assert core[gbif][DWC + "identifiedBy"] == (REVIEWER if person_named else "")
        assert core[gbif][DWC + "scientificName"] == (name if person_named else "")
