"""Prediction rows -> *card rows*: one row per card of the review page, with what selection and sorting need.

A card is one image prediction (classify's OUTPUT, a nightly table) or one occurrence (an
``--aggregate occurrence`` output) with all its images. Card rows have a fixed schema, whatever the input's
columns, so the later stages (selection, sampling, sorting, thumbnails, the page writer) see one shape:

- ``key``: the card's id (the prediction's ``identificationID``; the occurrence's id);
- ``ids``: the ``identificationID`` s a decision on the card covers (the prediction's own; for an occurrence,
  each of its classified images');
- ``kind``, ``scientificName``, ``confidence``, ``agreement``, ``prior``: what ``--select`` filters on;
- ``_species``, ``_sample``, ``_sort1``, ``_sort2``: sampling strata and ranks, sort keys;
- ``sources``: the resolved URIs of the card's images (what the thumbnail stage reads);
- ``card``: the card as the page shows it, JSON (names, top-k, publisher, licence... every string as data).

All functions are pure pyarrow-in/pyarrow-out (``map_batches``/``map_groups`` stages).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from plantray import columns as col
from plantray import storage
from plantray.review.select import ERRORS, ROLLED_UP, SPECIES, UNKNOWN, order_keys, sample_key, species_group

CARD_SCHEMA = pa.schema([
    ("key", pa.string()), ("ids", pa.list_(pa.string())), ("kind", pa.string()),
    (col.SCIENTIFIC_NAME, pa.string()), (col.CONFIDENCE, pa.float64()), ("agreement", pa.string()),
    ("prior", pa.string()), ("_species", pa.string()), ("_sample", pa.int64()), ("_sort1", pa.string()),
    ("_sort2", pa.float64()), ("sources", pa.list_(pa.string())), ("card", pa.string()),
])
IMAGE_SCHEMA = pa.schema([("_occurrence", pa.string()), ("_ids", pa.list_(pa.string())),
                          ("_sources", pa.list_(pa.string())), ("_images", pa.string())])
RIGHTS = ("license", "rightsHolder", "creator")  # the image's own terms, shown on its card when present
LINK_SCHEMES = ("http://", "https://", "s3://")  # image links the page may open; every other scheme is text


@dataclass(frozen=True)
class CardOptions:
    """How rows become cards (made on the driver, shipped to the Ray tasks).

    Attributes:
        image_base: absolute directory or URI that relative ``image_uri`` values resolve against.
        site_dir: the site's absolute local directory, for relative links to local images (None: the site is
            on object storage, where local images get no link).
        order: ``--order``.
        seed: ``--seed`` of the stratified sample.
        occurrence_key: the column naming an occurrence (``gbifID`` or ``occurrenceID``), or None.
    """

    image_base: str = ""
    site_dir: str | None = None
    order: str = "agreement"
    seed: int = 0
    occurrence_key: str | None = None


def image_link(uri: str | None, source: str | None, site_dir: str | None) -> str | None:
    """The link a card's image opens: http(s) and s3 URIs as they are, a local file as a path relative to
    the site (``./`` or ``../``, percent-encoded), anything else (``javascript:``, ``data:``, ftp...) none.

    Args:
        uri: the ``image_uri`` as given (a scheme of its own, ``javascript:`` say, never becomes a path).
        source: the image's resolved URI.
        site_dir: the site's absolute local directory (None: no local links).
    """
    if not uri or not source:
        return None
    if source.lower().startswith(LINK_SCHEMES) and source.isprintable() and " " not in source:
        return source
    if site_dir is None or storage.scheme(uri) != "file" or not source.startswith("/"):
        return None
    rel = posixpath.normpath(os.path.relpath(source, site_dir))
    return quote(rel if rel.startswith("../") else "./" + rel)


def machine_view(table: pa.Table) -> pa.Table:
    """Rows as the machine predicted them: on rows a person decided (``review apply``'s OUTPUT, a reviewed
    nightly table) the identification columns come back from ``machine_*``.

    So a card shows the model's name beside its top names and confidence, keeps the prediction's
    ``identificationID`` as its key (decisions made on it apply to classify's OUTPUT and to the applied one
    alike), and ``--select`` and ``--order`` see what the model said; the person's decision is shown beside it
    (:func:`reviews`).
    """
    if col.REVIEW_DECISION not in table.column_names:
        return table
    decided = pc.is_valid(table.column(col.REVIEW_DECISION))
    for name in col.IDENTIFICATION_COLUMNS:
        machine = col.MACHINE_PREFIX + name
        if name in table.column_names and machine in table.column_names:
            current = table.column(name)
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pc.if_else(decided, table.column(machine).cast(current.type), current))
    return table


def reviews(table: pa.Table) -> list[dict | None]:
    """Per row, the decision a person made on it already (``review apply``), as the page keeps decisions
    (``decision``, ``scientificName``, ``identifiedBy``, ``dateIdentified``, ``remarks``); None when undecided.

    Args:
        table: the rows as stored (the person's identification current), not their :func:`machine_view`.
    """
    decisions = _column(table, col.REVIEW_DECISION)
    if not any(decisions):
        return [None] * table.num_rows
    names, by = _column(table, col.SCIENTIFIC_NAME), _column(table, col.REVIEW_IDENTIFIED_BY)
    dates, remarks = _column(table, col.REVIEW_DATE_IDENTIFIED), _column(table, col.REVIEW_REMARKS)
    out = []
    for i, decision in enumerate(decisions):
        if not decision:
            out.append(None)
            continue
        named = decision in (col.ACCEPTED, col.CORRECTED)
        out.append({"decision": decision, "scientificName": (names[i] or "") if named else "",
                    "identifiedBy": by[i] or "", "dateIdentified": dates[i] or "", "remarks": remarks[i] or ""})
    return out


def _column(table: pa.Table, name: str | None) -> list:
    """A column as a Python list; all None when the input has no such column."""
    if name and name in table.column_names:
        return table.column(name).to_pylist()
    return [None] * table.num_rows


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN: no number


def card_kind(error: str | None, name: str | None, rank: str | None) -> str:
    """``errors`` (the image failed), ``unknown`` (the name was withheld), ``rolled-up`` (a genus or family
    name) or ``species``."""
    if error:
        return ERRORS
    if not name:
        return UNKNOWN
    return ROLLED_UP if rank in ("genus", "family") else SPECIES


def _topk(names, confs) -> list:
    return [[_text(n), _number(c)] for n, c in zip(names or [], confs or [])]


def _publisher_column(table: pa.Table) -> str | None:
    return next((c for c in col.PUBLISHER_NAMES if c in table.column_names), None)


def image_info(table: pa.Table, options: CardOptions) -> list[dict]:
    """Per row: the image as a card shows it (``uri`` as given, ``source`` resolved, ``link``, ``error``,
    licence terms) and its ``identificationID``."""
    uris = _column(table, col.IMAGE_URI)
    rights = {term: _column(table, term) for term in RIGHTS}
    errors, ids = _column(table, col.ERROR), _column(table, "identificationID")
    out = []
    for i, uri in enumerate(uris):
        uri = _text(uri)
        source = storage.resolve(uri, options.image_base) if uri and options.image_base else uri
        info = {"uri": uri, "source": source, "link": image_link(uri, source, options.site_dir),
                "error": _text(errors[i]), "id": _text(ids[i])}
        info.update({term: _text(rights[term][i]) for term in RIGHTS if rights[term][i] is not None})
        out.append(info)
    return out


def _card_columns(table: pa.Table, options: CardOptions) -> dict[str, list]:
    """What every card row has, from the prediction columns (per-image rows and occurrence rows alike)."""
    names, confs = _column(table, col.SCIENTIFIC_NAME), _column(table, col.CONFIDENCE)
    ranks, errors = _column(table, col.TAXON_RANK), _column(table, col.ERROR)
    kinds = [card_kind(_text(e), _text(n), _text(r)) for e, n, r in zip(errors, names, ranks)]
    agreements, priors = _column(table, col.PUBLISHER_AGREEMENT), _column(table, col.PRIOR)
    sort = [order_keys(k, a, _number(c), _text(n), options.order)
            for k, a, c, n in zip(kinds, agreements, confs, names)]
    return {"kind": kinds, col.SCIENTIFIC_NAME: [_text(n) for n in names],
            col.CONFIDENCE: [_number(c) for c in confs], "agreement": [_text(a) for a in agreements],
            "prior": [_text(p) for p in priors],
            "_species": [species_group(k, _text(n), _text(e)) for k, n, e in zip(kinds, names, errors)],
            "_sort1": [s[0] for s in sort], "_sort2": [s[1] for s in sort]}


def _card_json(table: pa.Table, base: dict[str, list], reviewed: list[dict | None]) -> list[dict]:
    """The page's view of each row (images and ids are added by the caller); ``reviewed``: per row, the
    decision a person made on it already (:func:`reviews`)."""
    get = {name: _column(table, name) for name in (
        col.TAXON_RANK, col.TOPK_NAMES, col.TOPK_CONFIDENCE, col.GENUS, col.FAMILY, col.TAXON_ID, col.ERROR,
        "identificationRemarks", "identifiedBy", "dateIdentified", col.GBIF_ID, col.OCCURRENCE_ID, "images_used",
        "images_failed")}
    publisher = _column(table, _publisher_column(table))
    cards = []
    for i in range(table.num_rows):
        card = {"kind": base["kind"][i], "name": base[col.SCIENTIFIC_NAME][i], "rank": _text(get[col.TAXON_RANK][i]),
                "confidence": base[col.CONFIDENCE][i],
                "topk": _topk(get[col.TOPK_NAMES][i], get[col.TOPK_CONFIDENCE][i]),
                "publisherName": _text(publisher[i]), "agreement": base["agreement"][i], "prior": base["prior"][i],
                "gbifID": _text(get[col.GBIF_ID][i]), "occurrenceID": _text(get[col.OCCURRENCE_ID][i]),
                "genus": _text(get[col.GENUS][i]), "family": _text(get[col.FAMILY][i]),
                "taxonID": _text(get[col.TAXON_ID][i]), "error": _text(get[col.ERROR][i]),
                "remarks": _text(get["identificationRemarks"][i]), "identifiedBy": _text(get["identifiedBy"][i]),
                "dateIdentified": _text(get["dateIdentified"][i])}
        if get["images_used"][i] is not None:
            card["imagesUsed"], card["imagesFailed"] = get["images_used"][i], get["images_failed"][i]
        card["reviewed"] = reviewed[i]
        cards.append({k: v for k, v in card.items() if v is not None and v != []})
    return cards


def _table(base: dict[str, list], keys: list, ids: list, sources: list, cards: list[dict],
           options: CardOptions) -> pa.Table:
    data = {"key": keys, "ids": ids, **base, "sources": sources,
            "_sample": [sample_key(k or "", options.seed) for k in keys],
            "card": [json.dumps(c, ensure_ascii=True, separators=(",", ":")) for c in cards]}
    return pa.Table.from_pydict({f.name: data[f.name] for f in CARD_SCHEMA}, schema=CARD_SCHEMA)


def image_cards(table: pa.Table, options: CardOptions) -> pa.Table:
    """``map_batches``: per-image prediction rows (classify OUTPUT, nightly table) -> card rows.

    Args:
        table: prediction rows with ``identificationID`` and ``image_uri``.
        options: image resolution, links and sort order.
    Returns:
        One card row per prediction row (:data:`CARD_SCHEMA`).
    """
    reviewed = reviews(table)
    table = machine_view(table)
    base = _card_columns(table, options)
    images = image_info(table, options)
    cards = _card_json(table, base, reviewed)
    keys = [img.pop("id") for img in images]
    for card, key, img in zip(cards, keys, images):
        card.update(key=key, ids=[key] if key else [], images=[img])
    return _table(base, keys, [[k] if k else [] for k in keys], [[img["source"]] for img in images], cards, options)


def occurrence_cards(table: pa.Table, options: CardOptions) -> pa.Table:
    """``map_batches``: occurrence rows (``--aggregate occurrence``) -> card rows without images yet.

    An occurrence whose images all failed is an ``errors`` card. Its images and ids come from the per-image
    predictions (:func:`image_groups`, :func:`attach_images`).
    """
    reviewed = reviews(table)
    table = machine_view(table)
    base = _card_columns(table, options)
    used = _column(table, "images_used")
    for i, n in enumerate(used):
        if n == 0 and base["kind"][i] != ERRORS:
            base["kind"][i] = ERRORS
            base["_species"][i] = species_group(ERRORS, None, "no image classified")
            base["_sort1"][i] = order_keys(ERRORS, None, None, None, options.order)[0]
    cards = _card_json(table, base, reviewed)
    keys = [_text(k) for k in _column(table, options.occurrence_key)]
    # An occurrence is decided by its classified images' identificationIDs (joined later), so the decisions
    # apply to the classify OUTPUT as well as to OUTPUT_occurrences; by its own only when it has none.
    own = [[i] if i else [] for i in (_text(v) for v in _column(table, "identificationID"))]
    for card, key in zip(cards, keys):
        card["key"] = key
    return _table(base, keys, own, [[] for _ in keys], cards, options)


def image_rows(table: pa.Table, options: CardOptions) -> pa.Table:
    """``map_batches``: per-image predictions -> (occurrence id, the image as a card shows it) for grouping."""
    images = image_info(machine_view(table), options)
    keys = [_text(k) for k in _column(table, options.occurrence_key)]
    kept = [i for i, k in enumerate(keys) if k is not None]  # an image of no occurrence belongs to no card
    return pa.table({"_occurrence": pa.array([keys[i] for i in kept], pa.string()),
                     "_image": pa.array([json.dumps(images[i], ensure_ascii=True) for i in kept], pa.string())})


def image_groups(group: pa.Table, per_card: int) -> pa.Table:
    """``map_groups``: one occurrence's images -> one row: the ids of its classified images, the sources of
    the first ``per_card`` images (sorted by URI) and their card entries."""
    images = sorted((json.loads(s) for s in group.column("_image").to_pylist()), key=lambda i: i["uri"] or "")
    shown = images[:per_card]
    ids = [i["id"] for i in images if i["id"] and not i["error"]]
    for i in images:
        i.pop("id")
    row = {"_occurrence": [group.column("_occurrence")[0].as_py()], "_ids": [ids],
           "_sources": [[i["source"] for i in shown]],
           "_images": [json.dumps({"images": shown, "imagesTotal": len(images)}, ensure_ascii=True)]}
    return pa.Table.from_pydict(row, schema=IMAGE_SCHEMA)


def attach_images(table: pa.Table) -> pa.Table:
    """``map_batches`` after the join of occurrence cards with :func:`image_groups`: moves the images into the
    cards (an occurrence without image rows keeps an empty list) and drops the join's columns."""
    cards, ids, sources = [], [], []
    for card, own, extra, i, s in zip(table.column("card").to_pylist(), table.column("ids").to_pylist(),
                                      table.column("_images").to_pylist(), table.column("_ids").to_pylist(),
                                      table.column("_sources").to_pylist()):
        card = json.loads(card)
        card.update(json.loads(extra) if extra else {"images": [], "imagesTotal": 0})
        card["ids"] = i or own or []
        cards.append(json.dumps(card, ensure_ascii=True, separators=(",", ":")))
        ids.append(card["ids"])
        sources.append(s or [])
    out = table.drop_columns([c for c in ("_occurrence", "_ids", "_sources", "_images") if c in table.column_names])
    out = out.set_column(out.schema.get_field_index("card"), "card", pa.array(cards, pa.string()))
    out = out.set_column(out.schema.get_field_index("ids"), "ids", pa.array(ids, pa.list_(pa.string())))
    out = out.set_column(out.schema.get_field_index("sources"), "sources", pa.array(sources, pa.list_(pa.string())))
    return out.select(CARD_SCHEMA.names)
