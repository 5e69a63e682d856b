"""The training data: label set and counts, class balance, the augmented and validation streams."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from ray.data import RandomSeedConfig

from plantray.columns import SOURCE_COLUMN
from plantray.images.augment import TrainPreset, augment_batch
from plantray.images.presets import DEFAULT_MAX_BYTES, EvalPreset
from plantray.model.labels import Labels
from plantray.sources import open_source


def shuffle_rows(table: pa.Table) -> pa.Table:
    """A block's rows in a fresh random order (the cheap half of the per-epoch shuffle)."""
    return table.take(np.random.default_rng().permutation(table.num_rows))


LABEL_KEYS = ("scientificName", "genus", "family", "taxonID")


def _label_columns(table: pa.Table, keys: list[str]) -> pa.Table:
    """The label columns as strings, missing names as "" (so unlabelled rows group together)."""
    import pyarrow.compute as pc

    cols = [pc.fill_null(pc.utf8_trim_whitespace(table.column(k).cast(pa.string())), "") for k in keys]
    return pa.table(dict(zip(keys, cols)))


def scan_labels(ds, uri: str):
    """The label set and per-class image counts from one groupby over the training data.

    Args:
        ds: the training dataset (``scientificName`` and optional genus/family/taxonID columns).
        uri: DATA, for messages.
    Returns:
        (Labels sorted by name with ``train_images``, stats dict: ``images``, ``unlabelled``).
    Raises:
        ConfigError: no rows, no ``scientificName`` column, or fewer than two classes.
    """
    from plantray.config import ConfigError
    from plantray.model.labels import Labels

    schema = ds.schema()
    if schema is None:
        raise ConfigError(f"--data {uri!r} holds no images; point it at a non-empty manifest or tree")
    if "scientificName" not in schema.names:
        raise ConfigError(f"--data {uri!r} has no scientificName column (columns: {schema.names[:10]}); add the "
                          "labels or use an ImageFolder tree <root>/<scientificName>/*.jpg")
    keys = [k for k in LABEL_KEYS if k in schema.names]
    groups = ds.select_columns(keys).map_batches(_label_columns, fn_args=(keys,), batch_format="pyarrow")
    counts: dict[str, int] = {}
    extra: dict[str, dict[str, tuple[int, str]]] = {}
    for row in groups.groupby(keys).count().take_all():  # one row per (species, genus, ...): thousands at most
        name, n = row["scientificName"], row["count()"]
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


def _eval_arrays(table: pa.Table, index: dict[str, int], size: int) -> dict[str, np.ndarray]:
    """Decoded evaluation rows (``_pixels``/``error``) -> ``image``, ``label``, ``valid`` arrays."""
    from plantray.columns import PIXELS

    names = table.column("scientificName").to_pylist()
    keep = [i for i, n in enumerate(names) if n in index]
    pixels = table.column(PIXELS).to_pylist()
    images = np.zeros((len(keep), size, size, 3), np.uint8)
    for j, i in enumerate(keep):
        if pixels[i] is not None:
            images[j] = np.frombuffer(pixels[i], np.uint8).reshape(size, size, 3)
    return {"image": images, "label": np.array([index[names[i]] for i in keep], np.int64),
            "valid": np.array([pixels[i] is not None for i in keep], bool)}


def val_arrays(ds, preset, index: dict[str, int], batch_size: int):
    """The validation stream: evaluation preprocessing (as classify does it) -> arrays; unknown names dropped."""
    from plantray.images.loader import decode_batch

    ds = ds.map_batches(decode_batch, fn_args=(preset,), batch_size=batch_size, batch_format="pyarrow",
                        num_cpus=0.25)
    return ds.map_batches(_eval_arrays, fn_args=(index, preset.crop_size), batch_format="pyarrow", num_cpus=0.25)


def build_datasets(cfg, ds, labels: Labels, preset: TrainPreset, eval_preset: EvalPreset) -> dict:
    """The lazy training (and validation) datasets handed to Ray Train."""
    index = {n: i for i, n in enumerate(labels.names)}
    repeats = None
    if cfg.class_balance != "none" and cfg.balance_mode == "sample":
        weights = class_weights(labels.train_images, cfg.class_balance)
        repeats = {n: w for n, w in zip(labels.names, weights)}
    keep = [c for c in (SOURCE_COLUMN, "scientificName", "tag") if c in ds.schema().names]
    # Per-epoch shuffle without an all-to-all: block order re-seeded per execution, rows shuffled inside
    # each block of URIs (cheap), then the workers' local shuffle buffers mix the decoded images.
    seed = RandomSeedConfig(cfg.seed, reseed_after_execution=True)
    train = ds.select_columns(keep).randomize_block_order(seed=seed)
    train = train.map_batches(shuffle_rows, batch_size=None, batch_format="pyarrow", num_cpus=0.25)
    train = train.map_batches(augment_batch, fn_args=(preset, index, repeats, DEFAULT_MAX_BYTES, cfg.max_pixels),
                              batch_size=cfg.decode_batch_size, batch_format="pyarrow", num_cpus=0.25)
    datasets = {"train": train}
    if cfg.val:
        val, _ = open_source(cfg.val, flag="--val").dataset(labels_from_dirs=True)
        datasets["val"] = val_arrays(val, eval_preset, index, cfg.decode_batch_size)
    return datasets
