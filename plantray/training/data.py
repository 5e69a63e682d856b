"""The training data: label set and counts, class balance, the augmented and validation streams."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data import RandomSeedConfig

from plantray.columns import FAMILY, GENUS, PIXELS, SCIENTIFIC_NAME, SOURCE_COLUMN, TAG, TAXON_ID
from plantray.images.augment import SEED, TrainPreset, TrainView, upright_policy
from plantray.images.loader import EvalView, LoadOptions, load_batch, stack_pixels
from plantray.images.presets import EvalPreset
from plantray.model.labels import Labels
from plantray.sources import open_source


def shuffle_rows(table: pa.Table) -> pa.Table:
    """A block's rows in a fresh random order (the cheap half of the per-epoch shuffle)."""
    return table.take(np.random.default_rng().permutation(table.num_rows))


LABEL_KEYS = (SCIENTIFIC_NAME, GENUS, FAMILY, TAXON_ID)


def _label_columns(table: pa.Table, keys: list[str]) -> pa.Table:
    """The label columns as strings, missing names as "" (so unlabelled rows group together)."""
    import pyarrow.compute as pc

    cols = [pc.fill_null(pc.utf8_trim_whitespace(table.column(k).cast(pa.string())), "") for k in keys]
    return pa.table(dict(zip(keys, cols)))


_COUNT = "_images"


