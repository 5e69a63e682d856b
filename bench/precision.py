"""Precision: bf16 autocast against fp32 on this machine — speed and Top-1 agreement.

Agreement is measured on the synthetic test set with a briefly trained model (a random network's
near-uniform outputs would say little). plantray's ``--precision auto`` picks bf16 only where it is
faster and agrees on >= 99.5% of images; the report says whether that holds here.

    python bench/precision.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def trained_model(work: str, arch: str, size: int, epochs: int) -> tuple[str, str]:
    """Synthesises data and trains a small model with plantray; returns (model dir, data dir)."""
    from plantray.runtime import ensure_ray
    from plantray.synth import SynthConfig, synthesize
    from plantray.train import TrainConfig, train

    data, model = os.path.join(work, "data"), os.path.join(work, "model")
    synthesize(SynthConfig(out=data, species=8, images_per_species=30, test_per_species=12))
    ensure_ray()
    train(TrainConfig(data=os.path.join(data, "train.parquet"), output=model, arch=arch, init="random",
                      epochs=epochs, num_workers=1, image_size=size, lr=3e-3))
    return model, data


def test_images(data: str, preset) -> np.ndarray:
    from plantray.imaging import preprocess

    uris = pq.read_table(os.path.join(data, "test.parquet")).column("image_uri").to_pylist()
    return np.stack([preprocess(open(os.path.join(data, u), "rb").read(), preset) for u in uris])


def run(net, images: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Top-1 of every image and the images/s of the forward passes (one warm-up batch first)."""
    net.probabilities(images[:batch])
    start = time.perf_counter()
    top1 = np.concatenate([net.probabilities(images[i:i + batch]).argmax(1).numpy()
                           for i in range(0, len(images), batch)])
    return top1, len(images) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an existing plantray model (default: train a small one)")
    parser.add_argument("--data", help="its synth data directory (with test.parquet)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    from plantray.model import load_artifact
    from plantray.predict import Network

    model, data = (args.model, args.data) if args.model else trained_model(
        tempfile.mkdtemp(prefix="plantray-prec-"), args.arch, args.image_size, args.epochs)
    artifact = load_artifact(model)
    images = test_images(data, artifact.preset)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {}
    for precision in ("fp32", "bf16"):
        top1, rate = run(Network(artifact, device, precision, os.cpu_count()), images, args.batch_size)
        results[precision] = {"images_per_s": round(rate, 2), "top1": top1}
    agree = float((results["fp32"]["top1"] == results["bf16"]["top1"]).mean())
    speedup = results["bf16"]["images_per_s"] / results["fp32"]["images_per_s"]
    report = {"device": str(device), "arch": artifact.card["arch"], "images": len(images),
              "fp32_images_per_s": results["fp32"]["images_per_s"],
              "bf16_images_per_s": results["bf16"]["images_per_s"],
              "bf16_speedup": round(speedup, 3), "top1_agreement": round(agree, 4),
              "bf16_default_justified": bool(speedup > 1 and agree >= 0.995)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"precision-{time.strftime('%Y%m%d-%H%M%S')}.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
