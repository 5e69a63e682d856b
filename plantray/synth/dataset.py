"""A PlantNet-like synthetic dataset: species with real-looking names, drawn photos, manifests.

No real plant photos can be downloaded where plantray is developed and tested, so quickstart,
tests, training and benchmarks run on this instead.  Each species gets a fixed visual signature
(dominant and secondary hue, petal/leaf shape family, petal count, texture); each image varies
organ tag, position, scale, rotation, background and lighting.  Signatures are spread evenly
over hue and cycle through shapes so that a small network learns the classes in a few epochs.

Layout under OUT (local directory or fsspec URI; every file goes through :mod:`plantray.storage`):
``{train,test,unseen}/<scientificName>/<NNNNNN>.jpg``, ``{split}.parquet`` manifests with
``image_uri`` relative to OUT, ``labels.csv``, ``README.txt`` and ``_plantray_run.json``; with
``countries`` > 0 also a ``countryCode`` per row and the checklists of :mod:`plantray.synth.ranges`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plantray import storage
from plantray.config import ConfigError
from plantray.synth.drawing import TAGS, Species, render_image
from plantray.synth.ranges import add_countries, species_ranges, write_checklists

SPLITS = ("train", "test", "unseen")
# Pl@ntNet-like organ mix, one weight per TAGS entry: flowers dominate, bark and stems are rarer.
TAG_WEIGHTS = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.1])
MANIFEST_SCHEMA = pa.schema([
    ("image_uri", pa.string()), ("scientificName", pa.string()), ("genus", pa.string()),
    ("family", pa.string()), ("taxonID", pa.string()), ("tag", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("occurrenceID", pa.string()),
])
# Real families and genera of Western European flora; epithets are real but freely combined.
FLORA = {
    "Rosaceae": ["Rosa", "Prunus", "Crataegus", "Rubus", "Potentilla", "Sorbus"],
    "Fagaceae": ["Quercus", "Fagus", "Castanea"],
    "Asteraceae": ["Centaurea", "Cirsium", "Leucanthemum", "Achillea", "Senecio"],
    "Ranunculaceae": ["Ranunculus", "Anemone", "Clematis", "Helleborus"],
    "Lamiaceae": ["Salvia", "Lamium", "Mentha", "Thymus", "Teucrium"],
    "Fabaceae": ["Trifolium", "Lathyrus", "Vicia", "Lotus", "Genista"],
    "Orchidaceae": ["Ophrys", "Orchis", "Dactylorhiza", "Epipactis"],
    "Brassicaceae": ["Cardamine", "Erysimum", "Arabis"],
    "Apiaceae": ["Daucus", "Heracleum", "Angelica", "Eryngium"],
    "Betulaceae": ["Betula", "Alnus", "Corylus", "Carpinus"],
    "Campanulaceae": ["Campanula", "Phyteuma"],
    "Caryophyllaceae": ["Silene", "Dianthus", "Stellaria"],
    "Plantaginaceae": ["Veronica", "Plantago", "Digitalis"],
    "Geraniaceae": ["Geranium", "Erodium"],
    "Boraginaceae": ["Myosotis", "Echium", "Symphytum"],
    "Sapindaceae": ["Acer", "Aesculus"],
}
EPITHETS = (
    "vulgaris officinalis sylvestris arvensis montana alba rubra lutea repens pratensis acris minor major "
    "hirsuta glabra maritima alpina palustris nemorosa canina spinosa dioica media communis tomentosa "
    "pyrenaica europaea gallica hispanica germanica angustifolia latifolia grandiflora parviflora elegans "
    "nigra campestris aquatica odorata pubescens petraea robur nana recta erecta verna autumnalis "
    "procumbens ramosa vesca scabra mollis rotundifolia sativa pendula virgata").split()


def make_species(n: int, seed: int) -> list[Species]:
    """Builds ``n`` species sorted by scientific name, deterministic for ``seed``.

    Genera are taken two per family first and get ~3 species each, so genus- and family-level
    accuracy differ from species-level accuracy.

    Args:
        n: number of species (2..MAX_SPECIES).
        seed: random seed.

    Returns:
        Species sorted by ``name``; index k in this list is label k.
    """
    rng = np.random.default_rng([seed, 7])
    taxa = _pick_taxa(n, rng)
    perm, offset = rng.permutation(n), rng.random()
    species = []
    for (family, genus, epithet), j in zip(taxa, perm):
        # Neighbours in hue (j, j+1) always differ in shape and usually in texture and petal count.
        name = f"{genus} {epithet}"
        species.append(Species(
            name=name, genus=genus, family=family, taxon_id="", hue=float((offset + j / n) % 1.0),
            hue2=float((offset + j / n + 0.33 + 0.33 * (j % 2)) % 1.0), saturation=0.7 + 0.13 * float(j % 3),
            shape=int(j % 4), petals=int(3 + (j * 5) % 7), texture=int((j // 4) % 3)))
    species.sort(key=lambda s: s.name)
    return _with_taxon_ids(species)


def _pick_taxa(n: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(family, genus, epithet) for n species: ~3 per genus, genera taken two per family first."""
    families = list(FLORA)
    rng.shuffle(families)
    genera = {f: list(rng.permutation(FLORA[f])) for f in families}
    order = [(f, g) for f in families for g in genera[f][:2]]
    order += [(f, g) for f in families for g in genera[f][2:]]
    chosen = order[:min(len(order), math.ceil(n / 3))]
    taxa = []
    for i, (family, genus) in enumerate(chosen):
        count = n // len(chosen) + (i < n % len(chosen))
        taxa += [(family, str(genus), str(e)) for e in rng.choice(EPITHETS, size=count, replace=False)]
    return taxa


