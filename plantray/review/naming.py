"""The names a reviewer may give, with their taxon: the model's labels, else a checklist.

A reviewer's ``scientificName`` is looked up in canonical form (:func:`plantray.model.taxa.name_key`, so
``Mentha x piperita`` finds the label ``Mentha × piperita``) among the labels' species, then their genera and
families (a person may name only the genus); names found nowhere are matched against ``--checklist``
(:func:`plantray.model.checklist.match_labels`, the rules of ``labels match``) when one is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantray import storage
from plantray.config import ConfigError
from plantray.model.labels import Labels, read_labels
from plantray.model.taxa import name_key
from plantray.names import canonical

RANKS = {"subsp.": "subspecies", "ssp.": "subspecies", "var.": "variety", "f.": "form", "forma": "form"}


@dataclass(frozen=True)
class Taxon:
    """What a person's identification says about its name (the identification columns it fills)."""

    name: str
    rank: str
    taxon_id: str | None = None
    genus: str | None = None
    family: str | None = None
    scientific_name_id: str | None = None
    name_according_to: str | None = None
    name_according_to_id: str | None = None


def _rank(name: str) -> str:
    parts = canonical(name)
    if parts.infraspecific:
        return RANKS.get(parts.infraspecific.split()[-2], "infraspecific name")
    return "species" if parts.species else "genus"


def label_taxa(labels: Labels) -> dict[str, Taxon]:
    """Name key -> taxon of every label, and of every genus and family the labels name."""
    found: dict[str, Taxon] = {}
    family_of = {g: f for g, f in zip(labels.genus, labels.family) if g}
    for family in filter(None, labels.family):
        found.setdefault(name_key(family), Taxon(family, "family", family=family))
    for genus in filter(None, labels.genus):
        found.setdefault(name_key(genus), Taxon(genus, "genus", genus=genus, family=family_of.get(genus)))
    for i, name in enumerate(labels.names):
        found[name_key(name)] = Taxon(
            name, _rank(name), labels.taxon_id[i], labels.genus[i] or canonical(name).genus, labels.family[i],
            labels.scientific_name_id[i], labels.name_according_to[i], labels.name_according_to_id[i])
    return found


def checklist_taxa(names: list[str], checklist: str) -> tuple[dict[str, Taxon], list[str]]:
    """Taxa of ``names`` from a checklist (``labels match``'s rules). Returns (name key -> taxon, names not
    matched: unmatched or homonyms)."""
    from plantray.model.checklist import match_labels

    filled, report = match_labels(Labels(list(names)), checklist, kingdom="Plantae")
    found = {}
    for i, name in enumerate(filled.names):
        if name in report.matched:
            accepted = filled.accepted_name[i] or name
            found[name_key(name)] = Taxon(canonical(accepted).name or name, _rank(name), filled.taxon_id[i],
                                          filled.genus[i], filled.family[i], filled.scientific_name_id[i],
                                          filled.name_according_to[i], filled.name_according_to_id[i])
    return found, [n for n in names if name_key(n) not in found]


def labels_of(predictions: str, config: dict) -> str | None:
    """The labels of the model that made the predictions: ``MODEL/labels.csv`` of the run that wrote them."""
    model = config.get("model")
    if not model:
        return None
    uri = storage.join(model, "labels.csv")
    return uri if storage.exists(uri) else None


def open_labels(uri: str | None, predictions: str) -> Labels:
    """Reads the labels names are checked against.

    Raises:
        ConfigError: no labels given and none found beside the predictions' model.
    """
    if uri is None:
        raise ConfigError(f"cannot tell which model made {predictions!r} (no run record naming it): pass "
                          "--labels MODEL/labels.csv, the labels of the model that made the predictions")
    if not uri.lower().endswith((".csv", ".tsv", ".txt")) and storage.exists(storage.join(uri, "labels.csv")):
        uri = storage.join(uri, "labels.csv")  # a model directory
    return read_labels(uri)


def resolve_names(decisions: list, labels: Labels, labels_uri: str, checklist: str | None) -> dict[str, Taxon]:
    """Name key -> taxon of every name the decisions give, from the labels, else the checklist.

    Raises:
        DecisionsError: a name found in neither (the first line at fault, and how many others).
    """
    from plantray.review.decisions import DecisionsError

    taxa = label_taxa(labels)
    unknown = sorted({d.scientific_name for d in decisions if d.scientific_name and
                      name_key(d.scientific_name) not in taxa})
    if unknown and checklist:
        found, _ = checklist_taxa(unknown, checklist)
        taxa.update(found)
    bad = [d for d in decisions if d.scientific_name and name_key(d.scientific_name) not in taxa]
    if bad:
        where = f"the labels {labels_uri!r}" + (f" or the checklist {checklist!r}" if checklist else "")
        more = f" (and {len(bad) - 1} more: lines {', '.join(str(d.line) for d in bad[1:6])})" if len(bad) > 1 else ""
        raise DecisionsError(f"--decisions: line {bad[0].line}: scientificName {bad[0].scientific_name!r} matches "
                             f"no name in {where}{more}; use a label's name"
                             + ("" if checklist else " or pass --checklist with a checklist that has it")
                             + "; nothing was written")
    return taxa
