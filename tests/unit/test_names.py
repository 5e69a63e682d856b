"""One reduction of scientific names for every caller: checklists, label matching and publisher agreement."""

from __future__ import annotations

import pytest

from plantray.inference.agreement import agreement
from plantray.names import canonical, species_name
from plantray.sources.checklist import match_names


@pytest.mark.parametrize("name, genus, species, infra", [
    ("Quercus robur L.", "Quercus", "Quercus robur", None),
    ("Quercus robur", "Quercus", "Quercus robur", None),
    ("Quercus L.", "Quercus", None, None),
    ("Quercus sp.", "Quercus", None, None),
    ("Picea abies (L.) H.Karst.", "Picea", "Picea abies", None),
    ("Rosa canina de Candolle", "Rosa", "Rosa canina", None),
    ("Acer campestre subsp. leiocarpum Pax", "Acer", "Acer campestre", "Acer campestre subsp. leiocarpum"),
    ("Quercus robur broteroana", "Quercus", "Quercus robur", "Quercus robur broteroana"),
    # hybrids keep their sign, however it is written
    ("Mentha × piperita L.", "Mentha", "Mentha × piperita", None),
    ("Mentha x piperita L.", "Mentha", "Mentha × piperita", None),
    ("Mentha ×piperita", "Mentha", "Mentha × piperita", None),
    ("× Triticosecale rimpaui Wittm.", "×Triticosecale", "×Triticosecale rimpaui", None),
    ("Acer novae-angliae L.", "Acer", "Acer novae-angliae", None),
    (None, None, None, None),
    ("   ", None, None, None),
])
def test_canonical(name, genus, species, infra):
    assert tuple(canonical(name)) == (genus, species, infra)
    assert species_name(name) == species


def test_hybrid_no_longer_reduces_to_its_genus_and_sign():
    # The checklist reduction used to keep the first two words: "Mentha ×".
    matched, unmatched = match_names(["Mentha × piperita L.", "Mentha x piperita", "Mentha aquatica L."],
                                     ["Mentha × piperita", "Mentha spicata"])
    assert matched == {"Mentha × piperita L.": "Mentha × piperita", "Mentha x piperita": "Mentha × piperita"}
    assert unmatched == ["Mentha aquatica L."]
    # a label written with "x" matches the checklist's "×"
    assert match_names(["Mentha × piperita L."], ["Mentha x piperita"])[0] == {
        "Mentha × piperita L.": "Mentha x piperita"}


def test_agreement_uses_the_same_reduction():
    assert agreement("Mentha × piperita", "species", "Mentha x piperita L.") == "same species"
    assert agreement("Mentha × piperita", "species", "Mentha aquatica L.") == "same genus"
    assert agreement("Quercus robur", "species", "Quercus robur subsp. broteroana O.Schwarz") == "same species"
    assert agreement("Quercus", "genus", "Quercus robur L.") == "same genus"
    assert agreement("Fagaceae", "family", "Quercus robur L.") == "different"
    assert agreement("Quercus robur", "species", " ") == "no publisher name"