def _with_taxon_ids(species: list[Species]) -> list[Species]:
    """Gives each species a GBIF-like numeric taxonID derived from its name (stable across seeds)."""
    used, out = set(), []
    for s in species:
        tid = 1_000_000 + zlib.crc32(s.name.encode()) % 9_000_000
        while tid in used:  # crc collisions are rare but must not merge two classes
            tid += 1
        used.add(tid)
        out.append(dataclasses.replace(s, taxon_id=str(tid)))
    return out


def image_size(cfg, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) with pixel count uniform in [min_pixels, max_pixels], log-uniform aspect in bounds.

    Args:
        cfg: the generator config (pixel and aspect bounds).
        rng: per-image random generator.

    Returns:
        (width, height) satisfying both bounds after rounding.
    """
    lo, hi = math.log(cfg.min_aspect), math.log(cfg.max_aspect)
    for _ in range(100):  # rounding can leave the bounds when they are tight: draw again
        pixels, aspect = rng.uniform(cfg.min_pixels, cfg.max_pixels), math.exp(rng.uniform(lo, hi))
        h = max(1, round(math.sqrt(pixels / aspect)))
        w = max(1, round(pixels / h))
        if cfg.min_pixels <= w * h <= cfg.max_pixels and cfg.min_aspect <= w / h <= cfg.max_aspect:
            return w, h
    raise ConfigError(f"no integer image size has {cfg.min_pixels}..{cfg.max_pixels} pixels and aspect "
                      f"{cfg.min_aspect}..{cfg.max_aspect}: widen the pixel or aspect range")


def split_counts(cfg) -> dict[str, list[int]]:
    """Images per species (label order) for each split; train is long-tailed when imbalance > 0."""
    n = cfg.images_per_species
    train = [max(min(2, n), round(n * (k + 1) ** -cfg.imbalance)) for k in range(cfg.species)]
    return {"train": train, "test": [cfg.test_per_species] * cfg.species,
            "unseen": [cfg.unseen_per_species] * cfg.species}


def check_out(out: str) -> None:
    """Refuses a non-empty OUT (or one that cannot be reached) before any work; creates nothing."""
    with storage.named(out, "OUT"):
        if storage.holds_data(out):
            raise ConfigError(f"out={out!r} exists and is not empty: pick an empty or new directory")


def open_out(out: str) -> None:
    """Creates OUT, refusing a non-empty destination before any work."""
    check_out(out)
    with storage.named(out, "OUT"):
        storage.makedirs(out)


def _write_split(root: str, cfg, split: str, species: list[Species],
                 counts: list[int], progress=None) -> list[dict]:
    """Renders and writes one split's images; returns its manifest rows (``progress``: a console line)."""
    rows = []
    for k, (sp, count) in enumerate(zip(species, counts)):
        files = {}
        for i in range(count):
            # One generator per image, keyed by its identity: output does not depend on write order.
            rng = np.random.default_rng([cfg.seed, SPLITS.index(split), k, i])
            tag = str(rng.choice(TAGS, p=TAG_WEIGHTS))
            w, h = image_size(cfg, rng)
            buf = io.BytesIO()
            render_image(sp, tag, (w, h), rng).save(buf, "JPEG", quality=cfg.quality)
            uri = f"{split}/{sp.name}/{i:06d}.jpg"
            files[storage.join(root, uri)] = buf.getvalue()
            rows.append({"image_uri": uri, "scientificName": sp.name, "genus": sp.genus, "family": sp.family,
                         "taxonID": sp.taxon_id, "tag": tag, "width": w, "height": h,
                         "occurrenceID": f"urn:plantray:synth:{cfg.seed}:{split}:{sp.taxon_id}:{i}"})
        storage.write_many(files)  # one call per directory: object stores upload these concurrently
        if progress is not None:
            progress.update(progress.done + len(files))
    return rows


