"""Test-time augmentation: crop geometry, the Ray Data stage producing crops, and the crop-averaging actor.

The paper tests with ten crops per image and averages the softmax. ``ten-crop`` is the classic
four corners + centre and their horizontal mirrors of the image resized to ``resize_size``;
``random-ten-crop`` draws ten milder-than-training random crops, seeded per image so a re-run
scores the very same pixels. Crops are produced in CPU tasks; the actor sends all crops of a
batch through the network in one forward pass.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from plantray import io as pio
from plantray.decode import ERROR, PIXELS, read_image
from plantray.imaging import EvalPreset, ImageError, center_crop, open_image, resize_shorter
from plantray.metrics import top_k_indices
from plantray.model import load_artifact
from plantray.predict import Network, pick_device, scatter

TTA_MODES = ("none", "center", "ten-crop", "random-ten-crop")
# Milder than training's RandomResizedCrop (0.08-1.0): a test crop must still show the plant.
RANDOM_SCALE = (0.7, 1.0)
RANDOM_RATIO = (3 / 4, 4 / 3)
_READ_THREADS = 16

Box = tuple[int, int, int, int]  # PIL crop box: left, top, right, bottom


def n_crops(mode: str) -> int:
    """Crops per image for a TTA mode."""
    return 10 if mode in ("ten-crop", "random-ten-crop") else 1


def five_crop_boxes(width: int, height: int, size: int) -> list[Box]:
    """Top-left, top-right, bottom-left, bottom-right and centre ``size`` squares of a width x height image."""
    left, top = (width - size) // 2, (height - size) // 2  # as imaging.center_crop
    corners = [(0, 0), (width - size, 0), (0, height - size), (width - size, height - size), (left, top)]
    return [(x, y, x + size, y + size) for x, y in corners]


def image_rng(seed: int, image_uri: str) -> np.random.Generator:
    """A generator keyed by (seed, image): the same crops on every run, worker and machine.

    Python's ``hash`` is salted per process, so the URI is hashed with SHA-256 instead.
    """
    digest = int.from_bytes(hashlib.sha256(str(image_uri).encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


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
        box = None
        for _ in range(10):  # rejection sampling, as torchvision: a draw may not fit the image
            area = width * height * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
                box = (left, top, left + w, top + h)
                break
        if box is None:  # fall back to the largest centred square
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            box = (left, top, left + side, top + side)
        out.append((box, bool(rng.random() < 0.5)))
    return out


def _resample(preset: EvalPreset) -> Image.Resampling:
    return Image.Resampling[preset.interpolation.upper()]


def make_crops(img: Image.Image, preset: EvalPreset, mode: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The TTA crops of one decoded image.

    Args:
        img: upright RGB image (any size).
        preset: the model's evaluation preprocessing (resize_size, crop_size, interpolation).
        mode: one of :data:`TTA_MODES`.
        rng: the image's generator, required for ``random-ten-crop``.
    Returns:
        uint8 ``[n_crops(mode), crop_size, crop_size, 3]``.
    """
    size = preset.crop_size
    img = resize_shorter(img, max(preset.resize_size, size), preset.interpolation)
    if mode in ("none", "center"):
        return np.asarray(center_crop(img, size), np.uint8)[None]
    if mode == "ten-crop":
        five = np.stack([np.asarray(img.crop(b), np.uint8) for b in five_crop_boxes(*img.size, size)])
        return np.concatenate([five, np.flip(five, axis=2)])
    if mode == "random-ten-crop":
        if rng is None:
            raise ValueError("random-ten-crop needs the image's generator")
        crops = []
        for box, mirror in random_crop_params(*img.size, rng):
            crop = np.asarray(img.resize((size, size), _resample(preset), box=box), np.uint8)
            crops.append(np.flip(crop, axis=1) if mirror else crop)
        return np.stack(crops)
    raise ValueError(f"unknown TTA mode {mode!r}; use one of {TTA_MODES}")


def load_crops(source: str, image_uri: str, preset: EvalPreset, mode: str, seed: int,
               max_bytes: int) -> tuple[bytes | None, str | None]:
    """Reads, decodes and crops one image; returns (crop bytes, None) or (None, reason). Never raises."""
    try:
        img = open_image(read_image(source, max_bytes), preset.resize_size, preset.max_pixels)
        return make_crops(img, preset, mode, image_rng(seed, image_uri)).tobytes(), None
    except ImageError as e:
        return None, e.reason
    except Exception as e:  # a bug or an exotic failure must still not lose the row
        return None, f"internal error: {type(e).__name__}"


