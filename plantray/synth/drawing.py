"""Drawing one synthetic plant photo: a species' visual signature rendered as one organ on a background.

Pure Pillow/numpy, no I/O: :mod:`plantray.synth` decides which species, organ and size each image gets
and writes the JPEGs; this module only turns (species, organ tag, size, random generator) into pixels.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Organ tags render_image can draw; plantray.synth.TAG_WEIGHTS gives their mix, in this order.
TAGS = ("flower", "leaf", "habit", "fruit", "bark", "stem")


@dataclass(frozen=True)
class Species:
    """One synthetic species: its taxonomy and the visual signature every image of it shares."""

    name: str
    genus: str
    family: str
    taxon_id: str
    hue: float  # dominant colour (petals, fruit; tints leaves and bark)
    hue2: float  # secondary colour (flower centre, veins, dots)
    saturation: float
    shape: int  # 0 elliptic, 1 pointed, 2 round, 3 ray petals; also picks the leaf outline
    petals: int
    texture: int  # 0 veins, 1 dots, 2 dark outline


_T = np.linspace(0, 2 * np.pi, 24, endpoint=False)
# Unit petal outlines along +x, from the flower centre (x=0) to the tip (x=1).
_PETALS = [
    np.stack([0.55 + 0.45 * np.cos(_T), 0.3 * np.sin(_T)], 1),
    np.array([[0.15, 0], [0.5, 0.32], [1, 0], [0.5, -0.32]]),
    np.stack([0.6 + 0.4 * np.cos(_T), 0.42 * np.sin(_T)], 1),
    np.stack([0.55 + 0.45 * np.cos(_T), 0.11 * np.sin(_T)], 1),
]
_T2 = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_LOBED = 0.5 * (0.8 + 0.2 * np.cos(5 * _T2))
# Unit leaf outlines along +x from the petiole (x=0) to the tip (x=1), one per shape family.
_LEAVES = [
    np.stack([0.5 + _LOBED * np.cos(_T2), 0.7 * _LOBED * np.sin(_T2)], 1),
    np.stack([0.5 + 0.5 * np.cos(_T2), 0.12 * np.sin(_T2)], 1),
    np.stack([0.5 + 0.5 * np.cos(_T2), 0.45 * np.sin(_T2)], 1),
    np.stack([0.5 + 0.5 * np.cos(_T2), 0.2 * np.sin(_T2) * (1 + 0.5 * np.cos(6 * _T2))], 1),
]
# (top, bottom) RGB of each background kind; 'landscape' stacks sky over grass.
# Duller than the plants on purpose: photographers frame the organ against a muted background.
_BACKGROUNDS = {"grass": ((95, 120, 80), (70, 95, 60)), "soil": ((125, 110, 95), (95, 82, 70)),
                "sky": ((140, 170, 215), (195, 210, 230)), "forest": ((60, 70, 58), (75, 68, 58))}
_GREEN, _BROWN = (60, 130, 50), (95, 70, 50)


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def _mix(a: tuple, b: tuple, t: float) -> tuple[int, int, int]:
    return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b))


def _place(unit: np.ndarray, length: float, angle: float, x: float, y: float) -> list[tuple[float, float]]:
    """Scales a unit outline to ``length``, rotates it by ``angle`` and moves its origin to (x, y)."""
    c, s = math.cos(angle), math.sin(angle)
    px, py = unit[:, 0] * length, unit[:, 1] * length
    return list(zip((x + px * c - py * s).tolist(), (y + px * s + py * c).tolist()))


def _texture(draw: ImageDraw.ImageDraw, sp: Species, x: float, y: float, angle: float, length: float,
             colour: tuple) -> None:
    """Species texture along an organ's axis: veins (midrib and side veins) or a row of dots."""
    c, s, w = math.cos(angle), math.sin(angle), max(1, int(length / 25))
    if sp.texture == 0:
        for side in (-0.27, 0.0, 0.27):
            tip = (x + length * 0.85 * math.cos(angle + side), y + length * 0.85 * math.sin(angle + side))
            draw.line([(x + c * length * 0.2, y + s * length * 0.2), tip], fill=colour, width=w)
    elif sp.texture == 1:
        r = max(1.0, length / 14)
        for t in (0.45, 0.65, 0.85):
            draw.ellipse([x + c * length * t - r, y + s * length * t - r, x + c * length * t + r,
                          y + s * length * t + r], fill=colour)


