"""Test-time augmentation: the crop geometry and the loader view that produces an image's crops.

The paper tests with ten crops per image and averages the softmax. ``ten-crop`` is the classic
four corners + centre and their horizontal mirrors of the image resized to ``resize_size``;
``random-ten-crop`` draws ten milder-than-training random crops, seeded per image so a re-run
scores the very same pixels. The crop operations are torchvision's (``transforms.v2.functional``);
the random parameters come from the image's numpy generator. Crops are produced in the loader's CPU
tasks (:class:`CropView`); the crop predictor sends all crops of a batch through the network in one
forward pass.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from plantray.images.decode import center_crop, resize_shorter
from plantray.images.presets import TTA_MODES, EvalPreset, n_crops

__all__ = ["TTA_MODES", "CropView", "image_rng", "make_crops", "n_crops", "random_crop_box", "random_crop_params"]

# Milder than training's RandomResizedCrop (0.08-1.0): a test crop must still show the plant.
RANDOM_SCALE = (0.7, 1.0)
RANDOM_RATIO = (3 / 4, 4 / 3)
Box = tuple[int, int, int, int]  # PIL crop box: left, top, right, bottom


def image_rng(seed: int, image_uri: str) -> np.random.Generator:
    """A generator keyed by (seed, image): the same crops on every run, worker and machine.

    Python's ``hash`` is salted per process, so the URI is hashed with SHA-256 instead.
    """
    digest = int.from_bytes(hashlib.sha256(str(image_uri).encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def random_crop_box(width: int, height: int, scale: tuple, ratio: tuple, rng: np.random.Generator) -> Box | None:
    """One RandomResizedCrop draw (torchvision's ``get_params``) from a numpy generator instead of torch's.

    Args:
        width, height: the image size.
        scale: crop area as a fraction of the image area, drawn uniformly.
        ratio: crop aspect (width / height) range, drawn log-uniformly.
        rng: the image's generator.
    Returns:
        A PIL box within the image, or None when ten draws do not fit (the caller picks its fallback).
    """
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):  # rejection sampling, as torchvision: a draw may not fit the image
        area = width * height * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    return None


def random_crop_params(width: int, height: int, rng: np.random.Generator, n: int = 10,
                       scale: tuple = RANDOM_SCALE, ratio: tuple = RANDOM_RATIO) -> list[tuple[Box, bool]]:
    """``n`` random (box, mirror) pairs inside a width x height image, RandomResizedCrop-style.

    Args:
        width, height: the (resized) image size.
        rng: the image's generator (see :func:`image_rng`).
        n: how many crops.
        scale: crop area as a fraction of the image area.
        ratio: crop aspect (width / height) range, drawn log-uniformly.
    Returns:
        ``n`` pairs of a PIL box within the image and whether to mirror the crop.
    """
    out = []
    for _ in range(n):
        box = random_crop_box(width, height, scale, ratio, rng)
        if box is None:  # fall back to the largest centred square
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            box = (left, top, left + side, top + side)
        out.append((box, bool(rng.random() < 0.5)))
    return out


def _stack(crops: list[Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(c, np.uint8) for c in crops])


def make_crops(img: Image.Image, preset: EvalPreset, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The TTA crops of one decoded image.

    Args:
        img: upright RGB image (any size).
        preset: the model's evaluation preprocessing (resize_size, crop_size, interpolation).
        mode: one of :data:`TTA_MODES`.
        rng: the image's generator, required for ``random-ten-crop``.
    Returns:
        uint8 ``[n_crops(mode), crop_size, crop_size, 3]``: for ``ten-crop`` the four corners and the
        centre (torchvision's ``five_crop``), then the mirror of each in the same order.
    """
    size = preset.crop_size
    img = resize_shorter(img, max(preset.resize_size, size), preset.interpolation)
    if mode in ("none", "center"):
        return np.asarray(center_crop(img, size), np.uint8)[None]  # the card's preprocessing, as classify
    # five_crop places the centre crop as torchvision's CenterCrop: an odd margin's half-pixel rounds to even.
    if mode == "ten-crop":
        five = F.five_crop(img, [size, size])
        return _stack([*five, *(F.horizontal_flip(c) for c in five)])
    if mode == "random-ten-crop":
        if rng is None:
            raise ValueError("random-ten-crop needs the image's generator")
        interpolation = InterpolationMode(preset.interpolation)
        crops = []
        for (left, top, right, bottom), mirror in random_crop_params(*img.size, rng):
            crop = F.resized_crop(img, top, left, bottom - top, right - left, [size, size], interpolation)
            crops.append(F.horizontal_flip(crop) if mirror else crop)
        return _stack(crops)
    raise ValueError(f"unknown TTA mode {mode!r}; use one of {TTA_MODES}")


class CropView:
    """The loader's view for evaluation: the test-time crops of one image (``[n_crops(mode), S, S, 3]``).

    Random crops are seeded by (seed, ``image_uri``), so a re-run scores the very same pixels.
    """

    columns = ("image_uri",)

    def __init__(self, preset: EvalPreset, mode: str, seed: int = 0):
        if mode not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {mode!r}; use one of {TTA_MODES}")
        self.preset, self.mode, self.seed, self.min_side = preset, mode, seed, preset.resize_size
        self.crops = n_crops(mode)

    def __call__(self, img: Image.Image, row: dict) -> np.ndarray:
        rng = image_rng(self.seed, row["image_uri"]) if self.mode == "random-ten-crop" else None
        return make_crops(img, self.preset, self.mode, rng)
