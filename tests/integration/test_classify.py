"""``plantray classify`` on real Ray, real files and a real S3 server: rows, errors, refusals, predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

from plantray.cli import main
from plantray.commands.classify import ClassifyConfig, classify
from plantray.images.presets import IMAGENET_MEAN, IMAGENET_STD
from plantray.model.artifact import load_artifact
from plantray.model.network import Network, normalize
from plantray.model.precision import resolve_precision
from tests.helpers import SPECIES, jpeg_bytes, read_output, tiny_model, write


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "m")
    tiny_model(path)
    return path


def _bad_inputs(root: str) -> dict[str, str | None]:
    """Writes good and bad files; returns image_uri -> expected error (None = classified)."""
    expected = {}
    for i in range(6):
        expected[write(f"{root}/good/{i}.jpg", jpeg_bytes(40 + 7 * i, 50, seed=i))] = None
    expected[write(f"{root}/bad/empty.jpg", b"")] = "empty file"
    expected[write(f"{root}/bad/text.jpg", b"<html>not an image</html>")] = "not an image"
    expected[write(f"{root}/bad/truncated.jpg", jpeg_bytes(64, 64)[:400])] = "truncated image"
    bomb = Image.new("1", (12_000, 12_000))
    bomb.save(f"{root}/bad/bomb.png")
    expected[f"{root}/bad/bomb.png"] = "image too large"
    expected[write(f"{root}/bad/huge.jpg", jpeg_bytes(700, 700, seed=9, fmt="PNG"))] = "file too large"
    expected[f"{root}/missing/nothing.jpg"] = "not found"
    expected["ftp://example.org/x.jpg"] = "unsupported scheme ftp"
    return expected


def test_every_row_once_with_error_reasons(ray_session, tmp_path, model_dir):
    expected = _bad_inputs(str(tmp_path))
    ids = [f"occ-{i}" for i in range(len(expected))]
    manifest = pa.table({"image_uri": list(expected), "gbifID": ids, "note": [7] * len(ids)})
    pq.write_table(manifest, tmp_path / "m.parquet")
    out = str(tmp_path / "out")
    summary = classify(ClassifyConfig(model=model_dir, input=str(tmp_path / "m.parquet"), output=out,
                                      max_bytes=200_000, top_k=3, decode_batch_size=4))
    table = read_output(out)
    assert table.num_rows == len(expected)
    rows = {r["image_uri"]: r for r in table.to_pylist()}
    assert set(rows) == set(expected)
    for uri, reason in expected.items():
        row = rows[uri]
        assert row["error"] == reason, uri
        if reason is None:
            assert row["scientificName"] in SPECIES and 0 < row["confidence"] <= 1
            assert len(row["topk_scientificName"]) == 3 and row["topk_confidence"] == sorted(
                row["topk_confidence"], reverse=True)
            assert row["genus"] == row["scientificName"].split()[0]
            assert row["identificationVerificationStatus"] == "unverified"
        else:
            assert row["scientificName"] is None and row["confidence"] is None
    # passthrough columns survive unchanged, with their types
    assert sorted(table.column("gbifID").to_pylist()) == sorted(ids)
    assert table.schema.field("note").type == pa.int64()
    assert "_source" not in table.column_names and "_pixels" not in table.column_names
    assert summary["images"] == len(expected) and summary["failed"] == sum(v is not None for v in expected.values())
    metadata = pq.read_schema(pq.ParquetDataset(out).files[0]).metadata
    assert json.loads(metadata[b"plantray.model_card"])["arch"] == "resnet18"
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert metadata[b"plantray.precision"] == (b"bf16" if native_bf16 else b"fp32")  # what auto chose here


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predictions_match_independent_forward(ray_session, tmp_path, model_dir, precision):
    paths = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(60 + 13 * i, 45, seed=10 + i)) for i in range(5)]
    out = str(tmp_path / "out")
    summary = classify(ClassifyConfig(model=model_dir, input=str(tmp_path / "imgs"), output=out, top_k=4,
                                      precision=precision))
    assert summary["precision"] == precision
    rows = {r["image_uri"]: r for r in read_output(out).to_pylist()}
    # independent: torchvision model + torchvision transforms straight from PIL
    net = torchvision.models.resnet18(num_classes=len(SPECIES))
    net.load_state_dict(torch.load(os.path.join(model_dir, "weights.pt"), weights_only=True))
    net.eval()
    for p in paths:
        img = TF.center_crop(TF.resize(Image.open(p).convert("RGB"), 36), 32)
        x = TF.normalize(TF.to_tensor(img), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        with torch.no_grad():
            probs = torch.softmax(net(x[None]), 1)[0].numpy()
        got = dict(zip(rows[p]["topk_scientificName"], rows[p]["topk_confidence"]))
        np.testing.assert_allclose([got[n] for n in SPECIES], probs, atol=0.03)
    assert pq.read_schema(pq.ParquetDataset(out).files[0]).metadata[b"plantray.precision"] == precision.encode()


def test_s3_in_and_out_with_relative_manifest(ray_session, s3, tmp_path, model_dir):
    names = [f"a/{i}.jpg" for i in range(4)] + ["a/missing.jpg"]
    for i, name in enumerate(names[:4]):
        s3.pipe(f"plantray-test/ds1/{name}", jpeg_bytes(50, 40, seed=i))
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_uri": names, "occurrenceID": [f"o{i}" for i in range(5)]}), buf)
    s3.pipe("plantray-test/ds1/manifest.parquet", buf.getvalue().to_pybytes())
    out = "s3://plantray-test/ds1-out"
    classify(ClassifyConfig(model=model_dir, input="s3://plantray-test/ds1/manifest.parquet", output=out))
    files = [f for f in s3.find("plantray-test/ds1-out") if f.endswith(".parquet")]
    table = pa.concat_tables([pq.read_table(s3.open(f, "rb")) for f in files])
    assert sorted(table.column("image_uri").to_pylist()) == sorted(names)
    errors = dict(zip(table.column("image_uri").to_pylist(), table.column("error").to_pylist()))
    assert errors["a/missing.jpg"] == "not found" and all(errors[n] is None for n in names[:4])


def test_model_from_s3_and_output_refusal(ray_session, s3, tmp_path, model_dir):
    for f in os.listdir(model_dir):
        s3.put(os.path.join(model_dir, f), f"plantray-test/models/m1/{f}")
    write(f"{tmp_path}/imgs/x.jpg", jpeg_bytes())
    out = str(tmp_path / "out")
    assert main(["classify", "--model", "s3://plantray-test/models/m1", "--input", f"{tmp_path}/imgs",
                 "--output", out]) == 0
    # OUTPUT now holds data: refused without --overwrite, replaced with it
    assert main(["classify", "--model", model_dir, "--input", f"{tmp_path}/imgs", "--output", out]) == 2
    assert main(["classify", "--model", model_dir, "--input", f"{tmp_path}/imgs", "--output", out,
                 "--overwrite"]) == 0
    assert read_output(out).num_rows == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("case,needle", [
    ("model", "is not a plantray model"),
    ("labels", "labels"),
    ("input", "does not exist"),
    ("manifest", "no 'image_uri' column"),
])
def test_bad_configuration_refused_before_work(tmp_path, model_dir, case, needle):
    """Run as a user would (a separate process): exit status 2 and a message naming the problem."""
    write(f"{tmp_path}/imgs/x.jpg", jpeg_bytes())
    model, inp = model_dir, f"{tmp_path}/imgs"
    if case == "model":
        model = str(tmp_path / "nope")
    elif case == "labels":
        model = str(tmp_path / "m2")
        tiny_model(model)
        write(f"{model}/labels.csv", b"\xff\xfe\x00bad")
    elif case == "input":
        inp = str(tmp_path / "absent")
    elif case == "manifest":
        pq.write_table(pa.table({"path": ["x.jpg"]}), tmp_path / "m.parquet")
        inp = str(tmp_path / "m.parquet")
    proc = subprocess.run([sys.executable, "-m", "plantray", "classify", "--model", model, "--input", inp,
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, "fp32"), (True, False, "bf16"),
                                                        (False, True, "bf16")])
def test_auto_precision_follows_cpu_bf16_support(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_bf16_network_keeps_an_fp32_head(model_dir):
    # Independent reference: torchvision's resnet18 with the same weights, whole forward in fp32.
    ref = torchvision.models.resnet18(num_classes=len(SPECIES))
    ref.load_state_dict(torch.load(os.path.join(model_dir, "weights.pt"), weights_only=True))
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    net = Network(load_artifact(model_dir), torch.device("cpu"), "bf16")
    x = normalize(torch.from_numpy(images), IMAGENET_MEAN, IMAGENET_STD)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert net.model(x).dtype == torch.float32  # logits not rounded to bf16's 8 significant bits
        assert ref.eval()(x).dtype == torch.bfloat16  # what plain autocast would have given
    with torch.inference_mode():
        expected = torch.softmax(ref(x), 1)
    np.testing.assert_allclose(net.probabilities(images), expected, atol=0.02)


@pytest.mark.slow
def test_full_resnet50_at_224(ray_session, tmp_path):
    model = str(tmp_path / "r50")
    tiny_model(model, arch="resnet50", crop=224)
    paths = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(500, 400, seed=i)) for i in range(3)]
    out = str(tmp_path / "out")
    summary = classify(ClassifyConfig(model=model, input=str(tmp_path / "imgs"), output=out, batch_size=3))
    table = read_output(out)
    assert summary["classified"] == 3 and sorted(table.column("image_uri").to_pylist()) == sorted(paths)
    assert all(abs(sum(c) - 1) < 1e-3 for c in table.column("topk_confidence").to_pylist())  # 4 labels, top-5


def test_rollup_and_occurrence_aggregate(ray_session, tmp_path, model_dir):
    """A threshold no species of a random 4-class model can clear rolls every image up to its genus or
    family; --aggregate occurrence writes one row per gbifID combining its images."""
    paths = [write(f"{tmp_path}/imgs/{i}.jpg", jpeg_bytes(50, 50, seed=30 + i)) for i in range(5)]
    gbif = ["g1", "g1", "g2", "g3", "g3"]
    uris = paths[:4] + [str(tmp_path / "gone.jpg")]  # g3's second image is missing
    pq.write_table(pa.table({"image_uri": uris, "gbifID": gbif}), tmp_path / "m.parquet")
    out = str(tmp_path / "out")
    classify(ClassifyConfig(model=model_dir, input=str(tmp_path / "m.parquet"), output=out,
                            rollup_threshold=0.95, aggregate="occurrence", top_k=4))
    rows = read_output(out).to_pylist()
    genera, families = {n.split()[0] for n in SPECIES}, {"Fam" + n[0] for n in SPECIES}
    for r in rows:
        if r["error"] is None:
            assert r["taxonRank"] in ("genus", "family") and r["scientificName"] in genera | families
            assert "confidence" in r["identificationRemarks"]
    occ = {r["gbifID"]: r for r in read_output(out + "_occurrences").to_pylist()}
    assert set(occ) == {"g1", "g2", "g3"}
    assert (occ["g1"]["images_used"], occ["g3"]["images_used"], occ["g3"]["images_failed"]) == (2, 1, 1)
    # g1's combined probabilities are the mean of its two images' (all 4 classes are in each top-4)
    per_image = [dict(zip(r["topk_scientificName"], r["topk_confidence"])) for r in rows if r["gbifID"] == "g1"]
    mean = {n: (per_image[0][n] + per_image[1][n]) / 2 for n in SPECIES}
    got = dict(zip(occ["g1"]["topk_scientificName"], occ["g1"]["topk_confidence"]))
    for n in SPECIES:
        assert abs(got[n] - mean[n]) < 1e-5


def test_http_images_follow_max_bytes_and_the_local_reasons(ray_session, tmp_path, model_dir):
    # The same bad files served over HTTP by a real server on 127.0.0.1 must give the same reasons as
    # read locally, --max-bytes included (it once capped only local and object-store reads).
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    expected = {k: v for k, v in _bad_inputs(str(tmp_path / "site")).items() if "://" not in k and os.path.exists(k)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path / "site")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = {base + k[len(str(tmp_path / "site")):]: v for k, v in expected.items()}
        pq.write_table(pa.table({"image_uri": list(urls)}), tmp_path / "m.parquet")
        out = str(tmp_path / "out")
        classify(ClassifyConfig(model=model_dir, input=str(tmp_path / "m.parquet"), output=out, max_bytes=200_000))
    finally:
        server.shutdown()
        server.server_close()
    got = dict(zip(*read_output(out).select(["image_uri", "error"]).to_pydict().values()))
    assert got == urls
