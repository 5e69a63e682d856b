"""The review-site job: predictions -> card rows -> selection -> sample -> order -> thumbnails -> DIR, streamed.

Ray Data does every step over the rows (the driver never holds the predictions); the driver iterates the
result one page of cards at a time, in review order (``preserve_order``), and writes each page's data file
and thumbnails before asking for the next (:class:`plantray.review.site.SiteWriter`), so its memory stays
that of one page whatever the number of cards.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import ray

from plantray.images.loader import LoadOptions
from plantray.review.cards import CardOptions, attach_images, image_cards, image_groups, image_rows, occurrence_cards
from plantray.review.predictions import OCCURRENCES, Predictions, read_rows
from plantray.review.select import Selection, sample_group, select_cards
from plantray.review.site import SiteWriter

log = logging.getLogger(__name__)
_PARTITIONS = 8  # hash partitions of the occurrence join and the per-species sample (each a small table)
_THUMB_ROWS = 32  # cards per thumbnail task (~0.3 s of decoding): many tasks in parallel, small blocks


@dataclass(frozen=True)
class Plan:
    """What to show and how (built from ``review build``'s flags).

    Attributes:
        selection: ``--select``.
        per_species: ``--sample-per-species`` (None: every selected row).
        limit: ``--limit`` (None: no limit).
        cards: how rows become cards (image resolution, links, ``--order``, ``--seed``).
        images_per_card: thumbnails per occurrence card.
        thumb_size: the thumbnails' longer side in pixels.
        page_rows: cards per data file.
        load: the loader's settings (byte and pixel limits, HTTP).
    """

    selection: Selection
    per_species: int | None
    limit: int | None
    cards: CardOptions
    images_per_card: int = 6
    thumb_size: int = 256
    page_rows: int = 500
    load: LoadOptions = LoadOptions()


def card_rows(p: Predictions, plan: Plan) -> ray.data.Dataset:
    """The selected, sampled, ordered and limited card rows (lazy), thumbnails not yet made."""
    options = plan.cards
    if p.kind == OCCURRENCES:
        ds = read_rows(p).map_batches(occurrence_cards, fn_args=(options,), batch_format="pyarrow")
    else:
        ds = read_rows(p).map_batches(image_cards, fn_args=(options,), batch_format="pyarrow")
    ds = ds.map_batches(select_cards, fn_args=(plan.selection,), batch_format="pyarrow")
    if plan.per_species is not None:
        ds = ds.groupby("_species", num_partitions=_PARTITIONS).map_groups(
            sample_group, fn_args=(plan.per_species,), batch_format="pyarrow")
    if p.kind == OCCURRENCES:
        ds = _with_images(ds, p.images, plan)
    if options.order != "input":
        ds = ds.sort(["_sort1", "_sort2", "key"])
    return ds.limit(plan.limit) if plan.limit is not None else ds


def _with_images(cards: ray.data.Dataset, images: Predictions, plan: Plan) -> ray.data.Dataset:
    """Occurrence cards joined with their images (a left outer join: an occurrence without images stays)."""
    rows = read_rows(images).map_batches(image_rows, fn_args=(plan.cards,), batch_format="pyarrow")
    groups = rows.groupby("_occurrence", num_partitions=_PARTITIONS).map_groups(
        image_groups, fn_args=(plan.images_per_card,), batch_format="pyarrow")
    joined = cards.join(groups, "left_outer", num_partitions=_PARTITIONS, on=("key",), right_on=("_occurrence",))
    return joined.map_batches(attach_images, batch_format="pyarrow")


@contextlib.contextmanager
def _in_order():
    """Ray Data keeps the blocks' order while the site is written (pages come out in review order)."""
    options = ray.data.DataContext.get_current().execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        yield
    finally:
        options.preserve_order = before


def write_site(p: Predictions, plan: Plan, writer: SiteWriter) -> None:
    """Runs the job and streams its pages into ``writer`` (thumbnails made in Ray tasks, never on the driver).

    Args:
        p: the opened predictions.
        plan: selection, order and thumbnail settings.
        writer: the site writer of DIR.
    """
    from plantray.review.thumbnails import add_thumbnails

    # Small blocks before the thumbnails: the sort leaves as many blocks as files were read (each maybe 100,000
    # cards), which would make one long thumbnail task each and hand the driver blocks of 100 MB of pictures.
    ds = card_rows(p, plan).repartition(target_num_rows_per_block=_THUMB_ROWS)
    ds = ds.map_batches(add_thumbnails, fn_args=(plan.thumb_size, plan.load), batch_size=16, batch_format="pyarrow",
                        num_cpus=1)
    with _in_order():
        for batch in ds.iter_batches(batch_size=plan.page_rows, batch_format="pyarrow", prefetch_batches=1):
            writer.add(batch)
            if writer.pages % 20 == 0:
                log.info("review build: %d cards written", writer.cards)
