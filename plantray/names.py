"""Scientific names reduced to their canonical parts: the one place plantray strips authorship and ranks.

Every caller that compares names (a checklist with a model's labels, a publisher's name with a prediction,
a checklist's taxa with labels) reduces both sides with :func:`canonical`, so ``Quercus robur L.``,
``Quercus robur`` and ``Quercus robur subsp. broteroana O.Schwarz`` all have the species ``Quercus robur``.

Hybrids keep their sign, written as GBIF's and the Catalogue of Life's canonical names write it: ``Mentha ×
piperita L.``, ``Mentha x piperita`` and ``Mentha ×piperita`` are the species ``Mentha × piperita``;
``× Triticosecale rimpaui`` is ``×Triticosecale rimpaui``.
"""

from __future__ import annotations

from typing import NamedTuple

HYBRID_SIGN = "×"
_HYBRID_MARKS = {"×", "x", "X"}
# Rank markers of names below species (ICN), as checklists write them.
INFRASPECIFIC_MARKERS = frozenset({"subsp.", "ssp.", "var.", "subvar.", "f.", "forma", "subf.", "nothosubsp.",
                                   "nothovar.", "cv."})
# Lower-case words that start an authorship rather than an infraspecific epithet ("Rosa canina de Candolle").
_AUTHOR_PARTICLES = frozenset({"de", "del", "della", "der", "den", "des", "di", "du", "la", "le", "van", "von",
                               "ex", "in", "et", "and", "sensu", "auct", "non", "nec", "emend", "hort"})


class Canonical(NamedTuple):
    """The parts of a scientific name without authorship; None where the name has no such part."""

    genus: str | None  # "Quercus", "×Triticosecale"
    species: str | None  # "Quercus robur", "Mentha × piperita"
    infraspecific: str | None  # "Acer campestre subsp. leiocarpum"

    @property
    def name(self) -> str | None:
        """The most specific part: the infraspecific name, else the species, else the genus."""
        return self.infraspecific or self.species or self.genus


def _epithet(word: str | None) -> str | None:
    """``word`` if it is an epithet (lower case, not an abbreviation such as ``sp.``), else None."""
    if not word or not word[:1].islower() or word.endswith(".") or not word.replace("-", "").isalpha():
        return None
    return word


def canonical(name: str | None) -> Canonical:
    """The genus, species and infraspecific name of a scientific name (authorship dropped).

    >>> canonical("Quercus robur L.")
    Canonical(genus='Quercus', species='Quercus robur', infraspecific=None)
    >>> canonical("Mentha x piperita L.").species
    'Mentha × piperita'
    >>> canonical("Quercus L.")
    Canonical(genus='Quercus', species=None, infraspecific=None)

    Args:
        name: any scientific name, with or without authorship (None or blank give all None).
    Returns:
        The parts; ``species`` is None for a name with no specific epithet (a genus, ``Quercus sp.``).
    """
    words = (name or "").split()
    if words and words[0] in _HYBRID_MARKS and len(words) > 1:  # intergeneric hybrid: "× Triticosecale"
        words = [HYBRID_SIGN + words[1], *words[2:]]
    if not words or not words[0][:1].isupper() and not words[0].startswith(HYBRID_SIGN):
        return Canonical(None, None, None)
    genus, rest = words[0], words[1:]
    hybrid = bool(rest) and rest[0] in _HYBRID_MARKS
    if hybrid:
        rest = rest[1:]
    elif rest and rest[0].startswith(HYBRID_SIGN) and len(rest[0]) > 1:  # "Quercus ×rosacea"
        hybrid, rest = True, [rest[0][1:], *rest[1:]]
    epithet = _epithet(rest[0] if rest else None)
    if epithet is None:
        return Canonical(genus, None, None)
    species = f"{genus} {HYBRID_SIGN} {epithet}" if hybrid else f"{genus} {epithet}"
    infra = None
    if len(rest) > 2 and rest[1] in INFRASPECIFIC_MARKERS and _epithet(rest[2]):
        infra = f"{species} {rest[1]} {rest[2]}"
    elif len(rest) > 1 and _epithet(rest[1]) and rest[1] not in _AUTHOR_PARTICLES:
        infra = f"{species} {rest[1]}"  # a trinomial without marker (GBIF's canonicalName "Quercus robur robur")
    return Canonical(genus, species, infra)


def species_name(name: str | None) -> str | None:
    """The species a name belongs to (``Quercus robur subsp. x L.`` -> ``Quercus robur``); None above species."""
    return canonical(name).species
