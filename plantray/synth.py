"""A PlantNet-like synthetic dataset: species with real-looking names, drawn photos, manifests.

No real plant photos can be downloaded where plantray is developed and tested, so quickstart,
tests, training and benchmarks run on this instead.  Each species gets a fixed visual signature
(dominant and secondary hue, petal/leaf shape family, petal count, texture); each image varies
organ tag, position, scale, rotation, background and lighting.  Signatures are spread evenly
over hue and cycle through shapes so that a small network learns the classes in a few epochs.

Layout under OUT (local directory or fsspec URI; every file goes through fsspec):
``{train,test,unseen}/<scientificName>/<NNNNNN>.jpg``, ``{split}.parquet`` manifests with
``image_uri`` relative to OUT, ``labels.csv``, ``README.txt`` and ``config.json``.
"""

from __future__ import annotations

import colorsys
import csv
import dataclasses
import io
import math
import zlib
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from plantray.config import ConfigError, field, to_json

SPLITS = ("train", "test", "unseen")
TAGS = ("flower", "leaf", "habit", "fruit", "bark", "stem")
# Pl@ntNet-like organ mix: flowers dominate, bark and stems are rarer.
TAG_WEIGHTS = np.array([0.35, 0.2, 0.15, 0.1, 0.1, 0.1])
MAX_SPECIES = 500
MANIFEST_SCHEMA = pa.schema([
    ("image_uri", pa.string()), ("scientificName", pa.string()), ("genus", pa.string()),
    ("family", pa.string()), ("taxonID", pa.string()), ("tag", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("occurrenceID", pa.string()),
])

# Real families and genera of Western European flora; epithets are real but freely combined.
FLORA = {
    "Rosaceae": ["Rosa", "Prunus", "Crataegus", "Rubus", "Potentilla", "Sorbus"],
    "Fagaceae": ["Quercus", "Fagus", "Castanea"],
    "Asteraceae": ["Centaurea", "Cirsium", "Leucanthemum", "Achillea", "Senecio"],
    "Ranunculaceae": ["Ranunculus", "Anemone", "Clematis", "Helleborus"],
    "Lamiaceae": ["Salvia", "Lamium", "Mentha", "Thymus", "Teucrium"],
    "Fabaceae": ["Trifolium", "Lathyrus", "Vicia", "Lotus", "Genista"],
    "Orchidaceae": ["Ophrys", "Orchis", "Dactylorhiza", "Epipactis"],
    "Brassicaceae": ["Cardamine", "Erysimum", "Arabis"],
    "Apiaceae": ["Daucus", "Heracleum", "Angelica", "Eryngium"],
    "Betulaceae": ["Betula", "Alnus", "Corylus", "Carpinus"],
    "Campanulaceae": ["Campanula", "Phyteuma"],
    "Caryophyllaceae": ["Silene", "Dianthus", "Stellaria"],
    "Plantaginaceae": ["Veronica", "Plantago", "Digitalis"],
    "Geraniaceae": ["Geranium", "Erodium"],
    "Boraginaceae": ["Myosotis", "Echium", "Symphytum"],
    "Sapindaceae": ["Acer", "Aesculus"],
}
EPITHETS = (
    "vulgaris officinalis sylvestris arvensis montana alba rubra lutea repens pratensis acris minor major "
    "hirsuta glabra maritima alpina palustris nemorosa canina spinosa dioica media communis tomentosa "
    "pyrenaica europaea gallica hispanica germanica angustifolia latifolia grandiflora parviflora elegans "
    "nigra campestris aquatica odorata pubescens petraea robur nana recta erecta verna autumnalis "
    "procumbens ramosa vesca scabra mollis rotundifolia sativa pendula virgata").split()


@dataclass
class SynthConfig:
    """Options of the synthetic dataset generator (CLI flags are generated from these fields)."""

    out: str = field(help="output directory or fsspec URI (s3://bucket/prefix); must be empty",
                     positional=True)
    species: int = field(8, help=f"number of species (2..{MAX_SPECIES})")
    images_per_species: int = field(30, help="training images per species, before imbalance")
    test_per_species: int = field(8, help="held-out test images per species")
    unseen_per_species: int = field(4, help="images per species in the 'unseen' split (classification demo)")
    seed: int = field(0, help="random seed; the same seed gives byte-identical output")
    min_pixels: int = field(200_000, help="smallest image pixel count (the paper: 200K-600K)")
    max_pixels: int = field(600_000, help="largest image pixel count")
    min_aspect: float = field(0.5, help="smallest width/height ratio")
    max_aspect: float = field(2.0, help="largest width/height ratio")
    imbalance: float = field(0.0, help="long-tail exponent: species k gets ~n*(k+1)^-imbalance train images")
    quality: int = field(90, help="JPEG quality (1..95)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first bad value and what is allowed."""
        checks = [
            (bool(self.out), "out must be a directory or URI, got an empty string"),
            (2 <= self.species <= MAX_SPECIES, f"species={self.species}: use 2..{MAX_SPECIES}"),
            (self.images_per_species >= 1, f"images_per_species={self.images_per_species}: use >= 1"),
            (self.test_per_species >= 0, f"test_per_species={self.test_per_species}: use >= 0"),
            (self.unseen_per_species >= 0, f"unseen_per_species={self.unseen_per_species}: use >= 0"),
            (self.min_pixels >= 1024, f"min_pixels={self.min_pixels}: use >= 1024 so plants stay drawable"),
            (self.min_pixels <= self.max_pixels,
             f"min_pixels={self.min_pixels} > max_pixels={self.max_pixels}: swap or widen them"),
            (self.min_aspect > 0, f"min_aspect={self.min_aspect}: use a ratio > 0"),
            (self.min_aspect <= self.max_aspect,
             f"min_aspect={self.min_aspect} > max_aspect={self.max_aspect}: swap them"),
            (self.imbalance >= 0, f"imbalance={self.imbalance}: use 0 (balanced) or a positive exponent"),
            (1 <= self.quality <= 95, f"quality={self.quality}: use a JPEG quality in 1..95"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


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


def make_species(n: int, seed: int) -> list[Species]:
    """Builds ``n`` species sorted by scientific name, deterministic for ``seed``.

    Genera are taken two per family first and get ~3 species each, so genus- and family-level
    accuracy differ from species-level accuracy.

    Args:
        n: number of species (2..MAX_SPECIES).
        seed: random seed.

    Returns:
        Species sorted by ``name``; index k in this list is label k.
    """
    rng = np.random.default_rng([seed, 7])
    taxa = _pick_taxa(n, rng)
    perm, offset = rng.permutation(n), rng.random()
    species = []
    for (family, genus, epithet), j in zip(taxa, perm):
        # Neighbours in hue (j, j+1) always differ in shape and usually in texture and petal count.
        name = f"{genus} {epithet}"
        species.append(Species(
            name=name, genus=genus, family=family, taxon_id="", hue=float((offset + j / n) % 1.0),
            hue2=float((offset + j / n + 0.33 + 0.33 * (j % 2)) % 1.0), saturation=0.7 + 0.13 * float(j % 3),
            shape=int(j % 4), petals=int(3 + (j * 5) % 7), texture=int((j // 4) % 3)))
    species.sort(key=lambda s: s.name)
    return _with_taxon_ids(species)


def _pick_taxa(n: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(family, genus, epithet) for n species: ~3 per genus, genera taken two per family first."""
    families = list(FLORA)
    rng.shuffle(families)
    genera = {f: list(rng.permutation(FLORA[f])) for f in families}
    order = [(f, g) for f in families for g in genera[f][:2]]
    order += [(f, g) for f in families for g in genera[f][2:]]
    chosen = order[:min(len(order), math.ceil(n / 3))]
    taxa = []
    for i, (family, genus) in enumerate(chosen):
        count = n // len(chosen) + (i < n % len(chosen))
        taxa += [(family, str(genus), str(e)) for e in rng.choice(EPITHETS, size=count, replace=False)]
    return taxa


def _with_taxon_ids(species: list[Species]) -> list[Species]:
    """Gives each species a GBIF-like numeric taxonID derived from its name (stable across seeds)."""
    used, out = set(), []
    for s in species:
        tid = 1_000_000 + zlib.crc32(s.name.encode()) % 9_000_000
        while tid in used:  # crc collisions are rare but must not merge two classes
            tid += 1
        used.add(tid)
        out.append(dataclasses.replace(s, taxon_id=str(tid)))
    return out


# ----------------------------------------------------------------------------------------- drawing

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


# ----------------------------------------------------------------------------------------- writing

def image_size(cfg: SynthConfig, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) with pixel count uniform in [min_pixels, max_pixels], log-uniform aspect in bounds.

    Args:
        cfg: the generator config (pixel and aspect bounds).
        rng: per-image random generator.

    Returns:
        (width, height) satisfying both bounds after rounding.
    """
    lo, hi = math.log(cfg.min_aspect), math.log(cfg.max_aspect)
    for _ in range(100):  # rounding can leave the bounds when they are tight: draw again
        pixels, aspect = rng.uniform(cfg.min_pixels, cfg.max_pixels), math.exp(rng.uniform(lo, hi))
        h = max(1, round(math.sqrt(pixels / aspect)))
        w = max(1, round(pixels / h))
        if cfg.min_pixels <= w * h <= cfg.max_pixels and cfg.min_aspect <= w / h <= cfg.max_aspect:
            return w, h
    raise ConfigError(f"no integer image size has {cfg.min_pixels}..{cfg.max_pixels} pixels and aspect "
                      f"{cfg.min_aspect}..{cfg.max_aspect}: widen the pixel or aspect range")


def split_counts(cfg: SynthConfig) -> dict[str, list[int]]:
    """Images per species (label order) for each split; train is long-tailed when imbalance > 0."""
    n = cfg.images_per_species
    train = [max(min(2, n), round(n * (k + 1) ** -cfg.imbalance)) for k in range(cfg.species)]
    return {"train": train, "test": [cfg.test_per_species] * cfg.species,
            "unseen": [cfg.unseen_per_species] * cfg.species}


def _open_out(out: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of OUT, refusing a non-empty destination before any work."""
    fs, root = fsspec.core.url_to_fs(out)
    root = root.rstrip("/")
    if fs.exists(root):
        if not fs.isdir(root) or fs.ls(root, detail=False):
            raise ConfigError(f"out={out!r} exists and is not empty: pick an empty or new directory")
    fs.makedirs(root, exist_ok=True)
    return fs, root


def _write_split(fs, root: str, cfg: SynthConfig, split: str, species: list[Species],
                 counts: list[int]) -> list[dict]:
    """Renders and writes one split's images; returns its manifest rows."""
    rows = []
    for k, (sp, count) in enumerate(zip(species, counts)):
        files = {}
        for i in range(count):
            # One generator per image, keyed by its identity: output does not depend on write order.
            rng = np.random.default_rng([cfg.seed, SPLITS.index(split), k, i])
            tag = str(rng.choice(TAGS, p=TAG_WEIGHTS))
            w, h = image_size(cfg, rng)
            buf = io.BytesIO()
            render_image(sp, tag, (w, h), rng).save(buf, "JPEG", quality=cfg.quality)
            uri = f"{split}/{sp.name}/{i:06d}.jpg"
            files[f"{root}/{uri}"] = buf.getvalue()
            rows.append({"image_uri": uri, "scientificName": sp.name, "genus": sp.genus, "family": sp.family,
                         "taxonID": sp.taxon_id, "tag": tag, "width": w, "height": h,
                         "occurrenceID": f"urn:plantray:synth:{cfg.seed}:{split}:{sp.taxon_id}:{i}"})
        if files:
            fs.makedirs(f"{root}/{split}/{sp.name}", exist_ok=True)
            fs.pipe(files)  # one call per directory: s3fs uploads these concurrently
    return rows


def _write_tables(fs, root: str, cfg: SynthConfig, species: list[Species], totals: dict[str, int]) -> None:
    """labels.csv, README.txt and config.json."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["scientificName", "genus", "family", "taxonID"])
    writer.writerows([s.name, s.genus, s.family, s.taxon_id] for s in species)
    fs.pipe_file(f"{root}/labels.csv", text.getvalue().encode())
    readme = (
        "plantray synthetic plant dataset\n\n"
        f"{len(species)} made-up species with real Western European genus and family names, drawn by\n"
        f"plantray.synth (seed {cfg.seed}). No real photographs: for quickstarts, tests, benchmarks.\n"
        f"Images: {', '.join(f'{s} {n}' for s, n in totals.items())}.\n"
        "Layout: <split>/<scientificName>/<NNNNNN>.jpg; <split>.parquet manifests (image_uri relative to\n"
        "this directory); labels.csv one row per species.\n\n"
        "Licence: CC0 1.0 (public domain dedication); the images are synthetic.\n")
    fs.pipe_file(f"{root}/README.txt", readme.encode())
    fs.pipe_file(f"{root}/config.json", to_json(cfg).encode())


def synthesize(cfg: SynthConfig) -> dict:
    """Writes the synthetic dataset to ``cfg.out``; byte-identical output for the same config.

    Args:
        cfg: the generator config; ``cfg.out`` must not exist or be an empty directory.

    Returns:
        A summary: ``out``, ``species`` (count), ``images`` (per split), ``train_counts``
        (scientificName -> train images, label order), ``manifests`` and ``labels`` (paths relative to out).

    Raises:
        ConfigError: bad options or a non-empty ``out``.
    """
    cfg.validate()
    counts = split_counts(cfg)
    image_size(cfg, np.random.default_rng(0))  # impossible size bounds fail before any file is written
    fs, root = _open_out(cfg.out)
    species = make_species(cfg.species, cfg.seed)
    totals = {}
    for split in SPLITS:
        rows = _write_split(fs, root, cfg, split, species, counts[split])
        with fs.open(f"{root}/{split}.parquet", "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), f)
        totals[split] = len(rows)
    _write_tables(fs, root, cfg, species, totals)
    return {"out": cfg.out, "species": len(species), "images": totals,
            "train_counts": {s.name: c for s, c in zip(species, counts["train"])},
            "manifests": {s: f"{s}.parquet" for s in SPLITS}, "labels": "labels.csv"}
