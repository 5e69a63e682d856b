"""Training-time augmentation, the paper's recipe: per-image geometric ops chosen by the organ ``tag``.

Every image gets a random resized (scale) crop and colour jitter. Shear, translation, horizontal
mirror, rotation and vertical flip are allowed or not per tag by :data:`TAG_POLICY`, a table: a
``habit`` photo (a whole plant) keeps the sky on top, so it is never rotated or flipped upside down,
whereas a flower, leaf or bark close-up has no preferred orientation.

:class:`TrainView` is what the loader (:mod:`plantray.images.loader`) makes of each decoded training
image in Ray Data's CPU tasks, so the training loop only ever sees uint8 arrays of ``image_size``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from plantray.images.decode import center_crop, resize_shorter

SEED = "_seed"  # per-row seed column of the training stream
OPS = ("hflip", "vflip", "rotate", "shear", "translate")
# The tag policy is data: tag -> the geometric ops allowed for it. Unknown or missing tags get "default".
TAG_POLICY: dict[str, dict[str, bool]] = {
    "default": {op: True for op in OPS},
    # Whole-plant photos have a meaningful up (sky) and down (ground): no rotation, no upside-down flip.
    "habit": {"hflip": True, "vflip": False, "rotate": False, "shear": True, "translate": True},
}
# Fill for pixels uncovered by rotation/shear/translation: the ImageNet mean, i.e. zero after normalisation.
FILL = (124, 116, 104)


def upright_policy(tags: list[str]) -> dict[str, dict[str, bool]]:
    """The default policy with ``tags`` also marked upright-only (no rotation, no vertical flip)."""
    policy = {k: dict(v) for k, v in TAG_POLICY.items()}
    for tag in tags:
        policy[tag] = {**policy["default"], "vflip": False, "rotate": False}
    return policy


@dataclass
class TrainPreset:
    """Training augmentation magnitudes (every one 0/1.0 -> a deterministic resize and centre crop).

    Args:
        image_size: output side in pixels.
        scale: (min, max) area fraction of the random resized crop.
        ratio: (min, max) aspect ratio of the random resized crop.
        hflip, vflip: probabilities of a horizontal mirror / upside-down flip (where the tag allows).
        rotation: maximum rotation in degrees, uniform in [-rotation, rotation].
        shear: maximum shear angle in degrees.
        translate: maximum translation as a fraction of the side.
        brightness, contrast, saturation: colour jitter; factors uniform in [1 - x, 1 + x].
        policy: tag -> allowed geometric ops (see :data:`TAG_POLICY`).
    """

    image_size: int = 224
    scale: tuple = (0.35, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    rotation: float = 30.0
    shear: float = 10.0
    translate: float = 0.1
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    policy: dict = field(default_factory=lambda: {k: dict(v) for k, v in TAG_POLICY.items()})

    def allowed(self, tag: str | None) -> dict[str, bool]:
        """The ops allowed for ``tag`` (the ``default`` row for unknown or missing tags)."""
        return self.policy.get((tag or "").strip().lower(), self.policy["default"])

    def to_dict(self) -> dict:
        """For the model card's ``training.augmentation``."""
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        return d


def random_resized_crop(img: Image.Image, preset: TrainPreset, rng: np.random.Generator) -> Image.Image:
    """A random crop of ``scale`` area and ``ratio`` aspect, resized to ``image_size`` (torchvision's recipe)."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(preset.ratio[0]), math.log(preset.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*preset.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if (w, h) == (width, height) or preset.scale[0] >= 1.0 and preset.ratio[0] == preset.ratio[1] == 1.0:
            break  # the whole image: same as the deterministic path below
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            crop = img.crop((left, top, left + w, top + h))
            return crop.resize((preset.image_size, preset.image_size), Image.BILINEAR)
    # Fallback (and the zero-magnitude case): the largest central square.
    return center_crop(resize_shorter(img, preset.image_size), preset.image_size)


def _affine(img: Image.Image, ops: dict, preset: TrainPreset, rng: np.random.Generator) -> Image.Image:
    """Rotation, shear and translation about the centre, in one resampling."""
    angle = rng.uniform(-preset.rotation, preset.rotation) if ops["rotate"] and preset.rotation else 0.0
    shear = rng.uniform(-preset.shear, preset.shear) if ops["shear"] and preset.shear else 0.0
    max_t = preset.translate * preset.image_size if ops["translate"] else 0.0
    tx, ty = (rng.uniform(-max_t, max_t), rng.uniform(-max_t, max_t)) if max_t else (0.0, 0.0)
    if not (angle or shear or tx or ty):
        return img
    a, s = math.radians(angle), math.radians(shear)
    # Forward map: translate(t) . rotate(a) . shear_x(s) about the centre; PIL wants the inverse.
    fwd = np.array([[math.cos(a), math.cos(a) * math.tan(s) - math.sin(a), 0.0],
                    [math.sin(a), math.sin(a) * math.tan(s) + math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    c = (img.size[0] / 2, img.size[1] / 2)
    centre = np.array([[1, 0, c[0] + tx], [0, 1, c[1] + ty], [0, 0, 1.0]])
    uncentre = np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1.0]])
    inv = np.linalg.inv(centre @ fwd @ uncentre)
    return img.transform(img.size, Image.AFFINE, tuple(inv[:2].ravel()), Image.BILINEAR, fillcolor=FILL)


def colour_jitter(arr: np.ndarray, preset: TrainPreset, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter on a uint8 HWC array."""
    if not (preset.brightness or preset.contrast or preset.saturation):
        return arr
    x = arr.astype(np.float32)
    x *= rng.uniform(1 - preset.brightness, 1 + preset.brightness)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + rng.uniform(1 - preset.saturation, 1 + preset.saturation) * (x - grey[..., None])
    mean = grey.mean()
    x = mean + rng.uniform(1 - preset.contrast, 1 + preset.contrast) * (x - mean)
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(img: Image.Image, tag: str | None, preset: TrainPreset, rng: np.random.Generator) -> np.ndarray:
    """One training view of ``img`` as uint8 [image_size, image_size, 3], respecting the tag's policy.

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
    img = _affine(img, ops, preset, rng)
    if ops["hflip"] and rng.random() < preset.hflip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if ops["vflip"] and rng.random() < preset.vflip:
        img = img.transpose(Image.FLIP_TOP_BOTTOM)
    return colour_jitter(np.asarray(img, dtype=np.uint8), preset, rng)


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