def crop_batch(table: pa.Table, preset: EvalPreset, mode: str, seed: int, max_bytes: int) -> pa.Table:
    """``map_batches`` function: adds ``_pixels`` (all crops of a row, concatenated) and ``error``.

    Args:
        table: rows with ``image_uri`` and the resolved ``_source``.
        preset: the model's evaluation preprocessing.
        mode: the TTA mode.
        seed: run seed; random crops are keyed by (seed, image_uri).
        max_bytes: larger files become ``file too large`` rows.
    Returns:
        The rows with ``_pixels`` (uint8 NHWC crops or null) and ``error`` (null or reason).
    """
    sources = table.column(pio.SOURCE_COLUMN).to_pylist()
    uris = table.column("image_uri").to_pylist()

    def load(pair):
        return load_crops(pair[0], pair[1], preset, mode, seed, max_bytes)

    pairs = list(zip(sources, uris))
    if len(pairs) > 1 and any(pio.scheme(s or "") != "file" for s in sources):
        with ThreadPoolExecutor(min(_READ_THREADS, len(pairs))) as pool:  # overlap object-store waits
            results = list(pool.map(load, pairs))
    else:
        results = [load(p) for p in pairs]
    return (table.append_column(PIXELS, pa.array([r[0] for r in results], pa.binary()))
            .append_column(ERROR, pa.array([r[1] for r in results], pa.string())))


def average_probabilities(net: Network, crops: np.ndarray, n: int) -> torch.Tensor:
    """Softmax averaged over each image's ``n`` crops, from ONE forward pass over all crops.

    Args:
        net: the model on its device.
        crops: uint8 ``[N * n, S, S, 3]``, the crops of image i at rows ``i*n .. i*n+n-1``.
        n: crops per image.
    Returns:
        float32 ``[N, C]`` on CPU.
    """
    probs = net.probabilities(crops)
    return probs.view(len(crops) // n, n, -1).mean(dim=1)


class CropPredictor:
    """``map_batches`` actor: crop batches in, ranked predictions and correct@k columns out.

    Args:
        model_uri: plantray model directory (loaded once per actor).
        model_label: the model's name in the report.
        crops: crops per image (1 or 10).
        ks: the Top-k reported; the ranking keeps max(ks) labels.
        use_gpu, precision, threads: as :class:`plantray.predict.Predictor`.
    """

    def __init__(self, model_uri: str, model_label: str, crops: int, ks: tuple = (1, 5), use_gpu: bool = False,
                 precision: str = "fp32", threads: int | None = None):
        self.artifact = load_artifact(model_uri)
        self.net = Network(self.artifact, pick_device(use_gpu), precision, threads)
        self.label, self.crops, self.ks = model_label, crops, tuple(ks)
        labels = self.artifact.labels
        self.names = np.array(labels.names, dtype=object)
        self.genus = dict(zip(labels.names, labels.genus))
        self.family = dict(zip(labels.names, labels.family))

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        size = self.net.preset.crop_size
        pixels = table.column(PIXELS).combine_chunks()
        images, rows = _stack_crops(pixels, size, self.crops)
        k = min(max(self.ks), len(self.names))
        if len(rows):
            probs = average_probabilities(self.net, images, self.crops).numpy()
            ranked = top_k_indices(probs, k)
            conf = np.take_along_axis(probs, ranked, axis=1)
        else:
            ranked, conf = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        out = table.drop_columns([PIXELS, ERROR, pio.SOURCE_COLUMN])
        for name, array in self._columns(table, ranked, conf, rows, n).items():
            out = out.append_column(name, array)
        return out.append_column(ERROR, table.column(ERROR))

    def _columns(self, table: pa.Table, ranked: np.ndarray, conf: np.ndarray, rows: np.ndarray,
                 n: int) -> dict[str, pa.Array]:
        names = [self.names[r].tolist() for r in ranked]
        true = table.column("scientificName").to_pylist()
        top1 = scatter([r[0] for r in names], rows, n)
        cols = {
            "model": pa.array([self.label] * n, pa.string()),
            "topk_scientificName": pa.array(scatter(names, rows, n), pa.list_(pa.string())),
            "topk_confidence": pa.array(scatter([c.tolist() for c in conf], rows, n), pa.list_(pa.float32())),
            "predicted_genus": pa.array([self.genus.get(p) if p else None for p in top1], pa.string()),
            "predicted_family": pa.array([self.family.get(p) if p else None for p in top1], pa.string()),
        }
        # The test set's own genus/family when it has them, else the model's for the true species.
        for col, lookup in (("genus", self.genus), ("family", self.family)):
            given = table.column(col).to_pylist()
            cols[f"true_{col}"] = pa.array([g or lookup.get(t) for g, t in zip(given, true)], pa.string())
        ranked_rows = scatter(names, rows, n)
        for k in self.ks:
            cols[f"correct@{k}"] = pa.array([None if r is None else t in r[:k] for r, t in zip(ranked_rows, true)],
                                            pa.bool_())
        cols["model_sha256"] = pa.array([self.artifact.sha256] * n, pa.string())
        return cols


def _stack_crops(pixels: pa.Array, size: int, crops: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows' crops as uint8 ``[V * crops, size, size, 3]``, plus the valid row indices."""
    valid = np.flatnonzero(pixels.is_valid().to_numpy(zero_copy_only=False))
    if len(valid) == 0:
        return np.zeros((0, size, size, 3), np.uint8), valid
    data = b"".join(pixels.take(pa.array(valid)).to_pylist())
    return np.frombuffer(data, np.uint8).reshape(len(valid) * crops, size, size, 3), valid
