"""The evaluation report's PNGs, drawn from the summary alone (matplotlib, no display):

- ``accuracy.png``: Top-k per test set and model, Top-1 per organ tag;
- ``reliability.png``: accuracy against confidence in 15 bins, with how many images each bin holds;
- ``coverage.png``: accuracy against coverage as ``--min-confidence`` varies, and the ``--ood`` images still
  named at each threshold.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

DPI = 100
LABELLED = (0.5, 0.8, 0.9)  # thresholds named on the accuracy-coverage curve


def entry(summary: dict, model: str, test: str) -> dict:
    """The result of one (model, test set)."""
    return next(e for e in summary["results"] if e["model"] == model and e["test_set"] == test)


def calibrated_entries(summary: dict) -> list[dict]:
    """The results that have calibration figures (at least one classified image)."""
    return [e for e in summary["results"] if e.get("calibration") and e["calibration"]["uncalibrated"]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    return plt


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def chart_png(summary: dict) -> bytes:
    """A PNG: Top-k per test set and model (left), Top-1 per tag for each model and test set (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    tests = [t["name"] for t in summary["tests"]]
    series = [(m["label"], k) for m in summary["models"] for k in summary["ks"]]
    width = 0.8 / max(1, len(series))
    for i, (model, k) in enumerate(series):
        values = [entry(summary, model, t)["metrics"][f"top{k}"] for t in tests]
        bars = left.bar(np.arange(len(tests)) + i * width, [100 * (v or 0) for v in values], width,
                        label=f"{model} Top-{k}")
        left.bar_label(bars, labels=["–" if v is None else f"{100 * v:.1f}" for v in values], fontsize=7, padding=1)
    left.set(xticks=np.arange(len(tests)) + width * (len(series) - 1) / 2, ylabel="accuracy (%)",
             title="Accuracy per test set")
    left.set_xticklabels(tests)
    _legend_above_bars(left, len(series))
    _tag_bars(right, summary)
    fig.tight_layout()
    return _png(fig, plt)


def _tag_bars(ax: Any, summary: dict) -> None:
    """Top-1 per organ tag, one bar per (model, test set) that has tags (a set without tags gets no bars,
    not bars of 0)."""
    tagged = [e for e in summary["results"] if e["metrics"]["per_tag"]]
    tags = sorted({t for e in tagged for t in e["metrics"]["per_tag"]})
    width = 0.8 / max(1, len(tagged))
    for i, e in enumerate(tagged):
        per = e["metrics"]["per_tag"]
        bars = ax.bar(np.arange(len(tags)) + i * width, [100 * per[t]["accuracy"] if t in per else 0 for t in tags],
                      width, label=f"{e['model']} / {e['test_set']}")
        # A bar of 0 is invisible: the labels tell 0% ("0.0") from a tag the set does not have ("–").
        ax.bar_label(bars, labels=[f"{100 * per[t]['accuracy']:.1f}" if t in per else "–" for t in tags],
                     fontsize=7, padding=1)
    ax.set(xticks=np.arange(len(tags)) + width * (len(tagged) - 1) / 2, ylabel="Top-1 (%)", title="Top-1 per tag")
    ax.set_xticklabels(tags, rotation=30)
    if tags:
        _legend_above_bars(ax, len(tagged))
    else:
        ax.text(0.5, 0.5, "no tags in the test sets", ha="center", va="center", transform=ax.transAxes)


def _legend_above_bars(ax: Any, entries: int, per_row: int = 4) -> None:
    """The legend in a band above 100%, clear of the bars and their value labels (bars reach 100%)."""
    rows = -(-entries // per_row)
    ax.set_ylim(0, 116 + 9 * rows)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=7, loc="upper center", ncols=min(entries, per_row), frameon=False)


def _variants(e: dict) -> list[tuple[str, dict, str]]:
    """(label, calibration figures, marker style) of an entry: the raw softmax, and T when fitted."""
    c = e["calibration"]
    return [("softmax", c["uncalibrated"], "o-")] + (
        [(f"T = {c['temperature']:.3g}", c["calibrated"], "s-")] if c["fitted"] else [])


def reliability_png(summary: dict) -> bytes:
    """A PNG reliability diagram per (model, test set): accuracy against mean confidence in each of the 15
    bins, raw softmax and calibrated, with the diagonal of perfect calibration; below it, how many images
    each bin holds (a bin of 3 images says little)."""
    plt = _pyplot()
    entries = calibrated_entries(summary) or [None]
    fig, axes = plt.subplots(2, len(entries), figsize=(4.8 * len(entries), 6.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.3]}, sharex="col")
    for (ax, counts), e in zip(axes.T, entries):
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        if e is not None:
            for label, s, style in _variants(e):
                full = [b for b in s["bins"] if b["images"]]
                ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], style, ms=4, clip_on=False,
                        label=f"{label} (ECE {s['ece']:.3f})")
            ax.set_title(f"{e['model']} / {e['test_set']}", fontsize=9)
            _bin_counts(counts, _variants(e))
        ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy in bin (at its mean confidence)")
        ax.legend(fontsize=7, loc="upper left")
        counts.set(xlim=(0, 1), xlabel="top-1 confidence (15 bins)", ylabel="images in bin")
    fig.tight_layout()
    return _png(fig, plt)