def _flower(draw: ImageDraw.ImageDraw, sp: Species, x: float, y: float, r: float, rot: float,
            colours: tuple) -> None:
    main, second = colours
    n = sp.petals * (2 if sp.shape == 3 else 1)  # ray florets: daisy-like, twice as many
    outline = _mix(main, (0, 0, 0), 0.55) if sp.texture == 2 else None
    for i in range(n):
        a = rot + 2 * math.pi * i / n
        draw.polygon(_place(_PETALS[sp.shape], r, a, x, y), fill=main, outline=outline,
                     width=max(1, int(r / 20)))
        _texture(draw, sp, x, y, a, r, second)
    c = r * 0.22
    draw.ellipse([x - c, y - c, x + c, y + c], fill=second)


def _leaf(draw: ImageDraw.ImageDraw, sp: Species, x: float, y: float, length: float, rot: float,
          colours: tuple) -> None:
    main, second = colours
    fill = _mix(_GREEN, main, 0.55)  # tinted so the species colour stays visible on leaf photos
    outline = _mix(fill, (0, 0, 0), 0.5) if sp.texture == 2 else None
    draw.polygon(_place(_LEAVES[sp.shape], length, rot, x, y), fill=fill, outline=outline,
                 width=max(1, int(length / 40)))
    _texture(draw, sp, x, y, rot, length, _mix(second, fill, 0.3))


def _fruit(draw: ImageDraw.ImageDraw, sp: Species, x: float, y: float, r: float, rot: float,
           colours: tuple) -> None:
    main, second = colours
    count, fr = 3 + sp.petals % 5, r * 0.28
    for i in range(count):
        a = rot + 2 * math.pi * i / count
        fx, fy = x + math.cos(a) * r * 0.5, y + math.sin(a) * r * 0.5 + r * 0.3
        draw.line([(x, y - r * 0.6), (fx, fy)], fill=_mix(second, _GREEN, 0.5), width=max(1, int(r / 25)))
        draw.ellipse([fx - fr, fy - fr, fx + fr, fy + fr], fill=main,
                     outline=_mix(main, (0, 0, 0), 0.5) if sp.texture == 2 else None)
        hx, hy = fx - fr * 0.5, fy - fr * 0.5  # specular highlight
        draw.ellipse([hx, hy, hx + fr * 0.3, hy + fr * 0.3], fill=(245, 245, 235))
        if sp.texture == 1:
            draw.ellipse([fx, fy, fx + fr * 0.25, fy + fr * 0.25], fill=second)


def _bark(draw: ImageDraw.ImageDraw, sp: Species, w: int, h: int, x: float, colours: tuple,
          rng: np.random.Generator) -> None:
    main, second = colours
    tw = w * rng.uniform(0.45, 0.8)
    trunk = _mix(_BROWN, main, 0.5)
    draw.rectangle([x - tw / 2, 0, x + tw / 2, h], fill=trunk)
    mark = _mix(second, (0, 0, 0), 0.3)
    for i in range(sp.petals + 2):  # furrows, lenticels or plates: the species texture on a trunk
        fx = x - tw / 2 + tw * (i + 0.5) / (sp.petals + 2)
        if sp.texture == 0:
            drift = rng.uniform(-0.05, 0.05) * tw
            draw.line([(fx, 0), (fx + drift, h)], fill=mark, width=max(1, int(tw / 40)))
        for j in range(6):
            fy = h * (j + rng.uniform(0.2, 0.8)) / 6
            if sp.texture == 1:
                draw.ellipse([fx - tw / 25, fy - tw / 80, fx + tw / 25, fy + tw / 80], fill=mark)
            elif sp.texture == 2:
                draw.rectangle([fx - tw / 30, fy - h / 30, fx + tw / 30, fy + h / 30], outline=mark,
                               width=max(1, int(tw / 60)))


