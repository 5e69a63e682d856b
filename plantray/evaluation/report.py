"""The evaluation report: Markdown (the paper's Table 1 and details), JSON with the same numbers, a CSV of
every species, and PNG charts (:mod:`plantray.evaluation.charts`).

Everything is written through fsspec, so REPORT_DIR may be a bucket prefix. Accuracies are stored as
fractions in JSON and shown as percentages (one decimal, as the paper) in Markdown.
"""

from __future__ import annotations

import json

from plantray import storage
from plantray.evaluation import charts, sections
from plantray.evaluation.charts import calibrated_entries, entry
from plantray.evaluation.markdown import DASH, pct
from plantray.evaluation.markdown import table as _table


def markdown_table(summary: dict) -> str:
    """Table 1 of the paper: test sets as rows, Top-k accuracy (%) per model as columns.

    Args:
        summary: the result of :func:`plantray.evaluate.evaluate`.
    Returns:
        A Markdown table.
    """
    models = [m["label"] for m in summary["models"]]
    header = ["Test set"] + [f"{m} Top-{k}" for m in models for k in summary["ks"]]
    rows = []
    for t in summary["tests"]:
        cells = [t["name"]]
        for m in models:
            scores = entry(summary, m, t["name"])["metrics"]
            cells += [pct(scores[f"top{k}"]) for k in summary["ks"]]
        rows.append(cells)
    return "\n".join(_table(header, rows))


def _ci(scores: dict, k: int) -> str:
    ci = scores["ci95"].get(f"top{k}")
    return f"{pct(ci[0])}–{pct(ci[1])}" if ci else DASH


def details_table(summary: dict) -> str:
    """Per (model, test set): images and labels kept and dropped per reason, macro/genus/family Top-1, CIs."""
    header = ["Model", "Test set", "Images scored", "Labels", "Unknown species (img/lab)",
              "Too few training images (img/lab)", "No label", "Unreadable", "Macro Top-1", "Genus Top-1",
              "Family Top-1"] + [f"Top-{k} 95% CI" for k in summary["ks"]]
    rows = []
    for e in summary["results"]:
        img, lab, s = e["images"], e["labels"], e["metrics"]
        rows.append([e["model"], e["test_set"], f"{img['scored']}/{img['test']}", f"{lab['scored']}/{lab['test']}",
                     f"{img['unknown species']}/{lab['unknown species']}",
                     f"{img['too few training images']}/{lab['too few training images']}", img["no label"],
                     img["unreadable"], pct(s["macro_top1"]), pct(s["genus_top1"]), pct(s["family_top1"]),
                     *(_ci(s, k) for k in summary["ks"])])
    return "\n".join(_table(header, rows))


def tag_table(summary: dict) -> str:
    """Top-1 (%) per organ tag, one row per (model, test set); image counts in parentheses."""
    tags = sorted({t for e in summary["results"] for t in e["metrics"]["per_tag"]})
    if not tags:
        return "(no tags in the test sets)"
    rows = []
    for e in summary["results"]:
        per = e["metrics"]["per_tag"]
        rows.append([e["model"], e["test_set"]] + [f"{pct(per[t]['accuracy'])} ({per[t]['images']})" if t in per
                                                   else DASH for t in tags])
    return "\n".join(_table(["Model", "Test set", *tags], rows))


def _num(value: float | None) -> str:
    return DASH if value is None else f"{value:.4f}"


def calibration_table(summary: dict) -> str:
    """NLL, ECE (15 bins), Brier, mean confidence and Top-1 per (model, test set): the raw softmax, and the
    card's temperature when the model has one."""
    rows = []
    for e in calibrated_entries(summary):
        c = e["calibration"]
        variants = [("softmax (T = 1)" if c["fitted"] else "softmax (model not calibrated)", c["uncalibrated"])]
        if c["fitted"]:
            variants.append((f"temperature T = {c['temperature']:.4g}", c["calibrated"]))
        for label, s in variants:
            rows.append([e["model"], e["test_set"], label, s["images"], _num(s["nll"]), _num(s["ece"]),
                         _num(s["brier"]), pct(s["mean_confidence"]), pct(s["accuracy"])])
    if not rows:
        return "(no classified images)"
    return "\n".join(_table(["Model", "Test set", "Probabilities", "Images", "NLL", "ECE (15 bins)", "Brier",
                              "Mean confidence (%)", "Top-1 (%)"], rows))


def prior_table(summary: dict) -> str:
    """Top-k (%) without and with the location prior, per (model, test set), and how many rows it applied to."""
    prior = summary["prior"]
    ks = summary["ks"]
    header = ["Model", "Test set", *(f"Top-{k} without" for k in ks), *(f"Top-{k} with" for k in ks),
              "Prior applied", "No location", "Region not covered"]
    rows = []
    for e in prior["results"]:
        c = e["counts"]
        rows.append([e["model"], e["test_set"], *(pct(e["without"][f"top{k}"]) for k in ks),
                     *(pct(e["with"][f"top{k}"]) for k in ks), c.get(prior["mode"], 0), c.get("no location", 0),
                     c.get("region not covered", 0)])
    return "\n".join(_table(header, rows))