def _write_tables(root: str, cfg, species: list[Species], totals: dict[str, int]) -> None:
    """labels.csv and README.txt (the run record is written by the command)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scientificName", "genus", "family", "taxonID"])
    writer.writerows([s.name, s.genus, s.family, s.taxon_id] for s in species)
    storage.write_bytes(storage.join(root, "labels.csv"), text.getvalue().encode())
    readme = (
        "plantray synthetic plant dataset\n\n"
        f"{len(species)} made-up species with real Western European genus and family names, drawn by\n"
        f"plantray.synth (seed {cfg.seed}). No real photographs: for quickstarts, tests, benchmarks.\n"
        f"Images: {', '.join(f'{s} {n}' for s, n in totals.items())}.\n"
        "Layout: <split>/<scientificName>/<NNNNNN>.jpg; <split>.parquet manifests (image_uri relative to\n"
        "this directory); labels.csv one row per species.\n\n"
        "Licence: CC0 1.0 (public domain dedication); the images are synthetic.\n")
    storage.write_bytes(storage.join(root, "README.txt"), readme.encode())


def synthesize(cfg, progress=None) -> dict:
    """Writes the synthetic dataset to ``cfg.out``; byte-identical output for the same config.

    Args:
        cfg: the generator config; ``cfg.out`` must not exist or be an empty directory.
        progress: a :class:`plantray.console.Progress` told the images written so far, or None.

    Returns:
        A summary: ``out``, ``species`` (count), ``images`` (per split), ``train_counts``
        (scientificName -> train images, label order), ``manifests`` and ``labels`` (paths relative to out).

    Raises:
        ConfigError: bad options or a non-empty ``out``.
    """
    cfg.validate()
    counts = split_counts(cfg)
    image_size(cfg, np.random.default_rng(0))  # impossible size bounds fail before any file is written
    open_out(cfg.out)
    species = make_species(cfg.species, cfg.seed)
    countries = getattr(cfg, "countries", 0)
    ranges = species_ranges([s.name for s in species], countries, cfg.seed) if countries else None
    schema = MANIFEST_SCHEMA.append(pa.field("countryCode", pa.string())) if ranges else MANIFEST_SCHEMA
    totals = {}
    for split in SPLITS:
        rows = _write_split(cfg.out, cfg, split, species, counts[split], progress)
        if ranges:
            rows = add_countries(rows, ranges, cfg.seed)
        manifest = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), manifest)
        storage.write_bytes(storage.join(cfg.out, f"{split}.parquet"), manifest.getvalue())
        totals[split] = len(rows)
    _write_tables(cfg.out, cfg, species, totals)
    summary = {"out": cfg.out, "species": len(species), "images": totals,
               "train_counts": {s.name: c for s, c in zip(species, counts["train"])},
               "manifests": {s: f"{s}.parquet" for s in SPLITS}, "labels": "labels.csv"}
    if ranges:
        summary["ranges"] = ranges
        summary["checklists"] = write_checklists(cfg.out, ranges, {s.name: s.taxon_id for s in species})
    return summary
