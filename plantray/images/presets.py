"""The presets: evaluation preprocessing recorded in every model card, training augmentation magnitudes.

Plain settings without torch, as torchvision's ``references/classification/presets.py`` keeps its train and
eval presets together; :mod:`plantray.images.augment` and :mod:`plantray.images.crops` apply them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from plantray.config import DEFAULT_MAX_BYTES  # noqa: F401 (the loader's default, with the pixel cap below)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_MAX_PIXELS = 100_000_000  # above this an image is refused as a decompression bomb


@dataclass
class EvalPreset:
    """Evaluation preprocessing: shorter side to ``resize_size``, centre crop ``crop_size``.

    Recorded in every model card (``input``) so classify reproduces what training evaluated with.
    """

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, repr=False)

    def to_dict(self) -> dict:
        """The card's ``input`` section (max_pixels is an operational limit, not part of it)."""
        d = asdict(self)
        d.pop("max_pixels")
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> EvalPreset:
        """Builds a preset from a model card's ``input`` section."""
        keys = {"crop_size", "resize_size", "mean", "std", "interpolation"}
        kwargs = {k: (tuple(v) if k in ("mean", "std") else v) for k, v in d.items() if k in keys}
        return cls(**kwargs, **overrides)


TTA_MODES = ("none", "center", "ten-crop", "random-ten-crop")


def n_crops(mode: str) -> int:
    """Crops per image for a TTA mode."""
    return 10 if mode in ("ten-crop", "random-ten-crop") else 1


OPS = ("hflip", "vflip", "rotate", "shear", "translate")
# The tag policy is data: tag -> the geometric ops allowed for it. Unknown or missing tags get "default".
TAG_POLICY: dict[str, dict[str, bool]] = {
    "default": {op: True for op in OPS},
    # Whole-plant photos have a meaningful up (sky) and down (ground): no rotation, no upside-down flip.
    "habit": {"hflip": True, "vflip": False, "rotate": False, "shear": True, "translate": True},
}


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
        brightness, contrast, saturation: colour jitter as torchvision's ColorJitter: factors uniform in
            [max(0, 1 - x), 1 + x], applied in a random order.
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
