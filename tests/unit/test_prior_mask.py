"""Location priors: the mask, restrict/reweight arithmetic, region lookup, checklist reading (CSV and DwC-A)."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pyarrow as pa
import pytest

from plantray.config import ConfigError
from plantray.darwincore.terms import prior_remarks
from plantray.inference.prior import apply_prior, build_prior, region_index
from plantray.sources.checklist import Checklist, match_names, read_checklist
from plantray.synth import ranges

LABELS = ["Acer campestre", "Quercus robur", "Rosa canina", "Salvia pratensis"]

GBIF_META = """<?xml version="1.0" encoding="UTF-8"?>
<archive xmlns="http://rs.tdwg.org/dwc/text/">
  <core encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy="" ignoreHeaderLines="1"
        rowType="http://rs.tdwg.org/dwc/terms/Taxon">
    <files><location>taxon.txt</location></files>
    <id index="0"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/scientificName"/>
  </core>
  <extension encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""
             ignoreHeaderLines="1" rowType="http://rs.gbif.org/terms/1.0/Distribution">
    <files><location>distribution.txt</location></files>
    <coreid index="0"/>
    <field index="1" term="http://rs.tdwg.org/dwc/terms/locationID"/>
    <field index="2" term="http://rs.tdwg.org/dwc/terms/countryCode"/>
    <field index="3" term="http://rs.tdwg.org/dwc/terms/occurrenceStatus"/>
    <field index="4" term="http://rs.tdwg.org/dwc/terms/establishmentMeans"/>
  </extension>
