"""Out-of-distribution sets of ``plantray synth``: images a model trained on the dataset should call unknown.

Two sets, next to the train/test/unseen splits, each an image tree and a manifest (``image_uri`` relative
to OUT, the splits' columns):

- ``ood/noplant/<kind>/NNNNNN.jpg`` + ``ood_noplant.parquet``: images of no plant (noise, textures,
  geometric scenes; :mod:`plantray.synth.nonplant`), ``scientificName`` null.
- ``ood/species/<scientificName>/NNNNNN.jpg`` + ``ood_species.parquet``: species drawn like the others but
  absent from ``labels.csv`` and from every split (a model trained on ``train`` never saw them).

``plantray evaluate --ood NAME=DATA`` measures how well a model's confidence tells them from the test set.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plantray import storage
from plantray.synth.dataset import MANIFEST_SCHEMA, TAG_WEIGHTS, image_size, make_species
from plantray.synth.drawing import TAGS, Species, render_image
from plantray.synth.nonplant import NONPLANT_KINDS, render_nonplant

NOPLANT, SPECIES = "ood_noplant", "ood_species"
# Seeds of the OOD streams, apart from the splits' ([seed, split index, ...]) so adding them changes no split.
_NOPLANT_STREAM, _SPECIES_STREAM, _NAMES_STREAM = 101, 102, 7919


def unseen_species(known: list[Species], n: int, seed: int) -> list[Species]:
    """``n`` extra species drawn like the known ones, none sharing a known scientific name.

    Args:
        known: the dataset's species (its label set).
        n: how many to make.
        seed: the dataset's seed.
    Returns:
        ``n`` species sorted by name, absent from ``known``.
    """
    if n == 0:
        return []
    names = {s.name for s in known}
    candidates = [s for s in make_species(n + len(known), seed + _NAMES_STREAM) if s.name not in names]
    # A seeded shuffle, not the first n by name: those would all share one genus.
    order = np.random.default_rng([seed, _NAMES_STREAM]).permutation(len(candidates))[:n]
    return sorted((candidates[i] for i in order), key=lambda s: s.name)


def _jpeg(img, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _write_manifest(root: str, name: str, rows: list[dict]) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), buf)
    storage.write_bytes(storage.join(root, f"{name}.parquet"), buf.getvalue())


def write_noplant(cfg) -> int:
    """Renders ``cfg.ood_noplant`` images of no plant (kinds in turn) and their manifest; returns the count."""
    rows, files = [], {}
    for i in range(cfg.ood_noplant):
        rng = np.random.default_rng([cfg.seed, _NOPLANT_STREAM, i])
        kind = NONPLANT_KINDS[i % len(NONPLANT_KINDS)]
        w, h = image_size(cfg, rng)
        uri = f"ood/noplant/{kind}/{i:06d}.jpg"
        files[storage.join(cfg.out, uri)] = _jpeg(render_nonplant(kind, (w, h), rng), cfg.quality)
        rows.append({"image_uri": uri, "tag": kind, "width": w, "height": h,
                     "occurrenceID": f"urn:plantray:synth:{cfg.seed}:{NOPLANT}:{i}"})
    storage.write_many(files)
    _write_manifest(cfg.out, NOPLANT, rows)
    return len(rows)


def write_unseen_species(cfg, species: list[Species]) -> list[str]:
    """Renders ``cfg.ood_per_species`` images of each of ``species`` and their manifest; returns the names."""
    rows = []
    for k, sp in enumerate(species):
        files = {}
        for i in range(cfg.ood_per_species):
            rng = np.random.default_rng([cfg.seed, _SPECIES_STREAM, k, i])
            tag = str(rng.choice(TAGS, p=TAG_WEIGHTS))
            w, h = image_size(cfg, rng)
            uri = f"ood/species/{sp.name}/{i:06d}.jpg"
            files[storage.join(cfg.out, uri)] = _jpeg(render_image(sp, tag, (w, h), rng), cfg.quality)
            rows.append({"image_uri": uri, "scientificName": sp.name, "genus": sp.genus, "family": sp.family,
                         "taxonID": sp.taxon_id, "tag": tag, "width": w, "height": h,
                         "occurrenceID": f"urn:plantray:synth:{cfg.seed}:{SPECIES}:{sp.taxon_id}:{i}"})
        storage.write_many(files)
    _write_manifest(cfg.out, SPECIES, rows)
    return [s.name for s in species]


def write_ood_sets(cfg, known: list[Species]) -> dict:
    """Writes both OOD sets under ``cfg.out`` (deterministic for the config, like the splits).

    Args:
        cfg: the generator config (``ood_noplant``, ``ood_species``, ``ood_per_species``, sizes, seed).
        known: the dataset's species, which the unseen species must not repeat.
    Returns:
        ``{"ood_noplant": {"manifest", "tree", "images", "kinds"}, "ood_species": {"manifest", "tree",
        "images", "species"}}`` (paths relative to OUT).
    """
    noplant = write_noplant(cfg)
    names = write_unseen_species(cfg, unseen_species(known, cfg.ood_species, cfg.seed))
    return {NOPLANT: {"manifest": f"{NOPLANT}.parquet", "tree": "ood/noplant", "images": noplant,
                      "kinds": list(NONPLANT_KINDS)},
            SPECIES: {"manifest": f"{SPECIES}.parquet", "tree": "ood/species",
                      "images": len(names) * cfg.ood_per_species, "species": names}}
