"""Small builders shared by tests: tiny JPEGs, tiny models, reading Parquet outputs back."""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow.dataset as pads
from PIL import Image

from plantray.images.presets import EvalPreset
from plantray.model.artifact import make_card, save_artifact
from plantray.model.labels import Labels
from plantray.model.network import build_model

SPECIES = ["Quercus robur", "Fagus sylvatica", "Bellis perennis", "Rosa canina"]


def jpeg_bytes(width: int = 48, height: int = 40, seed: int = 0, mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """Random-noise image bytes of a given size, mode and format."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def write(path: str, data: bytes) -> str:
    """Writes bytes to a local path, creating directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def tiny_model(uri: str, arch: str = "resnet18", crop: int = 32, names=SPECIES, counts=None, seed: int = 0) -> dict:
    """A randomly initialised model artifact with a small input size; returns its card."""
    import torch

    torch.manual_seed(seed)
    labels = Labels(list(names), [n.split()[0] for n in names], ["Fam" + n[0] for n in names],
                    train_images=list(counts) if counts else [])
    model, provenance = build_model(arch, len(labels), "random")
    preset = EvalPreset(crop_size=crop, resize_size=round(crop * 256 / 224))
    return save_artifact(uri, model, labels, make_card(arch, labels, preset, provenance, version="test"))


def read_output(uri: str, filesystem=None):
    """Reads a Parquet dataset back with pyarrow (not with plantray)."""
    return pads.dataset(uri, format="parquet", filesystem=filesystem).to_table()


def add_broken_image(root) -> None:
    """Beside a synthetic dataset's ``train.parquet`` (``plantray synth``), writes ``train_plus.parquet``: the
    same manifest plus one row whose file, ``train/<first species>/broken.jpg``, is not a JPEG."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = pq.read_table(os.path.join(root, "train.parquet"))
    first = manifest.column("scientificName")[0].as_py()
    with open(os.path.join(root, "train", first, "broken.jpg"), "wb") as f:
        f.write(b"this is not a JPEG")
    extra = {c: [None] for c in manifest.column_names}
    extra.update(image_uri=[f"train/{first}/broken.jpg"], scientificName=[first], tag=["flower"])
    pq.write_table(pa.concat_tables([manifest, pa.table(extra, schema=manifest.schema)]),
                   os.path.join(root, "train_plus.parquet"))


def train_in_process(train_manifest: str, labels: Labels, preset: EvalPreset, steps: int):
    """A few seeded Adam steps of resnet18 on the manifest's centre crops, in this process: a stand-in for
    ``plantray train`` that gives the very same weights on every run (no augmentation, no streaming order)."""
    import torch

    from plantray.images.loader import preprocess
    from plantray.model.network import normalize

    table = pads.dataset(train_manifest, format="parquet").to_table(columns=["image_uri", "scientificName"])
    root = os.path.dirname(train_manifest)
    index = {n: i for i, n in enumerate(labels.names)}
    x = np.stack([preprocess(open(os.path.join(root, u), "rb").read(), preset)
                  for u in table.column("image_uri").to_pylist()])
    y = torch.tensor([index[n] for n in table.column("scientificName").to_pylist()])
    torch.manual_seed(0)
    model, _ = build_model("resnet18", len(labels), "random")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    inputs = normalize(torch.from_numpy(x), preset.mean, preset.std)
    model.train()
    for step in range(steps):
        batch = torch.randint(0, len(y), (32,), generator=torch.Generator().manual_seed(step))
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
