"""``--embeddings``: each decoded image's penultimate-layer vector, from the same forward as its prediction,
in a separate Parquet dataset keyed like the predictions; read back with pyarrow and checked against an
independent torchvision forward."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from plantray.cli import main
from tests.helpers import SPECIES, jpeg_bytes, read_output, tiny_model, write

RESNET18_FEATURES = 512  # torchvision resnet18: fc.in_features


def test_classify_writes_embeddings_keyed_like_predictions(ray_session, tmp_path):
    model = str(tmp_path / "model")
    card = tiny_model(model)
    images = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(40 + 9 * i, 50, seed=50 + i)) for i in range(7)]
    bad = [write(f"{tmp_path}/imgs/empty.jpg", b""), f"{tmp_path}/imgs/missing.jpg"]
    manifest = str(tmp_path / "m.parquet")
    pq.write_table(pa.table({"image_uri": images + bad, "gbifID": [f"g{i}" for i in range(len(images) + 2)]}),
                   manifest)
    out, emb = str(tmp_path / "out"), str(tmp_path / "emb")
    assert main(["classify", "--model", model, "--input", manifest, "--output", out, "--embeddings", emb,
                 "--batch-size", "3", "--num-actors", "1", "--precision", "fp32"]) == 0

    preds = read_output(out)
    dataset = pads.dataset(emb, format="parquet")
    table = dataset.to_table()
    # one row per successfully decoded image, keys as in the predictions
    ok = [r for r in preds.to_pylist() if r["error"] is None]
    assert len(ok) == len(images) and table.num_rows == len(images)
    assert sorted(table.column("image_uri").to_pylist()) == sorted(images)
    keys = {(r["image_uri"], r["gbifID"], r["model_sha256"]) for r in ok}
    assert set(zip(*(table.column(c).to_pylist() for c in ("image_uri", "gbifID", "model_sha256")))) == keys
    assert set(table.column("model_sha256").to_pylist()) == {card["weights"]["sha256"]}
    # float16 vectors of the network's feature size
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), RESNET18_FEATURES)

    # independent: torchvision's resnet18 with the head removed, on each image preprocessed here with PIL as
    # the card says (shorter side to resize_size, rounded; bilinear; the centre crop_size square)
    net = torchvision.models.resnet18(num_classes=len(SPECIES))
    net.load_state_dict(torch.load(os.path.join(model, "weights.pt"), weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    got = dict(zip(table.column("image_uri").to_pylist(), table.column("embedding").to_pylist()))
    resize, crop = card["input"]["resize_size"], card["input"]["crop_size"]
    for p in images:
        img = Image.open(p).convert("RGB")
        scale = resize / min(img.size)
        w, h = round(img.width * scale), round(img.height * scale)
        left, top = (w - crop) // 2, (h - crop) // 2
        pixels = np.asarray(img.resize((w, h), Image.BILINEAR))[top:top + crop, left:left + crop]
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1) / 255.0
        x = TF.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        with torch.no_grad():
            expected = net(x[None])[0].numpy()
        # float16 keeps 11 significant bits: relative error <= 2**-11
        np.testing.assert_allclose(np.asarray(got[p], np.float32), expected, rtol=2**-10, atol=1e-4)

    # a second run into the same place is refused, and --overwrite replaces both datasets
    assert main(["classify", "--model", model, "--input", manifest, "--output", str(tmp_path / "o2"),
                 "--embeddings", emb]) == 2
    assert main(["classify", "--model", model, "--input", manifest, "--output", out, "--embeddings", out,
                 "--overwrite"]) == 2
    assert main(["classify", "--model", model, "--input", manifest, "--output", out, "--embeddings", emb,
                 "--overwrite", "--num-actors", "1"]) == 0
    assert pads.dataset(emb, format="parquet").count_rows() == len(images)


def test_nightly_writes_each_runs_vectors_beside_the_table(ray_session, tmp_path):
    import deltalake

    model = str(tmp_path / "model")
    tiny_model(model)
    images = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(30 + 5 * i, 40, seed=80 + i)) for i in range(5)]
    manifest = str(tmp_path / "m.parquet")
    pq.write_table(pa.table({"image_uri": images, "gbifID": [f"g{i}" for i in range(5)]}), manifest)
    table, emb = str(tmp_path / "table"), str(tmp_path / "emb")
    argv = ["nightly", "--model", model, "--input", manifest, "--table", table, "--embeddings", emb,
            "--commit-every", "2", "--num-actors", "1"]
    assert main([*argv, "--run-id", "night1"]) == 0
    committed = deltalake.DeltaTable(table).to_pyarrow_table()
    # one directory per run, one per chunk below it; one vector per committed image
    chunk_dirs = sorted(os.listdir(f"{emb}/night1"))
    assert chunk_dirs and all(d.startswith("chunk-") for d in chunk_dirs)
    vectors = pq.ParquetDataset(emb).read(columns=["image_uri", "gbifID"])
    assert sorted(zip(*(vectors.column(c).to_pylist() for c in ("image_uri", "gbifID")))) == \
        sorted(zip(*(committed.column(c).to_pylist() for c in ("image_uri", "gbifID"))))
    # a second night with nothing new adds no vectors, and the location is shared by the nights
    assert main([*argv, "--run-id", "night2"]) == 0
    assert pq.ParquetDataset(emb).read(columns=["image_uri"]).num_rows == len(images)
