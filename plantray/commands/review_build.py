"""``plantray review build``: a static review site for predictions, where a person accepts or corrects them.

PREDICTIONS (classify's OUTPUT, a nightly Delta table, or an ``--aggregate occurrence`` output) -> the rows
``--select``/``--sample-per-species``/``--limit`` pick, in ``--order`` -> thumbnails made by Ray tasks -> DIR,
a site that opens from the file system or any static host. Decisions made on the page leave it as a
decisions CSV (``identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks``)
that ``plantray review apply`` reads. Heavy modules are imported inside ``run``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from plantray.commands.options import RayOptions
from plantray.commands.record import utc_now, write_run_record
from plantray.config import ConfigError, check, field
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from plantray.review import ORDERS

log = logging.getLogger(__name__)


@dataclass
class ReviewBuildConfig(RayOptions):
    """Settings of ``plantray review build`` (CLI flags are generated from these fields)."""

    predictions: str = field("", positional=True, required=True,
                             help="classify's OUTPUT, a nightly table or an --aggregate occurrence output")
    out: str = field("", required=True, help="directory of the review site (local or s3://...); opened as "
                     "DIR/index.html")
    select: list[str] = field([], help="which rows, repeatable; kinds species, rolled-up, unknown, errors "
                              "(comma-separated: alternatives), confidence=LO:HI, agreement=different[,same "
                              "genus,...], prior=applied|not-applied, species=NAME; different kinds must all "
                              "hold (default: every row)")
    limit: int | None = field(None, help="at most this many cards (the first in --order)")
    sample_per_species: int | None = field(None, help="at most this many cards per predicted name (stratified: "
                                           "unknown rows and each error reason are strata of their own)")
    seed: int = field(0, help="seed of --sample-per-species's choice")
    order: str = field("agreement", choices=list(ORDERS), help="review order: agreement = the publisher's "
                       "different names first, then the least confident; confidence = least confident first; "
                       "species = by name; input = as read")
    images: str | None = field(None, help="occurrence PREDICTIONS: the per-image predictions their images come from "
                               "(default: the classify OUTPUT beside OUTPUT_occurrences)")
    image_base: str | None = field(None, help="where relative image_uri values resolve (default: the directory of "
                                   "the manifest the predictions were made from, from their run record; else the "
                                   "working directory)")
    labels: str | None = field(None, help="labels CSV or model directory whose names corrections complete from "
                               "(default: the model of the predictions' run record)")
    title: str | None = field(None, help="the page's title (default: from PREDICTIONS)")
    thumb_size: int = field(256, help="thumbnails' longer side in pixels")
    images_per_card: int = field(6, help="thumbnails per occurrence card")
    page_rows: int = field(500, help="cards per data file of the site (the first file is all the page needs "
                           "to show its first page)")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images get no thumbnail ('image too large')")
    max_bytes: int = field(DEFAULT_MAX_BYTES, help="larger files get no thumbnail ('file too large')")
    http_timeout: float = field(20.0, help="seconds before an HTTP fetch times out")
    http_per_host: int = field(4, help="concurrent fetches per host and process")
    overwrite: bool = field(False, help="rebuild a review site already in --out (decisions saved in the browser "
                            "are kept)")


def validate(cfg: ReviewBuildConfig):
    """Checks the flags and PREDICTIONS before Ray starts. Returns (predictions, selection, labels or None).

    Raises:
        ConfigError: naming the bad value and what is allowed.
    """
    from plantray.review.predictions import open_predictions
    from plantray.review.select import parse_selection

    check([(cfg.limit is None or cfg.limit >= 1, f"--limit {cfg.limit} must be >= 1"),
           (cfg.sample_per_species is None or cfg.sample_per_species >= 1,
            f"--sample-per-species {cfg.sample_per_species} must be >= 1"),
           (16 <= cfg.thumb_size <= 2048, f"--thumb-size {cfg.thumb_size} must be between 16 and 2048"),
           (cfg.images_per_card >= 1, f"--images-per-card {cfg.images_per_card} must be >= 1"),
           (1 <= cfg.page_rows <= 10_000, f"--page-rows {cfg.page_rows} must be between 1 and 10000")])
    selection = parse_selection(cfg.select)
    predictions = open_predictions(cfg.predictions, cfg.images)
    return predictions, selection, _labels(cfg, predictions)


def _labels(cfg: ReviewBuildConfig, predictions) -> list[str] | None:
    """The names corrections complete from: ``--labels`` (refused when unreadable), else the run's model's
    (None when it cannot be read: the page then completes from the top-k names of its cards). With the
    species, their genera and families: ``review apply`` takes those too (a person may name only the genus)."""
    from plantray import storage
    from plantray.model.labels import read_labels

    if cfg.labels:
        uri = cfg.labels if not storage.exists(storage.join(cfg.labels, "labels.csv")) else \
            storage.join(cfg.labels, "labels.csv")
        return _names(read_labels(uri))
    model = predictions.image_predictions().config.get("model")
    try:
        return _names(read_labels(storage.join(model, "labels.csv"))) if model else None
    except (ConfigError, OSError) as e:
        log.info("review build: the model's labels (%s) cannot be read (%s); names complete from the top-k", model, e)
        return None


def _names(labels) -> list[str]:
    return [*labels.names, *(g for g in labels.genus if g), *(f for f in labels.family if f)]


def _site_dir(out: str) -> str | None:
    import os

    from plantray import storage

    return os.path.abspath(out) if storage.scheme(out) == "file" else None


def review_build(cfg: ReviewBuildConfig) -> dict:
    """Runs ``plantray review build``; returns the summary (also in DIR/_plantray_run.json).

    Raises:
        ConfigError: bad flags, PREDICTIONS missing, partial or not predictions, DIR not empty.
    """
    from plantray import __version__, storage
    from plantray.cluster import ensure_ray
    from plantray.images.loader import LoadOptions
    from plantray.review import site
    from plantray.review.build import Plan, write_site
    from plantray.review.cards import CardOptions
    from plantray.review.predictions import OCCURRENCES, image_base

    predictions, selection, labels = validate(cfg)
    started = utc_now()
    site.prepare(cfg.out, cfg.overwrite, cfg.predictions, started)
    # Relative image_uri values resolve as classify resolved them, else against the working directory; the
    # base is made absolute here, on the driver, because Ray's workers run elsewhere.
    base = (cfg.image_base if cfg.image_base is not None else image_base(predictions)) or "."
    base = storage.get_fs(base)[1] if storage.scheme(base) == "file" else base
    options = CardOptions(image_base=base, site_dir=_site_dir(cfg.out), order=cfg.order, seed=cfg.seed,
                          occurrence_key=predictions.occurrence_key)
    load = LoadOptions(max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels, http_timeout=cfg.http_timeout,
                       http_per_host=cfg.http_per_host)
    plan = Plan(selection, cfg.sample_per_species, cfg.limit, options, cfg.images_per_card, cfg.thumb_size,
                cfg.page_rows, load)
    ensure_ray(cfg.dashboard)
    start = time.perf_counter()
    site.write_assets(cfg.out)
    writer = site.SiteWriter(cfg.out, cfg.page_rows)
    write_site(predictions, plan, writer)
    info = {"title": cfg.title or f"Review: {cfg.predictions.rstrip('/').rsplit('/', 1)[-1]}",
            "predictions": cfg.predictions, "kind": predictions.kind, "perOccurrence": predictions.kind == OCCURRENCES,
            "selection": selection.describe(), "order": cfg.order, "samplePerSpecies": cfg.sample_per_species,
            "limit": cfg.limit, "built": started, "plantrayVersion": __version__,
            "siteKey": site.site_key(cfg.predictions, cfg.out)}
    summary = {"out": cfg.out, "index": storage.join(cfg.out, "index.html"), "predictions": cfg.predictions,
               "kind": predictions.kind, "selection": selection.describe(),
               **writer.finish(info, labels), "seconds": round(time.perf_counter() - start, 2)}
    write_run_record(cfg.out, "review build", cfg, summary, started)
    return summary


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(summary["kinds"].items()))
    lines = [f"review site: {summary['cards']} cards ({kinds or 'none'}) in {summary['pages']} pages, "
             f"{summary['seconds']} s -> {summary['index']}",
             f"  selection: {summary['selection']}; thumbnails: {summary['thumbnails']}; names to complete "
             f"corrections from: {summary['labels']} ({summary['labels_from']})"]
    for reason, count in summary["thumbnails_failed"].items():
        lines.append(f"  no thumbnail: {count:>8}  {reason}")
    return "\n".join(lines)


CONFIG = ReviewBuildConfig
run = review_build
