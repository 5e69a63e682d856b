"""How a prediction compares with the publisher's own name of the occurrence (``publisher_agreement``).

A data manager reviews the disagreements first. Names are compared as canonical names
(:func:`plantray.names.canonical`): the publisher's ``Quercus robur L.`` is the binomial ``Quercus robur``
(authorship and ranks below species dropped, a hybrid's sign kept), the prediction is a label (a binomial) or,
after the roll-up, a genus or family name.
"""

from __future__ import annotations

from plantray import columns as col
from plantray.names import canonical


def agreement(predicted: str | None, rank: str | None, publisher: str | None) -> str:
    """One of ``same species``, ``same genus``, ``different``, ``no publisher name``.

    Args:
        predicted: the reported name (species, or the genus/family of a rolled-up row; None when the model
            named nothing).
        rank: its taxonRank.
        publisher: the publisher's scientificName of the occurrence (None or blank when not given).
    Returns:
        ``same species`` when the species agree; ``same genus`` when only the genus does (a genus-rank
        prediction of the publisher's genus included); ``different`` otherwise, a family-rank or empty
        prediction included (they are worth a look).
    """
    pub_genus, pub_species, _ = canonical(publisher)
    if pub_genus is None:
        return col.NO_PUBLISHER_NAME
    genus, species, _ = canonical(predicted)
    if rank == "species" and species is not None and species == pub_species:
        return col.SAME_SPECIES
    if rank in ("species", "genus") and genus == pub_genus:
        return col.SAME_GENUS
    return col.DIFFERENT
