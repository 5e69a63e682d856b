"""Scale of the data plane: does memory stay flat as the manifest grows from 10K to 200K rows?

A manifest of many rows points (with repeats) at a few thousand small JPEGs and is classified with
a tiny network, so the model is not the bottleneck and the data plane (manifest read, URI
resolution, reading, decoding, batching, Parquet writing) is what is measured. While each run goes,
a sampler records the peak RSS of the driver and of every Ray worker process.

    python bench/scale.py --rows 10000,200000 --images 2000 --out bench/results
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from report import save_report  # bench/ is on sys.path when a script here runs

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class PeakRSS:
    """Samples RSS of this process (driver) and of Ray worker processes every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.driver, self.workers = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = " ".join(p.info["cmdline"] or [])
                if cmd.startswith("ray::") and p.info["memory_info"]:
                    self.workers = max(self.workers, p.info["memory_info"].rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_images(root: str, n: int) -> list[str]:
    """``n`` small JPEGs (the data plane, not the decoder, is under test)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    names = []
    for i in range(n):
        name = f"img/{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(os.path.join(root, name), quality=80)
        names.append(name)
    return names


def make_manifest(root: str, names: list[str], rows: int) -> str:
    """A manifest of ``rows`` rows with relative URIs and a few passthrough id columns."""
    path = os.path.join(root, f"manifest-{rows}.parquet")
    uris = [names[i % len(names)] for i in range(rows)]
    table = pa.table({"image_uri": uris, "gbifID": [str(4_000_000_000 + i) for i in range(rows)],
                      "occurrenceID": [f"urn:occ:{i}" for i in range(rows)]})
    pq.write_table(table, path, row_group_size=20_000)
    return path


def run_one(model: str, manifest: str, out: str, rows_per_file: int) -> dict:
    from plantray.commands.classify import ClassifyConfig, classify

    with PeakRSS() as rss:
        start = time.perf_counter()
        summary = classify(ClassifyConfig(model=model, input=manifest, output=out, batch_size=256,
                                          decode_batch_size=256, rows_per_file=rows_per_file))
        seconds = time.perf_counter() - start
    files = pads.dataset(out, format="parquet").files
    sizes = [os.path.getsize(f) for f in files]
    return {"rows": summary["images"], "seconds": round(seconds, 1), "rows_per_s": round(summary["images"] / seconds),
            "driver_peak_rss_mb": round(rss.driver / 2**20), "worker_peak_rss_mb": round(rss.workers / 2**20),
            "files": len(files), "file_mb": [round(s / 2**20, 2) for s in sizes]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="10000,200000", help="manifest sizes, comma-separated")
    parser.add_argument("--images", type=int, default=2000, help="distinct JPEGs the rows point at")
    parser.add_argument("--rows-per-file", type=int, default=100_000)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()

    from plantray.cluster import ensure_ray
    from plantray.commands.model_create import ModelCreateConfig, create_model

    work = tempfile.mkdtemp(prefix="plantray-scale-")
    names = make_images(work, args.images)
    model = os.path.join(work, "model")
    labels = os.path.join(work, "labels.txt")
    with open(labels, "w") as f:
        f.write("\n".join(f"Genus{i} species{i}" for i in range(10)))
    create_model(ModelCreateConfig(out=model, labels=labels, arch="mobilenet_v3_small", image_size=32))
    ensure_ray()
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        manifest = make_manifest(work, names, rows)
        results.append(run_one(model, manifest, os.path.join(work, f"out-{rows}"), args.rows_per_file))
        print(json.dumps(results[-1]))
    first, last = results[0], results[-1]
    report = {"results": results,
              "driver_rss_growth": round(last["driver_peak_rss_mb"] / first["driver_peak_rss_mb"] - 1, 3),
              "worker_rss_growth": round(last["worker_peak_rss_mb"] / first["worker_peak_rss_mb"] - 1, 3),
              "cpu_count": os.cpu_count()}
    save_report(args.out, "scale", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
