"""report.md's sections on where a model goes wrong, and ``per_species.csv``: accuracy per species, the
most-confused species pairs, and accuracy against coverage as ``--min-confidence`` varies
(the figures of :mod:`plantray.evaluation.breakdown`)."""

from __future__ import annotations

import csv
import io

from plantray.evaluation.breakdown import CONFUSED_PAIRS
from plantray.evaluation.markdown import DASH, pct, table, text

PER_SPECIES_CSV, COVERAGE_PNG = "per_species.csv", "coverage.png"
WORST_SPECIES = 15  # species per (model, test set) in report.md; the CSV holds all


def _heading(e: dict) -> str:
    return f"### {text(e['model'])} / {e['test_set']}"


def lowest_species(e: dict, limit: int = WORST_SPECIES) -> list[dict]:
    """The species of one result with the lowest Top-1, the commonest first among equals, then by name."""
    return sorted(e["species"], key=lambda s: (s["top1"], -s["images"], s["scientificName"]))[:limit]


def _instead(s: dict) -> str:
    return f"{text(s['named_instead'])} ({s['named_instead_images']})" if s["named_instead"] else DASH


def species_section(summary: dict) -> list[str]:
    """Per (model, test set): the species with the lowest Top-1, with the species most often named instead."""
    ks = summary["ks"]
    out = ["## Accuracy per species",
           f"The {WORST_SPECIES} species with the lowest Top-1 in each test set; every species of every test set "
           f"is in [{PER_SPECIES_CSV}]({PER_SPECIES_CSV}). \"Named instead\": the species most often ranked "
           "first for its images, with how many images.", ""]
    for e in summary["results"]:
        if not e["species"]:
            continue
        rows = [[text(s["scientificName"]), s["images"], *(pct(s[f"top{k}"]) for k in ks), _instead(s)]
                for s in lowest_species(e)]
        shown = (f"All {len(e['species'])} species" if len(e["species"]) <= WORST_SPECIES else
                 f"{WORST_SPECIES} of {len(e['species'])} species")
        out += [_heading(e), f"{shown}, lowest Top-1 first.", "",
                *table(["Species", "Images", *(f"Top-{k} (%)" for k in ks), "Named instead (images)"], rows), ""]
    return out


def confused_section(summary: dict) -> list[str]:
    """Per (model, test set): the (true species, species named instead) pairs that cost the most images."""
    out = ["## Most-confused species pairs",
           f"The {CONFUSED_PAIRS} (species, species named instead) pairs that account for the most images whose "
           "top-1 was wrong, per test set.", ""]
    for e in summary["results"]:
        rows = [[text(p["true"]), text(p["predicted"]), f"{p['images']} of {p['of']}", pct(p["share"])]
                for p in e["confused"]]
        body = (table(["Species", "Named as", "Images", "Share of the species' images (%)"], rows) if rows
                else ["(no image was named as another species)"])
        out += [_heading(e), "", *body, ""]
    return out


def coverage_table(summary: dict, model: str) -> list[str]:
    """One model's table: per ``--min-confidence``, each test set's coverage and Top-1 of the named images,
    and each ``--ood`` set's images still named."""
    results = [e for e in summary["results"] if e["model"] == model]
    ood = [o for o in summary.get("ood", []) if o["model"] == model]
    header = ["--min-confidence", *(h for e in results for h in (f"{e['test_set']} coverage (%)",
                                                                   f"{e['test_set']} Top-1 (%)")),
              *(f"{o['ood_set']} (--ood) named (%)" for o in ood)]
    rows = []
    for i, point in enumerate(results[0]["coverage"] if results else []):
        rows.append([f"{point['threshold']:g}", *(c for e in results for c in (pct(e["coverage"][i]["coverage"]),
                                                                              pct(e["coverage"][i]["accuracy"]))),
                     *(pct(o["named"][i]["share"]) for o in ood)])
    return table(header, rows)


def coverage_section(summary: dict) -> list[str]:
    """Accuracy against coverage as ``--min-confidence`` varies, per model, with the ``--ood`` sets."""
    out = ["## Accuracy against coverage (--min-confidence)",
           "With `classify --min-confidence t`, an image is named at species rank when its top-1 probability "
           "(calibrated when the model has a temperature; this report's test-time crops) is at least t. Coverage: "
           "the share of scored images named so; Top-1: accuracy among them. Below t classify names the genus or "
           "family when that rank's summed probability reaches t, else nothing; those images count as not covered "
           "here. For the --ood sets (none of the model's species), every image named is a false name: lower is "
           "better.", ""]
    for m in summary["models"]:
        out += [f"### {text(m['label'])}", "", *coverage_table(summary, m["label"]), ""]
    return [*out, f"![coverage]({COVERAGE_PNG})", ""]


def per_species_csv(summary: dict) -> bytes:
    """Every species of every (model, test set): images, Top-k (fractions) and the species named instead."""
    ks = summary["ks"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", "test_set", "scientificName", "images", *(f"top{k}" for k in ks), "named_instead",
                     "named_instead_images"])
    for e in summary["results"]:
        for s in e["species"]:
            writer.writerow([e["model"], e["test_set"], s["scientificName"], s["images"],
                             *(f"{s[f'top{k}']:.6f}" for k in ks), s["named_instead"] or "", s["named_instead_images"]])
    return buf.getvalue().encode()
