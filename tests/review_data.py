"""Predictions for the review-site tests: real classify output of tiny images, and hand-written rows.

Expected values are read back with pyarrow, never through plantray's review code.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from PIL import Image

from tests.helpers import SPECIES, jpeg_bytes, tiny_model, write

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
PUBLISHER = ["Quercus robur L.", "Fagus sylvatica", None, "Rosa canina L.", "Plantago major"]


def rotated_jpeg(width: int, height: int, orientation: int = 6) -> bytes:
    """A JPEG stored ``width`` x ``height`` whose EXIF says to rotate it (6: 90 degrees clockwise)."""
    img = Image.fromarray(np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def classified(root: str) -> dict:
    """Runs classify (with ``--aggregate occurrence``) on 10 tiny images and a missing one.

    Returns:
        ``{"predictions", "occurrences", "model", "images"}``: paths; ``images[0]`` is stored landscape with
        EXIF orientation 6 (upright it is portrait).
    """
    from plantray.commands.classify import ClassifyConfig, classify

    model = os.path.join(root, "model")
    tiny_model(model)
    images, rows = [], []
    for i in range(10):
        data = rotated_jpeg(80, 40) if i == 0 else jpeg_bytes(40 + 6 * i, 60 - 2 * i, seed=i)
        images.append(write(os.path.join(root, "imgs", f"{i}.jpg"), data))
        rows.append({"image_uri": f"imgs/{i}.jpg", "gbifID": f"occ-{i // 2}", "scientificName": PUBLISHER[i % 5],
                     "license": "CC-BY-4.0", "rightsHolder": f'Doe, "Jane" {i}'})
    rows.append({"image_uri": "imgs/missing.jpg", "gbifID": "occ-4", "scientificName": None, "license": None,
                 "rightsHolder": None})
    pq.write_table(pa.Table.from_pylist(rows), os.path.join(root, "manifest.parquet"))
    out = os.path.join(root, "preds")
    classify(ClassifyConfig(model=model, input=os.path.join(root, "manifest.parquet"), output=out, top_k=4,
                            aggregate="occurrence", decode_batch_size=4))
    return {"predictions": out, "occurrences": out + "_occurrences", "model": model, "images": images}


def read_rows(uri: str) -> list[dict]:
    """A Parquet dataset's rows, read with pyarrow."""
    return pads.dataset(uri, format="parquet").to_table().to_pylist()


def read_pages(site: str) -> list[dict]:
    """The cards of a built site in page order, parsed from its data files (``PlantrayReview.page(n, [...]);``)."""
    data = os.path.join(site, "data")
    cards = []
    for name in sorted(f for f in os.listdir(data) if f.startswith("page-")):
        with open(os.path.join(data, name), encoding="ascii") as f:
            match = re.fullmatch(r"PlantrayReview\.page\((\d+),(.*)\);\n", f.read(), re.S)
        cards += json.loads(match.group(2))
    return cards


def prediction_row(i: int, **values) -> dict:
    """One classify-shaped prediction row (the columns review build reads), overridden by ``values``."""
    name = values.get("scientificName", SPECIES[i % len(SPECIES)])
    row = {"image_uri": f"imgs/{i}.jpg", "gbifID": f"g{i}", "input_scientificName": None, "license": None,
           "rightsHolder": None, "scientificName": name, "confidence": 0.5,
           "topk_scientificName": [name or SPECIES[0], SPECIES[(i + 1) % 4]], "topk_confidence": [0.5, 0.2],
           "taxonRank": "species" if name else None, "genus": None, "family": None,
           "publisher_agreement": "no publisher name", "prior": None,
           "identificationID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"test-{i}")),
           "identifiedBy": "plantray-resnet18 test (sha256:000000000000)", "dateIdentified": "2025-01-01T00:00:00Z",
           "identificationRemarks": "machine identification", "error": None}
    row.update(values)
    return row


SCHEMA = pa.schema([("image_uri", pa.string()), ("gbifID", pa.string()), ("input_scientificName", pa.string()),
                    ("license", pa.string()), ("rightsHolder", pa.string()), ("scientificName", pa.string()),
                    ("confidence", pa.float32()), ("topk_scientificName", pa.list_(pa.string())),
                    ("topk_confidence", pa.list_(pa.float32())), ("taxonRank", pa.string()), ("genus", pa.string()),
                    ("family", pa.string()), ("publisher_agreement", pa.string()), ("prior", pa.string()),
                    ("identificationID", pa.string()), ("identifiedBy", pa.string()), ("dateIdentified", pa.string()),
                    ("identificationRemarks", pa.string()), ("error", pa.string())])


def write_predictions(out: str, rows: list[dict]) -> str:
    """A predictions Parquet dataset (one file) of ``rows``; returns ``out``."""
    os.makedirs(out, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), os.path.join(out, "part-0.parquet"))
    return out
