"""Training-time augmentation, the paper's recipe: per-image geometric ops chosen by the organ ``tag``.

The operations are torchvision's (``transforms.v2.functional`` on PIL images); the parameters are drawn
here from the image's own numpy generator, so a view is reproducible from its seed on any worker.
Every image gets a random resized (scale) crop and colour jitter. Shear, translation, horizontal
mirror, rotation and vertical flip are allowed or not per tag by :data:`TAG_POLICY`, a table: a
``habit`` photo (a whole plant) keeps the sky on top, so it is never rotated or flipped upside down,
whereas a flower, leaf or bark close-up has no preferred orientation.

:class:`TrainView` is what the loader (:mod:`plantray.images.loader`) makes of each decoded training
image in Ray Data's CPU tasks, so the training loop only ever sees uint8 arrays of ``image_size``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from plantray.images.crops import random_crop_box
from plantray.images.presets import OPS, TAG_POLICY, TrainPreset, upright_policy

__all__ = ["FILL", "OPS", "SEED", "TAG_POLICY", "TrainPreset", "TrainView", "augment", "colour_jitter",
           "random_resized_crop", "upright_policy"]
SEED = "_seed"  # per-row seed column of the training stream
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


class TrainView:
    """The loader's view for training: one augmented view of an image, by its ``tag`` and its own seed.

    The seed column (:data:`SEED`) is drawn per row by the training data stage, so every epoch and
    every re-sampled copy of an image gets a fresh view.
    """

    columns = ("tag", SEED)

    def __init__(self, preset: TrainPreset):
        self.preset, self.min_side = preset, preset.image_size

    def __call__(self, img: Image.Image, row: dict) -> np.ndarray:
        return augment(img, row.get("tag"), self.preset, np.random.default_rng(row[SEED]))
