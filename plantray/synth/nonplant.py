"""Drawing images that show no plant: the "non-plant" out-of-distribution set of ``plantray synth``.

Three kinds, each unlike the plant drawings of :mod:`plantray.synth.drawing` (no organ, no grass or soil
background): ``noise`` (coloured noise at a random grain), ``texture`` (a sinusoidal grating or a
checkerboard, like fabric or tiles) and ``geometric`` (rectangles, discs and lines in man-made colours on a
flat wall, like a street scene or an object on a table). Pure Pillow/numpy, no I/O.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

NONPLANT_KINDS = ("noise", "texture", "geometric")
# Man-made colours: concrete, brick, asphalt, signal red and blue, white paint.
_PAINT = [(160, 160, 155), (150, 75, 60), (55, 55, 60), (200, 30, 35), (30, 70, 170), (235, 235, 230)]


def _noise(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    grain = int(rng.integers(1, 24))  # 1 = per-pixel noise, larger = blotches
    small = rng.integers(0, 256, (max(1, h // grain), max(1, w // grain), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR if grain > 1 else Image.NEAREST)


def _texture(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    a, b = (np.array(_PAINT[i], float) for i in rng.choice(len(_PAINT), 2, replace=False))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    period, angle = rng.uniform(8, 60), rng.uniform(0, math.pi)
    u = (x * math.cos(angle) + y * math.sin(angle)) / period
    if rng.random() < 0.5:  # grating
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u)
    else:  # checkerboard
        v = (-x * math.sin(angle) + y * math.cos(angle)) / period
        t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    arr = a * (1 - t[..., None]) + b * t[..., None] + rng.normal(0, 6, (h, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _geometric(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (w, h), _PAINT[int(rng.integers(len(_PAINT)))])
    draw = ImageDraw.Draw(img)
    m = min(w, h)
    for _ in range(int(rng.integers(3, 9))):
        colour = _PAINT[int(rng.integers(len(_PAINT)))]
        x, y, s = w * rng.random(), h * rng.random(), m * rng.uniform(0.08, 0.4)
        shape = int(rng.integers(3))
        if shape == 0:
            draw.rectangle([x - s, y - s / 2, x + s, y + s / 2], fill=colour)
        elif shape == 1:
            draw.ellipse([x - s / 2, y - s / 2, x + s / 2, y + s / 2], fill=colour)
        else:
            draw.line([(x, y), (w * rng.random(), h * rng.random())], fill=colour, width=max(1, int(s / 10)))
    return img


def render_nonplant(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Draws one image of no plant.

    Args:
        kind: one of :data:`NONPLANT_KINDS`.
        size: (width, height) in pixels.
        rng: per-image random generator.
    Returns:
        An RGB image of ``size``.
    Raises:
        ValueError: an unknown ``kind``.
    """
    draw = {"noise": _noise, "texture": _texture, "geometric": _geometric}.get(kind)
    if draw is None:
        raise ValueError(f"kind={kind!r}: use one of {NONPLANT_KINDS}")
    return draw(*size, rng)
