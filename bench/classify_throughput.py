"""Classify throughput, side by side on the same JPEGs, in one run on one machine.

Peers (same network, same precision, same thread budget):
  (a) model-only ceiling: forward passes on ready tensors;
  (b) a plain torch DataLoader + PIL + torchvision transforms loop;
  (c) the Ray Data documentation pattern: read_images(size=...) -> map_batches actor;
  (d) plantray classify from a local manifest;
  (e) plantray classify from a local S3 server (moto), output to S3.

Steady state: each pipeline runs once untimed (warm-up), then on N and on 2N images; its rate is
N / (t(2N) - t(N)), which cancels start-up (Ray actors, DataLoader workers, model loading) the same
way for every peer.

    python bench/classify_throughput.py --images 400 --out bench/results
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from report import save_report  # bench/ is on sys.path when a script here runs

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def make_data(root: str, images: int, seed: int) -> tuple[str, list[str]]:
    """A synth dataset with ``2 * images`` training JPEGs at the paper's statistics; manifest + paths."""
    from plantray.commands.synth import SynthConfig, synthesize

    species = 8
    synthesize(SynthConfig(out=root, species=species, images_per_species=-(-2 * images // species),
                           test_per_species=0, unseen_per_species=0, seed=seed))
    table = pq.read_table(os.path.join(root, "train.parquet"), columns=["image_uri"])
    paths = [os.path.join(root, p) for p in table.column("image_uri").to_pylist()][: 2 * images]
    return root, paths


def make_model(root: str, arch: str) -> str:
    from plantray.commands.model_create import ModelCreateConfig, create_model

    labels = os.path.join(root, "labels.csv")
    out = os.path.join(root, "model")
    create_model(ModelCreateConfig(out=out, labels=labels, arch=arch, weights="random"))
    return out


def steady(run, paths: list[str], warmup: int = 64) -> dict:
    """Times ``run(paths[:n])`` and ``run(paths[:2n])``; the difference is the steady-state cost of n.

    An untimed warm-up run comes first: otherwise one-off costs of the first run only (Ray worker
    processes importing torch, page cache) would land in t(n) alone and inflate the rate.
    """
    n = len(paths) // 2
    run(paths[:min(warmup, n)])
    t1 = timed(run, paths[:n])
    t2 = timed(run, paths)
    print(f"  n={n}: {t1:.1f} s, 2n: {t2:.1f} s -> {n / max(t2 - t1, 1e-9):.2f} images/s", flush=True)
    return {"n": n, "t_n": round(t1, 2), "t_2n": round(t2, 2), "images_per_s": round(n / max(t2 - t1, 1e-9), 2),
            "end_to_end_images_per_s": round(2 * n / t2, 2)}


def autocast(precision: str):
    """The peers' precision: bf16 autocast on CPU, as plantray's ``--precision bf16``, or plain fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def timed(run, paths) -> float:
    start = time.perf_counter()
    run(paths)
    return time.perf_counter() - start


def ceiling(model_dir: str, batch: int, threads: int, precision: str) -> callable:
    """(a): forward of the same network on ready normalised tensors."""
    from plantray.model.artifact import load_artifact

    artifact = load_artifact(model_dir)
    net = artifact.build().to(memory_format=torch.channels_last)
    size = artifact.preset.crop_size

    def run(paths):
        torch.set_num_threads(threads)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(precision):
            for _ in range(0, len(paths), batch):
                net(x)

    return run


def decode_rate(model_dir: str, paths: list[str]) -> float:
    """Images/s of plantray's decode (read + Pillow draft decode + resize + crop) on one core."""
    from plantray.images.loader import preprocess
    from plantray.model.artifact import load_artifact

    preset = load_artifact(model_dir).preset
    start = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            preprocess(f.read(), preset)
    return len(paths) / (time.perf_counter() - start)


def overlap_estimate(model_rate: float, decode_rate: float, threads: int, cpus: int, gpu: bool) -> float:
    """What a pipeline overlapping decode and model perfectly could reach.

    CPU: the model spends ``threads / model_rate`` core-seconds per image and decoding ``1 / decode_rate``,
    all on ``cpus`` cores. GPU: decoding on all cores and the model on the GPU, the slower one bounds.
    The model rarely keeps all its threads busy, so a pipeline can edge past this on CPU.
    """
    if gpu:
        return min(model_rate, cpus * decode_rate)
    return cpus / (threads / model_rate + 1 / decode_rate)


def dataloader(model_dir: str, batch: int, threads: int, workers: int, precision: str) -> callable:
    """(b): torch DataLoader + PIL + torchvision transforms, the textbook loop."""
    from PIL import Image
    from torchvision import transforms

    from plantray.model.artifact import load_artifact

    artifact = load_artifact(model_dir)
    net = artifact.build().to(memory_format=torch.channels_last)
    p = artifact.preset
    tf = transforms.Compose([transforms.Resize(p.resize_size), transforms.CenterCrop(p.crop_size),
                             transforms.ToTensor(), transforms.Normalize(p.mean, p.std)])

    class Files(torch.utils.data.Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return tf(Image.open(self.paths[i]).convert("RGB"))

    def run(paths):
        torch.set_num_threads(threads)
        loader = torch.utils.data.DataLoader(Files(paths), batch_size=batch, num_workers=workers)
        with torch.inference_mode(), autocast(precision):
            for x in loader:
                net(x.contiguous(memory_format=torch.channels_last)).softmax(1)

    return run


def ray_docs(model_dir: str, batch: int, out_root: str, precision: str) -> callable:
    """(c): Ray Data's documented batch-inference pattern."""
    import ray

    from plantray.model.artifact import load_artifact

    class Classifier:
        def __init__(self):
            artifact = load_artifact(model_dir)
            torch.set_num_threads(os.cpu_count())
            self.net, self.p = artifact.build(), artifact.preset

        def __call__(self, batch):
            x = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float().div(255)
            m, s = torch.tensor(self.p.mean).view(1, 3, 1, 1), torch.tensor(self.p.std).view(1, 3, 1, 1)
            with torch.inference_mode(), autocast(precision):
                probs = self.net((x - m) / s).softmax(1)
            return {"path": batch["path"], "top1": probs.argmax(1).numpy()}

    def run(paths):
        size = load_artifact(model_dir).preset.crop_size
        out = tempfile.mkdtemp(dir=out_root)
        ds = ray.data.read_images(paths, size=(size, size), mode="RGB", include_paths=True)
        ds = ds.map_batches(Classifier, compute=ray.data.ActorPoolStrategy(size=1), batch_size=batch, num_cpus=1)
        ds.write_parquet(out)

    return run


def plantray_run(model_dir: str, batch: int, out_root: str, store, precision: str) -> callable:
    """(d)/(e): plantray classify over a manifest written to ``store`` (local dir or s3 prefix)."""
    from plantray.commands.classify import ClassifyConfig, classify

    def run(paths):
        manifest = store(paths)
        out = store.output()
        classify(ClassifyConfig(model=model_dir, input=manifest, output=out, batch_size=batch, overwrite=True,
                                precision=precision))

    return run


class LocalStore:
    def __init__(self, root):
        self.root, self.i = root, 0

    def __call__(self, paths):
        self.i += 1
        path = os.path.join(self.root, f"manifest-{self.i}.parquet")
        pq.write_table(pa.table({"image_uri": paths}), path)
        return path

    def output(self):
        return tempfile.mkdtemp(dir=self.root) + "/out"


class S3Store:
    """Uploads the images once to a moto S3 server on 127.0.0.1 and writes manifests there."""

    def __init__(self, paths):
        import socket

        import s3fs
        from moto.server import ThreadedMotoServer

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        os.environ.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        self.fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"})
        self.fs.mkdir("bench")
        self.keys = {}
        for p in paths:
            key = f"bench/images/{len(self.keys):06d}.jpg"
            self.fs.put(p, key)
            self.keys[p] = f"s3://{key}"
        self.i = 0

    def __call__(self, paths):
        self.i += 1
        buf = pa.BufferOutputStream()
        pq.write_table(pa.table({"image_uri": [self.keys[p] for p in paths]}), buf)
        self.fs.pipe(f"bench/manifest-{self.i}.parquet", buf.getvalue().to_pybytes())
        return f"s3://bench/manifest-{self.i}.parquet"

    def output(self):
        return f"s3://bench/out-{self.i}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="N: each pipeline runs N and 2N images")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="every peer's precision")
    parser.add_argument("--peers", default="a,b,c,d,e", help="which of a,b,c,d,e to run")
    parser.add_argument("--out", default="bench/results", help="directory for JSON and Markdown results")
    parser.add_argument("--work", default=None, help="scratch directory (default: a temp dir)")
    args = parser.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="plantray-bench-")
    os.makedirs(args.out, exist_ok=True)
    _, paths = make_data(os.path.join(work, "data"), args.images, seed=0)
    model = make_model(os.path.join(work, "data"), args.arch)
    peers = args.peers.split(",")
    results = {}
    # Peers outside Ray first, so no Ray process shares the CPUs with them.
    if "a" in peers:
        results["a_model_only"] = steady(ceiling(model, args.batch_size, args.threads, args.precision), paths)
    if "b" in peers:
        results["b_dataloader_pil"] = steady(dataloader(model, args.batch_size, args.threads, 2, args.precision),
                                             paths)
    decode = decode_rate(model, paths[:min(len(paths), 200)])
    # The S3 server and its AWS_* variables must exist before Ray starts, so its workers inherit them.
    s3_store = S3Store(paths) if "e" in peers else None
    if {"c", "d", "e"} & set(peers):
        from plantray.cluster import ensure_ray

        ensure_ray()
    if "c" in peers:
        results["c_ray_data_docs"] = steady(ray_docs(model, args.batch_size, work, args.precision), paths)
    if "d" in peers:
        results["d_plantray_local"] = steady(plantray_run(model, args.batch_size, work, LocalStore(work),
                                                                args.precision), paths)
    if "e" in peers:
        results["e_plantray_s3"] = steady(plantray_run(model, args.batch_size, work, s3_store, args.precision),
                                                          paths)
    report = {"machine": machine(), "arch": args.arch, "precision": args.precision, "batch_size": args.batch_size,
              "threads": args.threads, "images": args.images, "results": results, "ratios": ratios(results),
              "decode_images_per_s_one_core": round(decode, 2)}
    if "a_model_only" in results:
        bound = overlap_estimate(results["a_model_only"]["images_per_s"], decode, args.threads, os.cpu_count(),
                                 torch.cuda.is_available())
        report["overlap_estimate_images_per_s"] = round(bound, 2)
        report["ratios"]["vs_overlap_estimate"] = {k: round(v["images_per_s"] / bound, 3) for k, v in results.items()}
    md = markdown(report)
    save_report(args.out, "classify", report, md)
    print(md)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def ratios(results: dict) -> dict:
    rate = {k: v["images_per_s"] for k, v in results.items()}
    out = {}
    for base in ("a_model_only", "b_dataloader_pil"):
        if base in rate:
            out[f"vs_{base}"] = {k: round(v / rate[base], 3) for k, v in rate.items()}
    return out


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        import ray

        info["ray"] = ray.__version__
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown(report: dict) -> str:
    res, rat = report["results"], report["ratios"]
    lines = [f"Classify throughput, {report['arch']} {report.get('precision', 'fp32')}, "
             f"batch {report['batch_size']}, N={report['images']} "
             f"(steady state from N and 2N), {report['machine'].get('cpu', '?')} x{report['machine']['cpu_count']}",
             "", "| peer | images/s | ×(a) model-only | ×(b) DataLoader | × overlap estimate |",
             "|---|---:|---:|---:|---:|"]
    for k, v in res.items():
        ra, rb, ro = (rat.get(f"vs_{base}", {}).get(k, "")
                      for base in ("a_model_only", "b_dataloader_pil", "overlap_estimate"))
        lines.append(f"| {k} | {v['images_per_s']} | {ra} | {rb} | {ro} |")
    if "overlap_estimate_images_per_s" in report:
        lines += ["", f"Decode alone: {report['decode_images_per_s_one_core']} images/s on one core; perfect overlap "
                      f"of decode and model would give ~{report['overlap_estimate_images_per_s']} images/s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