def _bin_counts(ax: Any, variants: list[tuple[str, dict, str]]) -> None:
    """Bars of images per bin, side by side for each variant, each labelled with its count."""
    width = 1 / len(variants[0][1]["bins"]) / len(variants)
    for i, (label, s, _) in enumerate(variants):
        lows = np.array([b["low"] for b in s["bins"]])
        images = np.array([b["images"] for b in s["bins"]])
        bars = ax.bar(lows + i * width, images, width, align="edge", label=label, alpha=0.8)
        ax.bar_label(bars, labels=[str(n) if n else "" for n in images], fontsize=6, padding=1)
    ax.set_ylim(0, max(1, max(b["images"] for _, s, _ in variants for b in s["bins"])) * 1.3)
    if len(variants) > 1:
        ax.legend(fontsize=6, loc="upper left")


def coverage_png(summary: dict) -> bytes:
    """A PNG per model: Top-1 against coverage as ``--min-confidence`` varies (left, one curve per test
    set, thresholds marked), and coverage, Top-1 and the ``--ood`` images still named against the threshold
    (right)."""
    plt = _pyplot()
    models = [m["label"] for m in summary["models"]]
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4.3 * len(models)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (left, right), model in zip(axes, models):
        for i, t in enumerate(summary["tests"]):
            e, colour = entry(summary, model, t["name"]), colours[i % len(colours)]
            _coverage_curve(left, e, t["name"], colour, i)
            curve = [p for p in e["coverage_curve"] if p["coverage"] is not None]
            x = [p["threshold"] for p in curve]
            right.plot(x, [100 * p["coverage"] for p in curve], "-", color=colour, label=f"{t['name']}: coverage")
            right.plot(x, [100 * p["accuracy"] if p["accuracy"] is not None else np.nan for p in curve], "--",
                       color=colour, label=f"{t['name']}: Top-1 of the named")
        for j, o in enumerate(e for e in summary.get("ood", []) if e["model"] == model):
            colour = colours[(len(summary["tests"]) + j) % len(colours)]
            curve = [p for p in o["named_curve"] if p["share"] is not None]
            right.plot([p["threshold"] for p in curve], [100 * p["share"] for p in curve], ":", lw=2,
                       color=colour, label=f"{o['ood_set']} (--ood): still named")
        left.set(xlim=(0, 100), ylim=(0, 102), xlabel="coverage: images named at species rank (%)",
                 ylabel="Top-1 of the named images (%)", title=f"{model}: accuracy against coverage")
        right.set(xlim=(0, 1), ylim=(0, 102), xlabel="--min-confidence", ylabel="images (%)",
                  title=f"{model}: as --min-confidence varies")
        left.plot([], [], "o", ms=3.5, color="grey", label="dots: --min-confidence 0, 0.1, ..., 0.9, 0.95")
        left.legend(fontsize=7, loc="best")
        right.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig, plt)


def _coverage_curve(ax: Any, e: dict, name: str, colour: str, index: int) -> None:
    """One test set's accuracy-coverage curve, the table's thresholds as dots, a few of them labelled (each
    test set's labels at their own offset, so that coinciding points stay legible)."""
    curve = [p for p in e["coverage_curve"] if p["accuracy"] is not None]
    ax.plot([100 * p["coverage"] for p in curve], [100 * p["accuracy"] for p in curve], "-", color=colour,
            label=name)
    marks = [p for p in e["coverage"] if p["accuracy"] is not None]
    ax.plot([100 * p["coverage"] for p in marks], [100 * p["accuracy"] for p in marks], "o", ms=3.5, color=colour)
    labels: dict[tuple, list[str]] = {}  # thresholds that land on one point share one label
    for p in marks:
        if p["threshold"] in LABELLED:
            labels.setdefault((100 * p["coverage"], 100 * p["accuracy"]), []).append(f"{p['threshold']:g}")
    below = index % 2 == 0  # two test sets' curves often run close: one labelled below-right, one above-left
    for row, (xy, thresholds) in enumerate(labels.items()):
        # Nearby points (0.8 and 0.9 often are) get labels at different heights.
        offset = (4, -10 - 9 * row) if below else (-4, 4 + 9 * row)
        ax.annotate("t=" + ", ".join(thresholds), xy, fontsize=7, xytext=offset, ha="left" if below else "right",
                    textcoords="offset points", color=colour,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
