"""The review site on disk: static assets, one data file per page of cards, thumbnails, written as they stream.

Layout of DIR (opens from the file system or any static host; nothing is fetched from the network)::

    DIR/index.html, decisions.js, review.js, review.css   the page (package data of plantray.review, copied)
    DIR/data/page-000000.js ...              cards, one file of ``page_rows`` cards each, in review order
    DIR/data/labels.js                       the names the correction field completes from
    DIR/data/site.js                         what the page needs first (totals, page count): written last,
                                             so a site whose build died says so instead of showing part
    DIR/thumbs/000000/000000-0.jpg ...       thumbnails, one folder per page
    DIR/_plantray_review.json                written first: marks DIR as a review site (--overwrite)
    DIR/_plantray_run.json                   the run record

Data files are JavaScript (``PlantrayReview.page(n, [...])``) loaded by ``<script>`` tags, because browsers
refuse ``fetch()`` of local files; the JSON inside is ASCII-only (every other character escaped), so no
file encoding or line-separator character can break it. The page shows every string as text.
"""

from __future__ import annotations

import collections
import json
import uuid
from importlib import resources

import pyarrow as pa

from plantray import storage
from plantray.config import ConfigError
from plantray.review.predictions import RUN_RECORD
from plantray.review.thumbnails import THUMB_ERRORS, THUMBS

ASSETS = ("index.html", "decisions.js", "review.js", "review.css")
DATA, THUMB_DIR = "data", "thumbs"
MARKER = "_plantray_review.json"
OWN = (*ASSETS, DATA, THUMB_DIR, RUN_RECORD, MARKER)  # everything a build writes (what --overwrite removes)


def _js(call: str, *args) -> bytes:
    """``PlantrayReview.<call>(<args as JSON>);`` as ASCII bytes, with ``<``, ``>`` and ``&`` escaped too (the
    same text stays inert even if someone pastes it into an HTML page)."""
    body = ",".join(json.dumps(a, ensure_ascii=True, separators=(",", ":")) for a in args)
    body = body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"PlantrayReview.{call}({body});\n".encode("ascii")


def site_key(predictions: str, out: str) -> str:
    """The key of a site's decisions in the browser's storage: the same predictions reviewed in the same DIR
    keep their decisions across rebuilds; other sites opened from the same disk never share them.

    Args:
        predictions: PREDICTIONS, out: DIR (local paths are made absolute, so ``review/`` and its absolute
            spelling are one site).
    Returns:
        16 hex digits.
    """
    where = [storage.get_fs(u)[1] if storage.scheme(u) == "file" else u for u in (predictions, out)]
    return uuid.uuid5(uuid.NAMESPACE_URL, "plantray-review\n" + "\n".join(where)).hex[:16]


def prepare(out: str, overwrite: bool, predictions: str, started: str) -> None:
    """Checks DIR and claims it: refuses a DIR holding anything but an earlier review site, and removes an
    earlier site's own files with ``--overwrite``.

    Raises:
        ConfigError: DIR holds other files, or an earlier review site without ``--overwrite``.
    """
    if storage.holds_data(out):
        ours = storage.exists(storage.join(out, MARKER))
        if not ours:
            raise ConfigError(f"--out {out!r} already holds files that are not a plantray review site; choose an "
                              "empty or new directory")
        if not overwrite:
            raise ConfigError(f"--out {out!r} holds a review site already; pass --overwrite to rebuild it (decisions "
                              "saved in the browser are kept) or choose a new directory")
        for name in OWN:
            storage.remove(storage.join(out, name))
    marker = {"predictions": predictions, "started": started}
    storage.write_bytes(storage.join(out, MARKER), json.dumps(marker, indent=2).encode())


def write_assets(out: str) -> None:
    """Copies the page's static files (package data) into DIR."""
    files = resources.files("plantray.review") / "assets"
    storage.write_many({storage.join(out, name): (files / name).read_bytes() for name in ASSETS})


class SiteWriter:
    """Writes card rows into DIR as they stream from the Ray job, one page file at a time.

    Holds only the current page's cards and a few counters (per kind, per name, thumbnails failed by reason),
    so a 100,000-card site builds in the memory of one page.

    Args:
        out: DIR.
        page_rows: cards per data file.
    """

    def __init__(self, out: str, page_rows: int):
        self.out, self.page_rows = out, page_rows
        self.pages = self.cards = self.thumbs = 0
        self.kinds: collections.Counter = collections.Counter()
        self.names: collections.Counter = collections.Counter()
        self.thumb_failures: collections.Counter = collections.Counter()
        self.topk_names: set[str] = set()  # the labels when the model's own list cannot be read

    def add(self, batch: pa.Table) -> None:
        """Writes one page: its data file and its thumbnails (object stores upload them concurrently)."""
        page, files, cards = self.pages, {}, []
        for row in batch.select(["card", THUMBS, THUMB_ERRORS]).to_pylist():
            card = json.loads(row["card"])
            for i, (image, thumb, error) in enumerate(zip(card.get("images", []), row[THUMBS], row[THUMB_ERRORS])):
                image.pop("source", None)  # the link says where to open it; the resolved path is not shown
                if thumb is not None:
                    name = f"{THUMB_DIR}/{page:06d}/{self.cards:06d}-{i}.jpg"
                    files[storage.join(self.out, *name.split("/"))] = thumb
                    image["thumb"] = name
                    self.thumbs += 1
                else:
                    image["thumbError"] = error
                    self.thumb_failures[error] += 1
            card["n"] = self.cards
            self._count(card)
            cards.append(card)
        files[storage.join(self.out, DATA, f"page-{page:06d}.js")] = _js("page", page, cards)
        storage.write_many(files)
        self.pages += 1

    def _count(self, card: dict) -> None:
        self.cards += 1
        self.kinds[card["kind"]] += 1
        if card.get("name"):
            self.names[card["name"]] += 1
        self.topk_names.update(n for n, _ in card.get("topk", []) if n)

    def finish(self, site: dict, labels: list[str] | None) -> dict:
        """Writes ``labels.js`` then ``site.js`` (last: the site is complete). Returns the site's counts.

        Args:
            site: what the page shows about the build (title, predictions, selection, ...).
            labels: the names corrections complete from; None: the top-k names seen in the cards.
        """
        names = sorted(set(labels) if labels is not None else self.topk_names)
        storage.write_bytes(storage.join(self.out, DATA, "labels.js"), _js("labels", names))
        counts = {"cards": self.cards, "pages": self.pages, "page_rows": self.page_rows, "kinds": dict(self.kinds),
                  "thumbnails": self.thumbs, "thumbnails_failed": dict(self.thumb_failures.most_common()),
                  "labels": len(names), "labels_from": "model" if labels is not None else "top-k names"}
        info = {**site, **counts, "species": sorted(self.names.items())}
        storage.write_bytes(storage.join(self.out, DATA, "site.js"), _js("site", info))
        return counts
