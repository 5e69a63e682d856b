"""Training throughput: ``plantray train`` at 1 and 2 Ray Train workers against a plain torch loop.

Peer (same run, same machine): the same network's training step (forward, backward, Adam) on ready
tensors in one process with all CPU threads — the model-side ceiling a data pipeline can only approach.
plantray's figure is the last epoch's images/s (decoding and augmentation in Ray Data included).

    python bench/train_throughput.py --arch resnet18 --image-size 128 --epochs 3 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from report import save_report  # bench/ is on sys.path when a script here runs

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def ceiling(arch: str, size: int, batch: int, classes: int, steps: int) -> float:
    """Images/s of plain training steps on ready tensors (warm-up excluded)."""
    import torchvision

    torch.set_num_threads(os.cpu_count())
    model = torchvision.models.get_model(arch, num_classes=classes).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def plantray_train(data: str, out: str, arch: str, size: int, batch: int, epochs: int, spec: str) -> dict:
    """One ``plantray train`` run; ``spec`` is ``W`` workers or ``W@C`` with ``--cpus-per-worker C``."""
    from plantray.commands.train import TrainConfig, train

    workers, _, cpus = spec.partition("@")
    workers = int(workers)
    summary = train(TrainConfig(data=data, output=out, arch=arch, init="random", epochs=epochs,
                                num_workers=workers, image_size=size, batch_size=batch,
                                cpus_per_worker=float(cpus) if cpus else None))
    last = summary["final"]
    return {"workers": workers, "cpus_per_worker": float(cpus) if cpus else "auto",
            "images_per_s": round(last["images_per_second"], 2),
            "images_per_s_per_worker": round(last["images_per_second"] / workers, 2),
            "epoch_seconds": round(last["seconds"], 1), "images_per_epoch": last["images"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--species", type=int, default=8)
    parser.add_argument("--images-per-species", type=int, default=20)
    parser.add_argument("--workers", default="1,2",
                        help="runs: W workers, or W@C to pin --cpus-per-worker C (threads = C), e.g. 1@1,1,2")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    from plantray.cluster import ensure_ray
    from plantray.commands.synth import SynthConfig, synthesize

    work = tempfile.mkdtemp(prefix="plantray-trainbench-")
    data = os.path.join(work, "data")
    synthesize(SynthConfig(out=data, species=args.species, images_per_species=args.images_per_species,
                           test_per_species=1, unseen_per_species=0))
    peer = ceiling(args.arch, args.image_size, args.batch_size, args.species, steps=8)
    ensure_ray()
    runs = [plantray_train(os.path.join(data, "train.parquet"), os.path.join(work, f"m{i}"), args.arch,
                           args.image_size, args.batch_size, args.epochs, w)
            for i, w in enumerate(args.workers.split(","))]
    for r in runs:
        r["ratio_to_ceiling"] = round(r["images_per_s"] / peer, 3)
    auto = {r["workers"]: r["images_per_s"] for r in runs if r["cpus_per_worker"] == "auto"}
    report = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
              "cpu_count": os.cpu_count(), "ceiling_images_per_s": round(peer, 2), "runs": runs,
              "scaling_2_vs_1": round(auto[2] / auto[1], 3) if {1, 2} <= auto.keys() else None}
    save_report(args.out, "train", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
