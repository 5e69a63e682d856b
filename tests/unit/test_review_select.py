"""Review sets: parsing --select, which card rows it keeps, the stratified sample, the order, image links."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from plantray.config import ConfigError
from plantray.review.cards import CardOptions, image_cards, image_link
from plantray.review.select import order_keys, parse_selection, sample_group, select_cards

AGREEMENTS = ["different", "same genus", "same species", "no publisher name", None]
PRIORS = ["restrict", "reweight", "no location", "region not covered", None]


def rows(n: int = 200, seed: int = 0) -> list[dict]:
    """Card rows with every kind, agreement and prior, and spread confidences."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = ["species", "rolled-up", "unknown", "errors"][i % 4]
        name = {"species": f"Species {i % 7}", "rolled-up": f"Genus{i % 3}", "unknown": None, "errors": None}[kind]
        out.append({"key": f"k{i}", "kind": kind, "scientificName": name,
                    "confidence": None if kind == "errors" else round(rng.random(), 3),
                    "agreement": AGREEMENTS[i % 5], "prior": PRIORS[(i // 5) % 5],
                    "_species": name or f"({kind})", "_sample": rng.getrandbits(62)})
    return out


def kept(selection_terms: list[str], data: list[dict]) -> set[str]:
    table = pa.Table.from_pylist(data)
    return set(select_cards(table, parse_selection(selection_terms)).column("key").to_pylist())


def test_no_selection_keeps_everything():
    data = rows()
    assert kept([], data) == {r["key"] for r in data}


@pytest.mark.parametrize("terms, keep", [
    (["unknown"], lambda r: r["kind"] == "unknown"),
    (["unknown,rolled-up"], lambda r: r["kind"] in ("unknown", "rolled-up")),
    (["unknown", "rolled-up"], lambda r: r["kind"] in ("unknown", "rolled-up")),
    (["errors"], lambda r: r["kind"] == "errors"),
    (["confidence=0.2:0.6"], lambda r: r["confidence"] is not None and 0.2 <= r["confidence"] <= 0.6),
    (["confidence=:0.3"], lambda r: r["confidence"] is not None and r["confidence"] <= 0.3),
    (["confidence=0.9:"], lambda r: r["confidence"] is not None and r["confidence"] >= 0.9),
    (["agreement=different"], lambda r: r["agreement"] == "different"),
    (["publisher_agreement=different,same genus"], lambda r: r["agreement"] in ("different", "same genus")),
    (["prior=applied"], lambda r: r["prior"] in ("restrict", "reweight")),
    (["prior=not-applied"], lambda r: r["prior"] not in ("restrict", "reweight")),
    (["prior=no location"], lambda r: r["prior"] == "no location"),
    (["species=Species 3", "species=Genus1"], lambda r: r["scientificName"] in ("Species 3", "Genus1")),
    (["species", "agreement=different", "confidence=:0.5"],
     lambda r: r["kind"] == "species" and r["agreement"] == "different" and r["confidence"] <= 0.5),
])
def test_selection_keeps_exactly_the_matching_rows(terms, keep):
    data = rows()
    expected = {r["key"] for r in data if keep(r)}
    assert expected and kept(terms, data) == expected


@pytest.mark.parametrize("term, words", [
    ("bogus", "not one of"), ("confidence=0.5", "LO:HI"), ("confidence=a:b", "not a number"),
    ("confidence=0.8:0.2", "empty"), ("confidence=0:2", "between 0 and 1"), ("agreement=maybe", "not one of"),
    ("prior=sometimes", "not one of"), ("colour=red", "not a selection"),
])
def test_bad_selections_are_refused_naming_the_term(term, words):
    with pytest.raises(ConfigError, match=words) as e:
        parse_selection([term])
    assert repr(term) in str(e.value)


def test_sample_keeps_the_lowest_ranks_of_each_stratum():
    data = rows(400)
    table = pa.Table.from_pylist(data)
    for name in {r["_species"] for r in data}:
        group = table.filter(pc.equal(table["_species"], name))
        mine = sorted((r for r in data if r["_species"] == name), key=lambda r: r["_sample"])
        got = sample_group(group, 3).column("key").to_pylist()
        assert sorted(got) == sorted(r["key"] for r in mine[:3])
        assert sample_group(group, 10_000).num_rows == len(mine)


def test_orders_put_disagreements_uncertain_names_first_and_errors_last():
    cards = [("species", "same species", 0.1, "B"), ("species", "different", 0.9, "A"),
             ("species", "different", 0.2, "C"), ("unknown", None, 0.3, None), ("errors", None, None, None),
             ("rolled-up", "same genus", 0.5, "D"), ("species", "no publisher name", 0.05, "E")]
    by_agreement = sorted(cards, key=lambda c: order_keys(c[0], c[1], c[2], c[3], "agreement"))
    assert [(c[1], c[2]) for c in by_agreement] == [("different", 0.2), ("different", 0.9), ("same genus", 0.5),
                                                    ("no publisher name", 0.05), (None, 0.3),
                                                    ("same species", 0.1), (None, None)]
    by_confidence = sorted(cards, key=lambda c: order_keys(c[0], c[1], c[2], c[3], "confidence"))
    assert [c[2] for c in by_confidence] == [0.05, 0.1, 0.2, 0.3, 0.5, 0.9, None]
    by_name = sorted(cards, key=lambda c: order_keys(c[0], c[1], c[2], c[3], "species"))
    assert [c[3] for c in by_name] == ["A", "B", "C", "D", "E", None, None] and by_name[-1][0] == "errors"


@pytest.mark.parametrize("uri, source, link", [
    ("https://example.org/a.jpg", "https://example.org/a.jpg", "https://example.org/a.jpg"),
    ("s3://bucket/a b.jpg", "s3://bucket/a b.jpg", None),  # a space: a browser would mangle it
    ("s3://bucket/a.jpg", "s3://bucket/a.jpg", "s3://bucket/a.jpg"),
    ("javascript:alert(1)", "/data/javascript:alert(1)", None),
    (" JavaScript:alert(1)", "/data/ JavaScript:alert(1)", None),
    ("data:text/html,<b>", "/data/data:text/html,<b>", None),
    ("ftp://example.org/a.jpg", "ftp://example.org/a.jpg", None),
    ("imgs/javascript:x.jpg", "/data/imgs/javascript:x.jpg", "../imgs/javascript%3Ax.jpg"),
    ("imgs/a#b?.jpg", "/data/imgs/a#b?.jpg", "../imgs/a%23b%3F.jpg"),
    ("/data/site/x.jpg", "/data/site/x.jpg", "./x.jpg"),
    ("", "", None),
])
def test_image_links(uri, source, link):
    assert image_link(uri, source, "/data/site") == link


def test_no_local_links_from_a_site_on_object_storage():
    assert image_link("/data/x.jpg", "/data/x.jpg", None) is None


def test_image_cards_carry_every_shown_value():
    table = pa.table({
        "image_uri": ["a.jpg", "b.jpg", "c.jpg"], "identificationID": ["i1", "i2", "i3"],
        "scientificName": ["Quercus robur", None, "Quercus"], "confidence": [0.9, 0.2, 0.5],
        "taxonRank": ["species", None, "genus"], "topk_scientificName": [["Quercus robur"], ["X y"], ["Q r", "Q p"]],
        "topk_confidence": [[0.9], [0.2], [0.3, 0.2]], "input_scientificName": ["Quercus robur L.", None, "Q. r."],
        "publisher_agreement": ["same species", "no publisher name", "same genus"], "gbifID": ["1", "2", "3"],
        "license": ["CC0-1.0", None, None], "rightsHolder": [None, "Me", None],
        "error": [None, None, "http 404"]})
    cards = image_cards(table, CardOptions(image_base="/base", site_dir="/base/site"))
    assert cards.column("kind").to_pylist() == ["species", "unknown", "errors"]
    assert cards.column("ids").to_pylist() == [["i1"], ["i2"], ["i3"]]
    assert cards.column("sources").to_pylist() == [["/base/a.jpg"], ["/base/b.jpg"], ["/base/c.jpg"]]
    first, second, third = (json.loads(c) for c in cards.column("card").to_pylist())
    assert first["name"] == "Quercus robur" and first["publisherName"] == "Quercus robur L."
    assert first["topk"] == [["Quercus robur", 0.9]] and first["images"][0]["license"] == "CC0-1.0"
    assert first["images"][0]["link"] == "../a.jpg" and "rightsHolder" not in first["images"][0]
    assert "name" not in second and second["images"][0]["rightsHolder"] == "Me"
    assert third["error"] == "http 404" and third["rank"] == "genus"
