"""Training-time augmentation, the paper's recipe: per-image geometric ops chosen by the organ ``tag``.

The operations are torchvision's (``transforms.v2.functional`` on PIL images); the parameters are drawn
here from the image's own numpy generator, so a view is reproducible from its seed on any worker.
Every image gets a random resized (scale) crop and colour jitter. Shear, translation, horizontal
mirror, rotation and vertical flip are allowed or not per tag by :data:`TAG_POLICY`, a table: a
``habit`` photo (a whole plant) keeps the sky on top, so it is never rotated or flipped upside down,
whereas a flower, leaf or bark close-up has no preferred orientation.

:func:`augment_batch` is the Ray Data ``map_batches`` stage that reads, decodes and augments on CPU
workers, so the training loop only ever sees uint8 arrays of ``image_size`` and int64 labels.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from plantray import storage
from plantray.columns import SOURCE_COLUMN
from plantray.images.crops import random_crop_box
from plantray.images.decode import ImageError, open_image
from plantray.images.loader import read_image
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, OPS, TAG_POLICY, TrainPreset, upright_policy

__all__ = ["FILL", "OPS", "TAG_POLICY", "TrainPreset", "augment", "augment_batch", "colour_jitter",
           "random_resized_crop", "upright_policy"]

# Fill for pixels uncovered by rotation/shear/translation: the ImageNet mean, i.e. zero after normalisation.
FILL = (124, 116, 104)
_BILINEAR = InterpolationMode.BILINEAR


def random_resized_crop(img: Image.Image, preset: TrainPreset, rng: np.random.Generator) -> Image.Image:
    """torchvision's RandomResizedCrop, drawn from ``rng``: a crop of ``scale`` area and ``ratio`` aspect.

    Args:
        img: an RGB image.
        preset: ``image_size``, ``scale`` and ``ratio``.
        rng: the image's random source.
    Returns:
        The crop resized to ``image_size``; with zero magnitudes (or when no draw fits) the resize of the
        shorter side and the centre crop instead.
    """
    size = preset.image_size
    width, height = img.size
    fixed = preset.scale[0] >= 1.0 and preset.ratio[0] == preset.ratio[1] == 1.0
    box = None if fixed else random_crop_box(width, height, preset.scale, preset.ratio, rng)
    if box is None or box == (0, 0, width, height):  # the whole image: the deterministic view, not a squash
        return F.center_crop(F.resize(img, [size], _BILINEAR), [size, size])
    left, top, right, bottom = box
    return F.resized_crop(img, top, left, bottom - top, right - left, [size, size], _BILINEAR)


def _affine(img: Image.Image, ops: dict, preset: TrainPreset, rng: np.random.Generator) -> Image.Image:
    """Rotation, shear and translation about the centre in one resampling (RandomAffine's parameters)."""
    angle = rng.uniform(-preset.rotation, preset.rotation) if ops["rotate"] and preset.rotation else 0.0
    shear = rng.uniform(-preset.shear, preset.shear) if ops["shear"] and preset.shear else 0.0
    max_t = preset.translate * preset.image_size if ops["translate"] else 0.0
    # Whole pixels, as RandomAffine draws them.
    tx, ty = (round(rng.uniform(-max_t, max_t)), round(rng.uniform(-max_t, max_t))) if max_t else (0, 0)
    if not (angle or shear or tx or ty):
        return img
    return F.affine(img, angle=angle, translate=[tx, ty], scale=1.0, shear=[shear, 0.0], interpolation=_BILINEAR,
                    fill=FILL)


def colour_jitter(img: Image.Image, preset: TrainPreset, rng: np.random.Generator) -> Image.Image:
    """torchvision's ColorJitter without hue, drawn from ``rng``.

    Brightness, contrast (about the grey mean) and saturation with factors uniform in
    [max(0, 1 - x), 1 + x], applied in a random order, as torchvision does.

    Args:
        img: an RGB image.
        preset: the magnitudes (``brightness``, ``contrast``, ``saturation``; 0 leaves that one out).
        rng: the image's random source.
    Returns:
        The jittered image.
    """
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    magnitudes = (preset.brightness, preset.contrast, preset.saturation)
    order = rng.permutation(len(adjust))
    factors = [rng.uniform(max(0.0, 1 - x), 1 + x) if x else None for x in magnitudes]
    for i in order:
        if factors[i] is not None:
            img = adjust[i](img, float(factors[i]))
    return img


def augment(img: Image.Image, tag: str | None, preset: TrainPreset, rng: np.random.Generator) -> np.ndarray:
    """One training view of ``img`` as uint8 [image_size, image_size, 3], respecting the tag's policy.

    Colour comes before the affine step so the contrast mean is the photo's own and the fill stays the
    ImageNet mean.

    Args:
        img: decoded RGB image.
        tag: organ tag (``habit``, ``flower``, ...); None or unknown uses the default row.
        preset: magnitudes and policy.
        rng: the random source (seed it for reproducible views).
    Returns:
        The augmented uint8 HWC array.
    """
    ops = preset.allowed(tag)
    img = random_resized_crop(img, preset, rng)
    img = colour_jitter(img, preset, rng)
    img = _affine(img, ops, preset, rng)
    if ops["hflip"] and rng.random() < preset.hflip:
        img = F.horizontal_flip(img)
    if ops["vflip"] and rng.random() < preset.vflip:
        img = F.vertical_flip(img)
    return np.asarray(img, dtype=np.uint8)


def _load(uri: str, tag: str | None, preset: TrainPreset, max_bytes: int, max_pixels: int,
          rng: np.random.Generator) -> tuple[np.ndarray | None, str | None]:
    """Reads, decodes and augments one image; (array, None) or (None, reason). Never raises."""
    try:
        img = open_image(read_image(uri, max_bytes), preset.image_size, max_pixels)
        return augment(img, tag, preset, rng), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # an exotic failure must cost one image, not the epoch
        return None, f"internal error: {type(e).__name__}"


def augment_batch(table: pa.Table, preset: TrainPreset, label_index: dict[str, int],
                  repeats: dict[str, float] | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, np.ndarray]:
    """``map_batches`` stage: rows with ``_source``/``scientificName``[/``tag``] -> training arrays.

    Unreadable images stay in the batch with ``valid=False`` (zero pixels) so the training loop counts
    them per epoch; rows whose name is not in ``label_index`` (unlabelled) are dropped here.

    Args:
        table: a pyarrow batch.
        preset: augmentation.
        label_index: scientificName -> class index.
        repeats: scientificName -> expected copies per epoch (class re-sampling); None = one each.
        max_bytes, max_pixels: larger files/images count as unreadable.
    Returns:
        ``image`` uint8 [N, S, S, 3], ``label`` int64 [N], ``valid`` bool [N].
    """
    rng = np.random.default_rng()  # fresh entropy per task: each epoch sees new views
    names = table.column("scientificName").to_pylist()
    uris = table.column(SOURCE_COLUMN).to_pylist()
    tags = table.column("tag").to_pylist() if "tag" in table.column_names else [None] * len(names)
    rows = []
    for uri, name, tag in zip(uris, names, tags):
        if name not in label_index:
            continue
        copies = 1 if repeats is None else int(rng.poisson(repeats[name]))
        rows.extend([(uri, name, tag)] * copies)
    seeds = rng.integers(0, 2**63, len(rows))

    def load(i):
        uri, _, tag = rows[i]
        return _load(uri, tag, preset, max_bytes, max_pixels, np.random.default_rng(seeds[i]))

    remote = any(storage.scheme(r[0] or "") != "file" for r in rows)
    with ThreadPoolExecutor(8 if remote else 1) as pool:
        results = list(pool.map(load, range(len(rows))))
    size = preset.image_size
    images = np.zeros((len(rows), size, size, 3), np.uint8)
    for i, (arr, _) in enumerate(results):
        if arr is not None:
            images[i] = arr
    return {"image": images, "label": np.array([label_index[r[1]] for r in rows], np.int64),
            "valid": np.array([arr is not None for arr, _ in results], bool)}
