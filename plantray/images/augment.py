"""Training-time augmentation, the paper's recipe: per-image geometric ops chosen by the organ ``tag``.

Every image gets a random resized (scale) crop and colour jitter. Shear, translation, horizontal
mirror, rotation and vertical flip are allowed or not per tag by :data:`TAG_POLICY`, a table: a
``habit`` photo (a whole plant) keeps the sky on top, so it is never rotated or flipped upside down,
whereas a flower, leaf or bark close-up has no preferred orientation.

:func:`augment_batch` is the Ray Data ``map_batches`` stage that reads, decodes and augments on CPU
workers, so the training loop only ever sees uint8 arrays of ``image_size`` and int64 labels. The
label set with per-class counts (:func:`scan_labels`), class-balance weights and the validation
stream are the other halves of the training data and live here too.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

from plantray import storage
from plantray.columns import SOURCE_COLUMN
from plantray.images.decode import ImageError, center_crop, open_image, resize_shorter
from plantray.images.loader import read_image
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

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
