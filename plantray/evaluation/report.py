"""The evaluation report: Markdown (the paper's Table 1 and details), JSON with the same numbers, a PNG chart.

Everything is written through fsspec, so REPORT_DIR may be a bucket prefix. Accuracies are stored as
fractions in JSON and shown as percentages (one decimal, as the paper) in Markdown.
"""

from __future__ import annotations

import io
import json
from typing import Any

from plantray import storage

DASH = "–"


def pct(value: float | None) -> str:
    """0.4012 -> ``40.1``; None -> a dash."""
    return DASH if value is None else f"{100 * value:.1f}"


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: list, rows: list[list]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _entry(summary: dict, model: str, test: str) -> dict:
    return next(e for e in summary["results"] if e["model"] == model and e["test_set"] == test)


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
            scores = _entry(summary, m, t["name"])["metrics"]
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


def _calibrated(summary: dict) -> list[dict]:
    return [e for e in summary["results"] if e.get("calibration") and e["calibration"]["uncalibrated"]]


def calibration_table(summary: dict) -> str:
    """NLL, ECE (15 bins), Brier, mean confidence and Top-1 per (model, test set): the raw softmax, and the
    card's temperature when the model has one."""
    rows = []
    for e in _calibrated(summary):
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


def reliability_png(summary: dict) -> bytes:
    """A PNG reliability diagram per (model, test set): accuracy against mean confidence in each of the 15
    bins, raw softmax and calibrated, with the diagonal of perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = _calibrated(summary) or [None]
    fig, axes = plt.subplots(1, len(entries), figsize=(4.5 * len(entries), 4.5), squeeze=False)
    for ax, e in zip(axes[0], entries):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        if e is not None:
            c = e["calibration"]
            variants = [("softmax", c["uncalibrated"], "o-")] + (
                [(f"T = {c['temperature']:.3g}", c["calibrated"], "s-")] if c["fitted"] else [])
            for label, s, style in variants:
                full = [b for b in s["bins"] if b["images"]]
                ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], style, ms=4,
                        label=f"{label} (ECE {s['ece']:.3f})")
            ax.set_title(f"{e['model']} / {e['test_set']}", fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence in bin", ylabel="accuracy in bin")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


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
        "## Accuracy (%)", markdown_table(summary), "",
        "## Images and labels", details_table(summary), "",
        "## Top-1 (%) per tag", tag_table(summary), "",
        *prior_section(summary),
        *ood_section(summary),
        "![accuracy](accuracy.png)", "",
        "## Calibration", "NLL, expected calibration error (ECE: 15 equal-width bins of the top-1 confidence) "
        "and multi-class Brier score, from the raw softmax and with the model card's temperature "
        "(Guo et al. 2017).", "", calibration_table(summary), "",
        "![reliability](reliability.png)", ""])


def chart_png(summary: dict) -> bytes:
    """A PNG: Top-k per test set and model (left), Top-1 per tag for each model and test set (right)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    tests = [t["name"] for t in summary["tests"]]
    series = [(m["label"], k) for m in summary["models"] for k in summary["ks"]]
    width = 0.8 / max(1, len(series))
    for i, (model, k) in enumerate(series):
        values = [100 * (_entry(summary, model, t)["metrics"][f"top{k}"] or 0) for t in tests]
        left.bar(np.arange(len(tests)) + i * width, values, width, label=f"{model} Top-{k}")
    left.set(xticks=np.arange(len(tests)) + width * (len(series) - 1) / 2, ylim=(0, 100), ylabel="accuracy (%)",
             title="Accuracy per test set")
    left.set_xticklabels(tests)
    left.legend(fontsize=7)
    _tag_bars(right, summary, np)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _tag_bars(ax: Any, summary: dict, np: Any) -> None:
    tags = sorted({t for e in summary["results"] for t in e["metrics"]["per_tag"]})
    width = 0.8 / max(1, len(summary["results"]))
    for i, e in enumerate(summary["results"]):
        per = e["metrics"]["per_tag"]
        values = [100 * per[t]["accuracy"] if t in per else 0 for t in tags]
        ax.bar(np.arange(len(tags)) + i * width, values, width, label=f"{e['model']} / {e['test_set']}")
    ax.set(xticks=np.arange(len(tags)) + width * (len(summary["results"]) - 1) / 2, ylim=(0, 100),
           ylabel="Top-1 (%)", title="Top-1 per tag")
    ax.set_xticklabels(tags, rotation=30)
    if tags:
        ax.legend(fontsize=7)


def write_report(summary: dict) -> None:
    """Writes report.md, report.json, accuracy.png and reliability.png into ``summary["output"]``.

    Args:
        summary: the evaluation summary.
    """
    out = summary["output"]
    storage.write_bytes(storage.join(out, "report.json"), json.dumps(summary, indent=2, default=str).encode())
    storage.write_bytes(storage.join(out, "report.md"), markdown_report(summary).encode())
    storage.write_bytes(storage.join(out, "accuracy.png"), chart_png(summary))
    storage.write_bytes(storage.join(out, "reliability.png"), reliability_png(summary))