def prior_section(summary: dict) -> list[str]:
    """The report's location-prior section (nothing without ``--prior``)."""
    prior = summary.get("prior")
    if not prior:
        return []
    floor = f", floor {prior['floor']}" if prior.get("floor") is not None else ""
    return ["## Location prior", "",
            f"**{prior['mode']}**{floor} from checklist `{prior['checklist']}` (region column "
            f"`{prior['region_column']}`; {prior['species_matched']} checklist species matched the model's labels, "
            f"{prior['species_unmatched']} did not). Rows without a location, or in a region the checklist does not "
            "cover, are ranked without the prior.", "",
            prior_table(summary), ""]


def ood_table(summary: dict) -> str:
    """Known versus unknown per (model, ``--ood`` set): AUROC and FPR at 95% TPR of the max softmax probability.

    Args:
        summary: the evaluation summary with ``ood`` entries (:func:`plantray.evaluation.ood.score_ood`).
    Returns:
        A Markdown table (AUROC: higher is better, 0.5 = chance; FPR@95% TPR: lower is better).
    """
    header = ["Model", "OOD set", "Known images", "Unknown images", "AUROC", "FPR@95% TPR", "Threshold at 95% TPR",
              "Mean score known", "Mean score unknown"]
    rows = [[e["model"], e["ood_set"], e["known_images"], e["unknown_images"], _num(e["auroc"]),
             _num(e["fpr_at_95_tpr"]), _num(e["threshold_at_95_tpr"]), _num(e["known_mean_score"]),
             _num(e["unknown_mean_score"])] for e in summary.get("ood", [])]
    return "\n".join(_table(header, rows))


def ood_section(summary: dict) -> list[str]:
    """report.md's known-versus-unknown section (empty without ``--ood``)."""
    if not summary.get("ood"):
        return []
    sets = "\n".join(f"- **{s['name']}**: `{s['uri']}`" for s in summary["ood_sets"])
    return ["## Known vs unknown (--ood)",
            "Score: the maximum softmax probability (top-1 of the crop-averaged softmax, calibrated when the model "
            "has a temperature). Known: the scored images of every test set above, pooled; unknown: every readable "
            "image of the OOD set. AUROC: the probability that a known image scores higher than an unknown one "
            "(0.5 = chance). FPR@95% TPR: the fraction of unknown images at or above the threshold that keeps 95% "
            "of the known ones (lower is better).", "", sets, "", ood_table(summary), ""]


def markdown_report(summary: dict) -> str:
    """The whole report.md."""
    models = "\n".join(f"- **{m['label']}**: `{m['uri']}` ({m['name']} {m['version']}, sha256 {m['sha256'][:12]})"
                       for m in summary["models"])
    tests = "\n".join(f"- **{t['name']}**: `{t['uri']}`" for t in summary["tests"])
    return "\n".join([
        "# plantray evaluate", "",
        f"Test-time augmentation: **{summary['tta']}** ({summary['crops']} crop(s) per image, softmax averaged). "
        f"Kept: species known to the model with more than {summary['min_train_images']} training images. "
        f"Bootstrap: {summary['bootstrap']} replicates, seed {summary['seed']}.", "",
        "## Models", models, "", "## Test sets", tests, "",
        "## Accuracy (%)", markdown_table(summary), "", "![accuracy](accuracy.png)", "",
        "## Images and labels", details_table(summary), "",
        "## Top-1 (%) per tag", tag_table(summary), "",
        *sections.species_section(summary),
        *sections.confused_section(summary),
        *sections.coverage_section(summary),
        *prior_section(summary),
        *ood_section(summary),
        "## Calibration", "NLL, expected calibration error (ECE: 15 equal-width bins of the top-1 confidence) "
        "and multi-class Brier score, from the raw softmax and with the model card's temperature "
        "(Guo et al. 2017). Under the reliability diagram: how many images each bin holds.", "",
        calibration_table(summary), "", "![reliability](reliability.png)", ""])


def write_report(summary: dict) -> None:
    """Writes report.md, report.json, per_species.csv, accuracy.png, coverage.png and reliability.png into
    ``summary["output"]``.

    Args:
        summary: the evaluation summary.
    """
    out = summary["output"]
    files = {"report.json": json.dumps(summary, indent=2, default=str).encode(),
             "report.md": markdown_report(summary).encode(),
             sections.PER_SPECIES_CSV: sections.per_species_csv(summary),
             "accuracy.png": charts.chart_png(summary), sections.COVERAGE_PNG: charts.coverage_png(summary),
             "reliability.png": charts.reliability_png(summary)}
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)
