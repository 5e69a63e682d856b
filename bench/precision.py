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
from report import save_report  # bench/ is on sys.path when a script here runs

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def trained_model(work: str, args) -> tuple[str, str]:
    """Synthesises data and trains a model with plantray; returns (model dir, data dir)."""
    from plantray.cluster import ensure_ray
    from plantray.commands.synth import SynthConfig
    from plantray.commands.train import TrainConfig, train
    from plantray.synth.dataset import synthesize

    data, model = os.path.join(work, "data"), os.path.join(work, "model")
    synthesize(SynthConfig(out=data, species=args.species, images_per_species=args.train_per_species,
                           test_per_species=args.test_per_species))
    ensure_ray()
    train(TrainConfig(data=os.path.join(data, "train.parquet"), output=model, arch=args.arch, init="random",
                      epochs=args.epochs, num_workers=1, image_size=args.image_size, lr=3e-3))
    return model, data


def test_images(data: str, preset) -> np.ndarray:
    from plantray.images.loader import preprocess

    uris = pq.read_table(os.path.join(data, "test.parquet")).column("image_uri").to_pylist()
    return np.stack([preprocess(open(os.path.join(data, u), "rb").read(), preset) for u in uris])


def test_labels(data: str, names: list[str]) -> np.ndarray:
    """Label index of every test image, in manifest order."""
    index = {n: i for i, n in enumerate(names)}
    species = pq.read_table(os.path.join(data, "test.parquet")).column("scientificName").to_pylist()
    return np.array([index[s] for s in species])


def run(net, images: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """Probabilities of every image and the images/s of the forward passes (one warm-up batch first)."""
    net.probabilities(images[:batch])
    start = time.perf_counter()
    probs = np.concatenate([net.probabilities(images[i:i + batch]).numpy() for i in range(0, len(images), batch)])
    return probs, len(images) / (time.perf_counter() - start)


def wilson_lower(successes: int, n: int, z: float = 1.96) -> float:
    """Lower end of the Wilson 95% interval of a proportion: what ``n`` images can vouch for."""
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float((centre - margin) / (1 + z * z / n))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an existing plantray model (default: train a small one)")
    parser.add_argument("--data", help="its synth data directory (with test.parquet)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--species", type=int, default=8)
    parser.add_argument("--train-per-species", type=int, default=30)
    parser.add_argument("--test-per-species", type=int, default=12, help="agreement set size = species x this")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    from plantray.model.artifact import load_artifact
    from plantray.model.network import Network
    from plantray.model.precision import native_bf16_cpu

    model, data = (args.model, args.data) if args.model else trained_model(
        tempfile.mkdtemp(prefix="plantray-prec-"), args)
    artifact = load_artifact(model)
    images = test_images(data, artifact.preset)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    truth = test_labels(data, artifact.labels.names)
    probs, rates = {}, {}
    for precision in ("fp32", "bf16"):
        probs[precision], rates[precision] = run(Network(artifact, device, precision, os.cpu_count()), images,
                                                 args.batch_size)
    same = int((probs["fp32"].argmax(1) == probs["bf16"].argmax(1)).sum())
    speedup = rates["bf16"] / rates["fp32"]
    report = {"device": str(device), "cpu_native_bf16": native_bf16_cpu(), "arch": artifact.card["arch"],
              "image_size": artifact.preset.crop_size, "images": len(images),
              "fp32_images_per_s": round(rates["fp32"], 2), "bf16_images_per_s": round(rates["bf16"], 2),
              "bf16_speedup": round(speedup, 3),
              "fp32_top1": round(float((probs["fp32"].argmax(1) == truth).mean()), 4),
              "bf16_top1": round(float((probs["bf16"].argmax(1) == truth).mean()), 4),
              "top1_agreement": round(same / len(images), 4),
              "top1_agreement_95ci_low": round(wilson_lower(same, len(images)), 4),
              "max_abs_probability_diff": round(float(np.abs(probs["fp32"] - probs["bf16"]).max()), 4),
              "bf16_default_justified": bool(speedup > 1 and same / len(images) >= 0.995)}
    save_report(args.out, "precision", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