def _plant(draw: ImageDraw.ImageDraw, sp: Species, base: tuple, top: tuple, r: float, colours: tuple,
           rng: np.random.Generator, flowers: int) -> None:
    """A stem from ``base`` to ``top`` with leaves along it and ``flowers`` flower heads near the top."""
    stem = _mix(_GREEN, colours[0], 0.25)
    draw.line([base, top], fill=stem, width=max(1, int(r / 8)))
    angle = math.atan2(top[1] - base[1], top[0] - base[0])
    for t in (0.3, 0.55):
        lx, ly = base[0] + (top[0] - base[0]) * t, base[1] + (top[1] - base[1]) * t
        for side in (-1, 1):
            _leaf(draw, sp, lx, ly, r * 0.9, angle + side * 0.9, colours)
    for i in range(flowers):
        a = angle + (i - (flowers - 1) / 2) * 0.6
        fx, fy = top[0] + math.cos(a) * r * 0.8 * (i > 0), top[1] + math.sin(a) * r * 0.8 * (i > 0)
        _flower(draw, sp, fx, fy, r * 0.65, rng.uniform(0, 2 * math.pi), colours)


def _background(w: int, h: int, kind: str, rng: np.random.Generator) -> Image.Image:
    """A smooth noisy gradient; drawn at 1/12 scale and upsampled, which also keeps it cheap."""
    gw, gh = max(2, w // 12), max(2, h // 12)
    t = np.linspace(0, 1, gh)[:, None, None]
    if kind == "landscape":
        horizon = rng.uniform(0.35, 0.65)
        sky, grass = (np.array(c, float) for c in (_BACKGROUNDS["sky"], _BACKGROUNDS["grass"]))
        top = np.where(t < horizon, sky[0], grass[0])
        bottom = np.where(t < horizon, sky[1], grass[1])
    else:
        top, bottom = (np.array(c, float) for c in _BACKGROUNDS[kind])
    arr = top * (1 - t) + bottom * t + rng.normal(0, 14, (gh, gw, 3)) + rng.normal(0, 12, 3)
    small = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return small.resize((w, h), Image.BILINEAR)


def _lighting(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Exposure and colour-temperature jitter as one per-channel lookup table (fast at 600K pixels)."""
    gain = rng.uniform(0.75, 1.2) * (1 + rng.uniform(-0.08, 0.08) * np.array([1.0, 0.0, -1.0]))
    lut = np.minimum(255, np.arange(256)[None, :] * gain[:, None]).astype(np.uint8)
    return img.point(lut.ravel().tolist())


def render_image(sp: Species, tag: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Draws one photo of species ``sp`` showing organ ``tag``.

    Args:
        sp: the species (its signature fixes colours, shapes and texture).
        tag: one of TAGS.
        size: (width, height) in pixels.
        rng: per-image random generator (position, scale, rotation, background, lighting).

    Returns:
        An RGB image of ``size``.
    """
    w, h = size
    m = min(w, h)
    colours = (_rgb(sp.hue + rng.uniform(-0.02, 0.02), sp.saturation, rng.uniform(0.75, 0.95)),
               _rgb(sp.hue2, 0.75, 0.45))
    kind = {"habit": "landscape", "bark": "forest"}.get(tag, str(rng.choice(["grass", "soil"])))
    img = _background(w, h, kind, rng)
    draw = ImageDraw.Draw(img)
    x, y, rot = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7), rng.uniform(0, 2 * math.pi)
    if tag == "flower":
        _flower(draw, sp, x, y, m * rng.uniform(0.35, 0.5), rot, colours)
    elif tag == "leaf":
        length = m * rng.uniform(0.6, 0.9)
        _leaf(draw, sp, x - math.cos(rot) * length / 2, y - math.sin(rot) * length / 2, length, rot, colours)
    elif tag == "fruit":
        _fruit(draw, sp, x, y, m * rng.uniform(0.3, 0.45), rot, colours)
    elif tag == "bark":
        _bark(draw, sp, w, h, x, colours, rng)
    elif tag == "habit":
        _plant(draw, sp, (x, h), (x + rng.uniform(-0.15, 0.15) * w, h * rng.uniform(0.2, 0.4)),
               m * rng.uniform(0.15, 0.22), colours, rng, flowers=int(rng.integers(1, 4)))
    elif tag == "stem":
        base, top = (w * rng.uniform(0, 0.3), h), (w * rng.uniform(0.6, 1.0), 0)
        _plant(draw, sp, base, top, m * 0.32, colours, rng, flowers=0)
    else:
        raise ValueError(f"tag={tag!r}: use one of {TAGS}")
    return _lighting(img, rng)
