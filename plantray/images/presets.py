"""Evaluation preprocessing recorded in every model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from plantray.config import DEFAULT_MAX_BYTES  # noqa: F401 (the loader's default, with the pixel cap below)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_MAX_PIXELS = 100_000_000  # above this an image is refused as a decompression bomb

# Test-time crops (plantray.images.crops): here so that the CLI lists them without importing the imaging stack.
TTA_MODES = ("none", "center", "ten-crop", "random-ten-crop")


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