</archive>
"""


def test_restrict_zeroes_absent_species_and_renormalises():
    probs = np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], np.float32)
    mask = np.array([[False, True, True, False]])
    out = apply_prior(probs, mask, np.array([0, -1]), "restrict", 0.01)
    # Row 0: 0.2 and 0.2 kept, each / 0.4. Row 1 has no region: unchanged.
    np.testing.assert_allclose(out[0], [0, 0.5, 0.5, 0], atol=1e-6)
    np.testing.assert_allclose(out[1], probs[1], atol=1e-7)


def test_reweight_multiplies_absent_by_floor():
    probs = np.array([[0.6, 0.3, 0.1, 0.0]], np.float32)
    mask = np.array([[False, True, True, True]])
    out = apply_prior(probs, mask, np.array([0]), "reweight", 0.1)
    total = 0.6 * 0.1 + 0.3 + 0.1
    np.testing.assert_allclose(out[0], [0.06 / total, 0.3 / total, 0.1 / total, 0], rtol=1e-5)
    assert np.argmax(out[0]) == 1  # the absent species no longer wins


def test_restrict_with_all_present_species_at_zero_spreads_evenly():
    probs = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    out = apply_prior(probs, np.array([[False, False, True, True]]), np.array([0]), "restrict", 0.01)
    np.testing.assert_allclose(out[0], [0, 0, 0.5, 0.5])


def _checklist(entries):
    return Checklist("mem.csv", "csv", entries)


def test_build_prior_countries_states_and_unmatched():
    prior = build_prior(_checklist([("Quercus robur L.", "FR", None), ("Rosa canina", "FR", "Bretagne"),
                                    ("Acer campestre", "DE", None), ("Picea abies", "NO", None)]),
                        LABELS, "restrict")
    assert prior.unmatched == ["Picea abies"] and prior.matched == 3
    assert set(prior.regions) == {("FR", None), ("FR", "bretagne"), ("DE", None)}  # NO: no model species
    fr, bretagne, de = (prior.mask[prior.regions[k]] for k in [("FR", None), ("FR", "bretagne"), ("DE", None)])
    assert fr.tolist() == [False, True, True, False]  # every species listed anywhere in France
    assert bretagne.tolist() == [False, True, True, False]  # the state's species + the country-wide ones
    assert de.tolist() == [True, False, False, False]
    index = region_index(prior.regions, ["fr", "FR", None, " ", "NO", "DE"], ["BRETAGNE", "Alsace", None, None,
                                                                          None, "Bayern"])
    assert index.tolist() == [prior.regions[("FR", "bretagne")], prior.regions[("FR", None)], -1, -1, -2,
                              prior.regions[("DE", None)]]


def test_state_entry_excludes_species_listed_only_elsewhere_in_the_country():
    prior = build_prior(_checklist([("Rosa canina", "FR", "Bretagne"), ("Salvia pratensis", "FR", "Alsace"),
                                    ("Quercus robur", "FR", None)]), LABELS, "restrict")
    assert prior.mask[prior.regions[("FR", "alsace")]].tolist() == [False, True, False, True]


def test_build_prior_refusals():
    with pytest.raises(ConfigError, match="none of its 1 species"):
        build_prior(_checklist([("Picea abies", "NO", None)]), LABELS, "restrict")
    with pytest.raises(ConfigError, match="--prior-floor"):
        build_prior(_checklist([("Rosa canina", "FR", None)]), LABELS, "reweight", floor=1.5)


def test_prior_apply_status_column():
    prior = build_prior(_checklist([("Rosa canina", "FR", None), ("Salvia pratensis", "FR", None)]), LABELS,
                        "restrict")
    table = pa.table({"countryCode": ["FR", None, "XX", "FR"]})
    probs = np.full((3, 4), 0.25, np.float32)
    out, status = prior.apply(table, probs, np.array([0, 1, 2]))  # row 3 failed upstream
    assert status.to_pylist() == ["restrict", "no location", "region not covered", None]
    np.testing.assert_allclose(out[0], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(out[1:], 0.25)


def test_match_names_strips_authorship():
    matched, unmatched = match_names(["Rosa canina L.", "Quercus robur", "Acer campestre subsp. leiocarpum Pax",
                                      "Picea abies (L.) H.Karst."], LABELS)
    assert matched == {"Rosa canina L.": "Rosa canina", "Quercus robur": "Quercus robur",
                       "Acer campestre subsp. leiocarpum Pax": "Acer campestre"}
    assert unmatched == ["Picea abies (L.) H.Karst."]


def test_read_checklist_csv(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("scientificName,countryCode,stateProvince,occurrenceStatus\nRosa canina,fr,,present\n"
                    "Quercus robur,DE,Bayern,\nAcer campestre,ES,,absent\nSalvia pratensis,,,\n")
    cl = read_checklist(str(path))
    assert cl.kind == "csv" and cl.entries == [("Rosa canina", "FR", None), ("Quercus robur", "DE", "Bayern")]
    assert cl.dropped == {"not present": 1, "no country": 1}


@pytest.mark.parametrize("text, match", [("name,country\nRosa canina,FR\n", "lacks column"),
                                         ("scientificName,countryCode\nRosa canina,\n", "no present species")])
def test_bad_checklist_csv(tmp_path, text, match):
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_checklist(str(path))


def test_missing_checklist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_checklist(str(tmp_path / "nope.csv"))


def _zip(path, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return str(path)


def test_read_checklist_gbif_style_archive(tmp_path):
    taxa = "id\tscientificName\n1\tRosa canina L.\n2\tQuercus robur L.\n3\tAcer campestre L.\n"
    dist = ("id\tlocationID\tcountryCode\toccurrenceStatus\testablishmentMeans\n1\tISO3166-1:FR\t\tpresent\tnative\n"
            "2\t\tde\tcommon\tintroduced\n3\tISO3166-1:ES\tES\tabsent\t\n9\t\tFR\tpresent\t\n")
    uri = _zip(tmp_path / "list.zip", {"meta.xml": GBIF_META, "taxon.txt": taxa, "distribution.txt": dist})
    cl = read_checklist(uri)
    assert cl.kind == "dwca"
    assert cl.entries == [("Rosa canina L.", "FR", None), ("Quercus robur L.", "DE", None)]
    assert cl.dropped == {"not present": 1, "no name": 1}


def test_occurrence_archive_is_not_a_checklist(tmp_path):
    meta = GBIF_META.replace("dwc/terms/Taxon", "dwc/terms/Occurrence")
    uri = _zip(tmp_path / "occ.zip", {"meta.xml": meta, "taxon.txt": "id\n", "distribution.txt": "id\n"})
    with pytest.raises(ConfigError, match="Taxon core"):
        read_checklist(uri)


def test_synth_checklists_agree(tmp_path):
    names = LABELS
    r = ranges.species_ranges(names, 6, seed=3)
    assert r == ranges.species_ranges(names, 6, seed=3)
    assert all(1 <= len(c) <= 2 and set(c) <= set(ranges.COUNTRIES[:6]) for c in r.values())
    rows = list(csv.DictReader(io.StringIO(ranges.checklist_csv(r).decode())))
    assert sorted((row["scientificName"], row["countryCode"]) for row in rows) == sorted(
        (n, c) for n, cs in r.items() for c in cs)
    (tmp_path / "c.zip").write_bytes(ranges.checklist_dwca(r, {n: str(i) for i, n in enumerate(names)}))
    assert sorted(read_checklist(str(tmp_path / "c.zip")).entries) == sorted(
        (row["scientificName"], row["countryCode"], None) for row in rows)


def test_synth_country_limit_matches_list():
    from plantray.commands.synth import MAX_COUNTRIES

    assert MAX_COUNTRIES == len(ranges.COUNTRIES)


def test_prior_remarks():
    out = prior_remarks(np.array(["m (confidence 0.5, rank species)", None, "m", "m"], dtype=object),
                        ["restrict", "restrict", "no location", None])
    assert out[0].startswith("m (confidence 0.5, rank species); location prior: restricted")
    assert out[1] is None and out[2] == "m; location prior not applied: no location" and out[3] == "m"