def _count_labels(table: pa.Table, keys: list[str]) -> pa.Table:
    """One row per distinct label row of a block, with how many images carry it."""
    counted = _label_columns(table, keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    return counted.select([*keys, "count_all"]).rename_columns([*keys, _COUNT])


def _label_row_counts(ds, keys: list[str]) -> dict[tuple, int]:
    """Images per distinct (species, genus, ...) row, summed from the blocks' partial counts as they stream."""
    partial = ds.select_columns(keys).map_batches(_count_labels, fn_args=(keys,), batch_format="pyarrow",
                                                  batch_size=None)
    rows: dict[tuple, int] = {}
    for batch in partial.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            key = tuple(row[k] for k in keys)
            rows[key] = rows.get(key, 0) + row[_COUNT]
    return rows


def scan_labels(ds, uri: str, columns: list[str]):
    """The label set and per-class image counts: each block counts its own label rows, the driver sums them.

    Per-block partial counts need no shuffle (a Ray Data groupby hash-partitions into 200 blocks and took
    2–5 s even for a few hundred rows); the driver streams them and holds one entry per distinct label row,
    thousands at most, whatever the number of images.

    Args:
        ds: the training dataset (``scientificName`` and optional genus/family/taxonID columns).
        uri: DATA, for messages.
        columns: its columns as the source knows them without Ray (``Dataset.schema()`` of a mapped read
            executes a first block: seconds on a fresh job's workers).
    Returns:
        (Labels sorted by name with ``train_images``, stats dict: ``images``, ``unlabelled``).
    Raises:
        ConfigError: no rows, no ``scientificName`` column, or fewer than two classes.
    """
    from plantray.config import ConfigError
    from plantray.model.labels import Labels

    if SCIENTIFIC_NAME not in columns:
        raise ConfigError(f"--data {uri!r} has no scientificName column (columns: {columns[:10]}); add the "
                          "labels or use an ImageFolder tree <root>/<scientificName>/*.jpg")
    keys = [k for k in LABEL_KEYS if k in columns]
    counts: dict[str, int] = {}
    extra: dict[str, dict[str, tuple[int, str]]] = {}
    for key, n in sorted(_label_row_counts(ds, keys).items()):  # sorted: ties go the same way every run
        row = dict(zip(keys, key))
        name = row[SCIENTIFIC_NAME]
        counts[name] = counts.get(name, 0) + n
        for k in keys[1:]:  # the most frequent genus/family/taxonID of a name wins
            if row[k] and n > extra.setdefault(name, {}).get(k, (0, ""))[0]:
                extra[name][k] = (n, row[k])
    unlabelled = counts.pop("", 0)
    if not counts:
        raise ConfigError(f"--data {uri!r} holds no labelled images ({unlabelled} without scientificName); "
                          "give a manifest with image_uri and scientificName rows or a non-empty tree")
    if len(counts) < 2:
        raise ConfigError(f"--data {uri!r} has {len(counts)} labelled class(es) ({sorted(counts)[:3]}); training a "
                          "classifier needs at least two scientificName values")
    names = sorted(counts)

    def col(k):
        return [extra.get(n, {}).get(k, (0, None))[1] for n in names]

    labels = Labels(names, col("genus"), col("family"), col("taxonID"), [counts[n] for n in names])
    return labels, {"images": sum(counts.values()), "unlabelled": unlabelled, "classes": len(names)}


def class_weights(counts: list[int], mode: str) -> list[float]:
    """Per-class weights ``n_c ** -p`` (p = 0.5 for ``sqrt``, 1 for ``inverse``), scaled so that the
    weighted number of images equals the real one (the mean weight per image stays 1).

    Args:
        counts: training images per class.
        mode: ``none``, ``sqrt`` or ``inverse``.
    Returns:
        One weight per class (also the expected copies per image when re-sampling).
    """
    power = {"none": 0.0, "sqrt": 0.5, "inverse": 1.0}[mode]
    raw = [max(n, 1) ** -power for n in counts]
    scale = sum(counts) / sum(n * w for n, w in zip(counts, raw))
    return [w * scale for w in raw]


def expand_rows(table: pa.Table, label_index: dict[str, int], repeats: dict[str, float] | None,
                rng: np.random.Generator) -> pa.Table:
    """Labelled rows, each repeated by class re-sampling, with a fresh per-row seed (:data:`SEED`).

    Args:
        table: rows with ``_source``, ``scientificName`` and optionally ``tag``.
        label_index: scientificName -> class index; other rows (unlabelled, unknown) are dropped.
        repeats: scientificName -> expected copies per epoch (Poisson draws); None = one each.
        rng: this task's generator.
    """
    names = table.column(SCIENTIFIC_NAME).to_pylist()
    copies = [0 if n not in label_index else 1 if repeats is None else int(rng.poisson(repeats[n])) for n in names]
    table = table.take(np.repeat(np.arange(len(names)), copies))
    return table.append_column(SEED, pa.array(rng.integers(0, 2**63, table.num_rows), pa.int64()))


def to_arrays(table: pa.Table, label_index: dict[str, int], size: int) -> dict[str, np.ndarray]:
    """Loaded rows (``_pixels``/``error``) -> ``image`` uint8 [N, S, S, 3], ``label`` int64, ``valid`` bool.

    Unreadable images stay with ``valid=False`` (zero pixels) so the training loop counts them per epoch;
    rows whose name is not in ``label_index`` are dropped.
    """
    names = table.column(SCIENTIFIC_NAME).to_pylist()
    keep = [i for i, n in enumerate(names) if n in label_index]
    table = table.take(keep)
    pixels, rows = stack_pixels(table.column(PIXELS), (size, size, 3))
    images = np.zeros((len(keep), size, size, 3), np.uint8)
    images[rows] = pixels
    valid = np.zeros(len(keep), bool)
    valid[rows] = True
    return {"image": images, "label": np.array([label_index[names[i]] for i in keep], np.int64), "valid": valid}


def augment_rows(table: pa.Table, view: TrainView, load: LoadOptions, label_index: dict[str, int],
                 repeats: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """``map_batches`` stage of the training stream: rows -> augmented arrays (see :func:`to_arrays`)."""
    rows = expand_rows(table, label_index, repeats, np.random.default_rng())  # fresh views every epoch
    return to_arrays(load_batch(rows, view, load), label_index, view.preset.image_size)


def eval_rows(table: pa.Table, view: EvalView, load: LoadOptions, label_index: dict[str, int]) -> dict[str, np.ndarray]:
    """``map_batches`` stage of the validation stream: the model's evaluation preprocessing, as classify."""
    return to_arrays(load_batch(table, view, load), label_index, view.preset.crop_size)


def build_datasets(cfg, ds, columns: list[str], labels: Labels, preset: TrainPreset,
                   eval_preset: EvalPreset) -> dict:
    """The lazy training (and validation) datasets handed to Ray Train (``columns``: the source's columns)."""
    index = {n: i for i, n in enumerate(labels.names)}
    load = LoadOptions(max_pixels=cfg.max_pixels)
    repeats = None
    if cfg.class_balance != "none" and cfg.balance_mode == "sample":
        weights = class_weights(labels.train_images, cfg.class_balance)
        repeats = {n: w for n, w in zip(labels.names, weights)}
    keep = [SOURCE_COLUMN, *(c for c in (SCIENTIFIC_NAME, TAG) if c in columns)]
    # Per-epoch shuffle without an all-to-all: block order re-seeded per execution, rows shuffled inside
    # each block of URIs (cheap), then the workers' local shuffle buffers mix the decoded images.
    seed = RandomSeedConfig(cfg.seed, reseed_after_execution=True)
    train = ds.select_columns(keep).randomize_block_order(seed=seed)
    train = train.map_batches(shuffle_rows, batch_size=None, batch_format="pyarrow", num_cpus=0.25)
    train = train.map_batches(augment_rows, fn_args=(TrainView(preset), load, index, repeats),
                              batch_size=cfg.decode_batch_size, batch_format="pyarrow", num_cpus=0.25)
    datasets = {"train": train}
    if cfg.val:
        val, _ = open_source(cfg.val, flag="--val").dataset(labels_from_dirs=True)
        datasets["val"] = val.map_batches(eval_rows, fn_args=(EvalView(eval_preset), load, index),
                                          batch_size=cfg.decode_batch_size, batch_format="pyarrow", num_cpus=0.25)
    return datasets


def build_presets(cfg) -> tuple[TrainPreset, EvalPreset]:
    """The training augmentation and the evaluation preprocessing recorded in the card."""
    train = TrainPreset(image_size=cfg.image_size, scale=(cfg.scale_min, 1.0), rotation=cfg.rotation,
                        shear=cfg.shear, translate=cfg.translate, brightness=cfg.jitter, contrast=cfg.jitter,
                        saturation=cfg.jitter, policy=upright_policy(cfg.upright_tags))
    return train, EvalPreset(crop_size=cfg.image_size, resize_size=round(cfg.image_size * 256 / 224))
