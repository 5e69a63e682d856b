"""``plantray labels match``: taxon identifiers for a model's labels from a checklist (offline).

Fills ``taxonID``, ``scientificNameID``, ``acceptedNameUsage``, ``genus``, ``family`` and ``nameAccordingTo``
(which checklist the taxonID comes from) of a labels file from a checklist the user downloaded (the GBIF
Backbone Taxonomy's ``Taxon.tsv`` or ``backbone.zip``, any Darwin Core Taxon table/archive, or the Catalogue of
Life eXtended Release as ChecklistBank exports it, a ColDP package), and reports unmatched names, synonyms and
homonyms (the rules are in :mod:`plantray.model.checklist`). Names and their order are unchanged, so the filled
file can replace a model directory's ``labels.csv`` (the card's SHA-256 covers the weights only); when it does,
the card's ``taxonomy`` names the checklist too.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantray.commands.record import run_record, utc_now
from plantray.config import ConfigError, JobConfig, field

REPORT_SUFFIX = ".match.json"


@dataclass
class LabelsMatchConfig(JobConfig):
    """Settings of ``plantray labels match``."""

    labels: str = field("", required=True, help="labels CSV or text file (e.g. MODEL/labels.csv)")
    checklist: str = field("", required=True, help="checklist: GBIF Backbone Taxon.tsv (or another Darwin Core "
                           "Taxon .tsv/.csv), a Darwin Core Archive whose core is Taxon (e.g. backbone.zip), or a "
                           "Catalogue of Life Data Package (ColDP zip or folder, e.g. COL XR from ChecklistBank)")
    checklist_name: str | None = field(None, help="what the checklist is, written as every filled label's "
                                       "nameAccordingTo (default: the title and version in its metadata, "
                                       "else its file name)")
    output: str | None = field(None, help="labels CSV to write (default: replace LABELS in place)")
    kingdom: str = field("Plantae", help="match only taxa of this kingdom ('any' for all kingdoms)")


def match(cfg: LabelsMatchConfig) -> dict:
    """Runs ``plantray labels match``; returns the report (also written to ``OUTPUT.match.json``).

    Raises:
        ConfigError: unreadable labels, or a checklist that is missing or lacks the Taxon columns.
    """
    from plantray import storage
    from plantray.model.checklist import match_labels
    from plantray.model.labels import read_labels

    if not cfg.kingdom:
        raise ConfigError("--kingdom must name a kingdom (e.g. Plantae) or be 'any'")
    started = utc_now()
    labels = read_labels(cfg.labels)
    filled, report = match_labels(labels, cfg.checklist, None if cfg.kingdom == "any" else cfg.kingdom,
                                  cfg.checklist_name)
    output = cfg.output or cfg.labels
    storage.write_bytes(output, filled.to_csv().encode())
    summary = {"output": output, "report": output + REPORT_SUFFIX, **report.to_dict()}
    if (card := _update_card(output, filled)) is not None:
        summary["model_card"] = card
    storage.write_bytes(summary["report"], run_record("labels match", cfg, summary, started))
    return summary


def _update_card(output: str, labels) -> str | None:
    """Records the labels' checklist in the model card when OUTPUT is a model directory's labels.csv (a
    card-only change: the weights and their SHA-256 stay). Returns the card's URI, None when there is none."""
    import json

    from plantray import storage
    from plantray.model.artifact import CARD, LABELS

    directory = storage.dirname(output)
    card_uri = storage.join(directory, CARD)
    if output.rstrip("/").rsplit("/", 1)[-1] != LABELS or not storage.exists(card_uri):
        return None
    card = json.loads(storage.read_bytes(card_uri))
    card["taxonomy"] = labels.taxonomy()
    storage.write_bytes(card_uri, json.dumps(card, indent=2).encode())
    return card_uri


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI: counts, then every synonym, homonym and unmatched name."""
    lines = [f"matched {len(summary['matched'])}/{summary['labels']} labels ({len(summary['synonyms'])} through "
             f"a synonym; {len(summary['homonyms'])} homonyms and {len(summary['unmatched'])} unmatched left "
             f"without taxonID) from {summary['rows_read']} checklist rows -> {summary['output']}",
             f"  taxonIDs according to: {summary['nameAccordingTo']}"
             + (f" <{summary['nameAccordingToID']}>" if summary.get("nameAccordingToID") else "")
             + f" ({summary['checklist_format']})"]
    lines += [f"  synonym:   {s['name']} -> {s['accepted']} (taxonID {s['taxonID']})" for s in summary["synonyms"]]
    lines += [f"  homonym:   {h['name']}: several accepted taxa {h['candidates']}; set its taxonID by hand"
              for h in summary["homonyms"]]
    lines += [f"  unmatched: {name}" for name in summary["unmatched"]]
    if summary["rows_skipped"]:
        lines.append(f"  skipped {summary['rows_skipped']} malformed checklist lines")
    return "\n".join(lines)


CONFIG = LabelsMatchConfig
run = match
