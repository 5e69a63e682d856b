"""GPU throughput of plantray on one machine, in one run of about five minutes (issue 7, "Performance").

How the results answer the issue's targets (OUT/gpu_results.md lists them with met / not met):
  * classify keeps the GPU fed: end to end >= 5,000 images/s and >= 80% of the model-only ceiling
    -> stage d (plantray's CPU decode feeding its Network, and a GPU nvJPEG decode path, same network)
    and stage e (``plantray classify`` itself on Ray), each as images/s and as a ratio to stage c;
  * bf16 is the default on GPU only where its Top-1 agrees with fp32 on >= 99.5% of images -> stage g;
  * training: ``plantray train`` images/s next to the model-side ceiling of a training step -> stage f.

Stages: a env, b synthetic JPEG set at the paper's statistics (200K-600K pixels), c model-only ceiling
(bf16 / fp32 / torch.compile) on ready GPU tensors, d end to end from JPEG files, e ``plantray classify``,
f training ceiling and ``plantray train``, g bf16-vs-fp32 agreement. Every measurement warms up first,
synchronises CUDA, and stops after ``--cap`` seconds; a stage that fails records its error and the others
still run; stages that would overrun ``--budget`` are skipped and say so. Results are rewritten after every
stage: OUT/gpu_results.json and OUT/gpu_results.md.

    bash bench/gpu.sh                                   # on the GPU machine (installs .whl/, then this)
    python bench/gpu_bench.py --quick --out /tmp/gq     # CPU dry run with tiny sizes: catches errors early
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # plantray without install
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TARGET_IMAGES_PER_S, TARGET_RATIO, TARGET_AGREEMENT = 5000.0, 0.80, 0.995


@dataclass
class Sizes:
    """How big each measurement is; ``quick`` shrinks everything for a CPU dry run."""

    images: int = 2048  # JPEGs in the synthetic set (each pipeline reads all of them)
    batch: int = 256
    crop: int = 224
    arch: str = "resnet50"
    classes: int = 1000  # ImageNet-sized head for the model-only numbers
    min_pixels: int = 200_000
    max_pixels: int = 600_000
    cap: float = 15.0  # seconds one measurement may run
    compile_timeout: float = 150.0
    train_epochs: int = 2
    procs: int = max(1, (os.cpu_count() or 2) - 1)  # decode processes: one core left for the GPU feeder

    @classmethod
    def quick(cls) -> Sizes:
        return cls(images=48, batch=8, crop=64, arch="resnet18", classes=10, min_pixels=3000, max_pixels=8000,
                   cap=2.0, compile_timeout=120.0, train_epochs=1, procs=2)


class Results:
    """Stage results, written to OUT as JSON and Markdown after every stage."""

    def __init__(self, out: str, sizes: Sizes, budget: float):
        self.out, self.start, self.budget = out, time.perf_counter(), budget
        self.data: dict = {"sizes": asdict(sizes), "budget_s": budget, "stages": {}}
        os.makedirs(out, exist_ok=True)

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def run(self, name: str, fn, *args, needs: tuple = (), min_left: float = 5.0):
        """Runs one stage unless a prerequisite is missing or the budget is spent; never raises."""
        missing = [why for ok, why in needs if not ok]
        if missing or self.left() < min_left:
            reason = missing[0] if missing else f"time budget ({self.left():.0f} s left, needs {min_left:.0f})"
            self.data["stages"][name] = {"status": f"skipped: {reason}"}
            print(f"[{name}] skipped: {reason}", flush=True)
            self.save()
            return None
        print(f"[{name}] running ({self.left():.0f} s of budget left)", flush=True)
        t0 = time.perf_counter()
        try:
            value = fn(*args)
            entry = {"status": "ok", **{k: v for k, v in (value or {}).items() if not k.startswith("_")}}
        except Exception as e:
            value, entry = None, {"status": f"error: {type(e).__name__}: {e}"[:500],
                                  "traceback": traceback.format_exc()[-3000:]}
        entry["stage_seconds"] = round(time.perf_counter() - t0, 1)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the stage's models and tensors are gone: hand their memory back
        self.data["stages"][name] = entry
        print(f"[{name}] {json.dumps(_brief(entry))}", flush=True)
        self.save()
        return value

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 1)
        self.data["targets"] = targets(self.data["stages"])
        with open(os.path.join(self.out, "gpu_results.json"), "w") as f:
            json.dump(self.data, f, indent=2, default=str)
        with open(os.path.join(self.out, "gpu_results.md"), "w") as f:
            f.write(markdown(self.data))


def _brief(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "traceback" and not isinstance(v, (list, dict))}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, images_per_step: int, device: torch.device, cap: float, warmup: int = 3,
            min_steps: int = 3) -> dict:
    """images/s of ``step()`` after ``warmup`` calls; stops after ``cap`` seconds (at least ``min_steps``)."""
    for _ in range(warmup):
        step()
    sync(device)
    steps, t0 = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - t0 < cap:
        step()
        sync(device)  # per step: the loop's clock then sees finished work, not queued kernels
        steps += 1
    seconds = time.perf_counter() - t0
    return {"images_per_s": round(steps * images_per_step / seconds, 1), "steps": steps,
            "seconds": round(seconds, 2)}


# --- a. environment -------------------------------------------------------------------------------------

def stage_env(device: torch.device) -> dict:
    import torchvision

    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cpu_count": os.cpu_count(), "device": str(device), "cuda": torch.version.cuda}
    try:
        import ray

        info["ray"] = ray.__version__
    except Exception as e:
        info["ray"] = f"import failed: {type(e).__name__}: {e}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        # fp32 numbers below use torch's defaults: TF32 in cuDNN convolutions (allow_tf32) is on by default.
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 1024**3, 1),
                    cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return info


# --- b. synthetic JPEG set ------------------------------------------------------------------------------

def _synth_part(args: tuple) -> str:
    out, per_species, seed, min_px, max_px = args
    from plantray.commands.synth import SynthConfig
    from plantray.synth.dataset import synthesize

    synthesize(SynthConfig(out=out, species=8, images_per_species=per_species, test_per_species=0,
                           unseen_per_species=0, seed=seed, min_pixels=min_px, max_pixels=max_px))
    return out


def stage_synth(work: str, sizes: Sizes, pool) -> dict:
    """``sizes.images`` JPEGs from one synth run per process (different seeds), one combined manifest."""
    parts = max(1, min(sizes.procs, sizes.images // 16))
    per_species = -(-sizes.images // (8 * parts))
    jobs = [(os.path.join(work, f"synth-{i:02d}"), per_species, i, sizes.min_pixels, sizes.max_pixels)
            for i in range(parts)]
    tables = []
    for out in pool.imap(_synth_part, jobs):
        t = pq.read_table(os.path.join(out, "train.parquet"), columns=["image_uri", "scientificName", "tag"])
        uris = [os.path.join(out, u) for u in t.column("image_uri").to_pylist()]
        tables.append(t.set_column(0, "image_uri", pa.array(uris, pa.string())))
    table = pa.concat_tables(tables).slice(0, sizes.images)
    manifest = os.path.join(work, "all.parquet")
    pq.write_table(table, manifest)
    paths = table.column("image_uri").to_pylist()
    nbytes = sum(os.path.getsize(p) for p in paths)
    return {"manifest": manifest, "_paths": paths, "images": len(paths), "species": len(set(
        table.column("scientificName").to_pylist())), "mean_kib": round(nbytes / len(paths) / 1024, 1)}


def make_model(work: str, sizes: Sizes) -> str:
    """A random-init plantray model directory with a ``sizes.classes`` head (names are placeholders)."""
    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import Labels
    from plantray.model.network import build_model

    labels = Labels([f"Species{i:04d} bench" for i in range(sizes.classes)])
    model, provenance = build_model(sizes.arch, sizes.classes, "random")
    preset = EvalPreset(crop_size=sizes.crop, resize_size=round(sizes.crop * 256 / 224))
    out = os.path.join(work, "model")
    save_artifact(out, model, labels, make_card(sizes.arch, labels, preset, provenance, name="bench"))
    return out


# --- c. model-only ceiling ------------------------------------------------------------------------------

def stage_ceiling(model_dir: str, sizes: Sizes, device: torch.device) -> dict:
    """Forward of plantray's Network module on ready normalised channels_last tensors, bf16 and fp32."""
    from plantray.model.artifact import load_artifact
    from plantray.model.network import Network

    net = Network(load_artifact(model_dir), device, "bf16").model
    x = torch.randn(sizes.batch, 3, sizes.crop, sizes.crop, device=device).contiguous(memory_format=torch.channels_last)
    out = {}
    for precision in ("bf16", "fp32"):
        def step(p=precision):
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=p == "bf16"):
                net(x)
        out[precision] = measure(step, sizes.batch, device, sizes.cap)
    out["images_per_s"] = out["bf16"]["images_per_s"]
    return out


def stage_compile(sizes: Sizes, device: torch.device, work: str, left: float) -> dict:
    """torch.compile of the same network in a subprocess, so a slow or failing compile cannot hurt the rest."""
    result = os.path.join(work, "compile.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--compile-child", result, "--arch", sizes.arch,
           "--classes", str(sizes.classes), "--batch", str(sizes.batch), "--crop", str(sizes.crop),
           "--cap", str(sizes.cap)]
    if device.type != "cuda":
        cmd.append("--eager")  # CPU dry run: the subprocess plumbing only, no inductor build
    timeout = max(10.0, min(sizes.compile_timeout, left - 5))
    try:
        proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return {"compiled": False, "note": f"did not finish within {timeout:.0f} s"}
    if proc.returncode != 0 or not os.path.exists(result):
        return {"compiled": False, "note": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"}
    with open(result) as f:
        return json.load(f)


def compile_child(args) -> None:
    """Child of :func:`stage_compile`: compile, time the first call, then measure bf16 images/s."""
    from plantray.model.network import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = build_model(args.arch, args.classes, "random")
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    if not args.eager:
        model = torch.compile(model)
    x = torch.randn(args.batch, 3, args.crop, args.crop, device=device).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16):
            model(x)

    t0 = time.perf_counter()
    step()
    sync(device)
    out = {"compiled": not args.eager, "mode": "default", "first_call_s": round(time.perf_counter() - t0, 1)}
    out.update(measure(step, args.batch, device, args.cap))
    with open(args.compile_child, "w") as f:
        json.dump(out, f)


# --- d. end to end from JPEG files ----------------------------------------------------------------------

def _decode_chunk(args: tuple) -> np.ndarray:
    """Pool worker: plantray's reader + Pillow draft-mode decode, resize, centre crop; uint8 NHWC."""
    from plantray.images.decode import ImageError
    from plantray.images.loader import preprocess, read_image

    paths, preset = args
    out = []
    for p in paths:
        try:
            out.append(preprocess(read_image(p), preset))
        except ImageError:
            continue
    return np.stack(out) if out else np.zeros((0, preset.crop_size, preset.crop_size, 3), np.uint8)


def cpu_decode_run(net, paths: list[str], batch: int, pool, keep: list | None = None) -> int:
    """Streams ``paths`` through the decode pool into ``net.probabilities`` in batches; returns images done."""
    chunk = 16
    chunks = [(paths[i:i + chunk], net.preset) for i in range(0, len(paths), chunk)]
    pending, done = [], 0
    for arr in pool.imap(_decode_chunk, chunks):
        pending.append(arr)
        if sum(len(a) for a in pending) >= batch:
            done += _predict(net, pending, keep)
            pending = []
    if pending:
        done += _predict(net, pending, keep)
    return done


def _predict(net, arrays: list, keep: list | None) -> int:
    images = np.concatenate(arrays)
    if keep is not None:
        keep.append(images)
    net.probabilities(images)  # returns CPU probabilities: includes the device->host copy
    return len(images)


def stage_e2e_cpu_decode(model_dir: str, paths: list[str], sizes: Sizes, device: torch.device, pool,
                         keep: list) -> dict:
    """CPU path: ``sizes.procs`` processes decode with plantray.images.loader; plantray.model.network.Network (bf16)."""
    from plantray.model.artifact import load_artifact
    from plantray.model.network import Network

    net = Network(load_artifact(model_dir), device, "bf16" if device.type == "cuda" else "fp32")
    cpu_decode_run(net, paths[: sizes.batch * 2], sizes.batch, pool)  # warm-up: pool, cuDNN autotune
    sync(device)
    t0 = time.perf_counter()
    done = cpu_decode_run(net, paths, sizes.batch, pool, keep)
    seconds = time.perf_counter() - t0
    return {"images": done, "seconds": round(seconds, 2), "images_per_s": round(done / seconds, 1),
            "decode_processes": sizes.procs, "precision": net.precision}


def gpu_decode_batch(datas: list[torch.Tensor], device: torch.device, resize: int, crop: int) -> torch.Tensor:
    """nvJPEG batch decode on the GPU, then resize (shorter side, antialiased) and centre crop there.

    Returns:
        uint8 [N, 3, crop, crop] on ``device``.
    """
    import torchvision.transforms.v2.functional as TF
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    out = torch.empty((len(images), 3, crop, crop), dtype=torch.uint8, device=device)
    for i, img in enumerate(images):
        out[i] = TF.center_crop(TF.resize(img, resize, antialias=True), [crop, crop])
    return out


def gpu_decode_run(model, paths: list[str], sizes: Sizes, preset, device: torch.device, readers) -> int:
    """Reads file bytes in threads (one batch ahead), decodes + preprocesses on the GPU, runs the model."""
    from torchvision.io import read_file

    prefetch, reader = readers
    mean = torch.tensor(preset.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(preset.std, device=device).view(1, 3, 1, 1) * 255
    batches = [paths[i:i + sizes.batch] for i in range(0, len(paths), sizes.batch)]

    def read(batch):
        return list(reader.map(read_file, batch))

    future, done = prefetch.submit(read, batches[0]), 0
    for k in range(len(batches)):
        datas = future.result()
        if k + 1 < len(batches):
            future = prefetch.submit(read, batches[k + 1])
        x = gpu_decode_batch(datas, device, preset.resize_size, preset.crop_size)
        x = ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            probs = torch.softmax(model(x).float(), dim=1).cpu()
        done += len(probs)
    return done


def stage_e2e_gpu_decode(model_dir: str, paths: list[str], sizes: Sizes, device: torch.device) -> dict:
    """GPU path: torchvision.io.decode_jpeg(device='cuda') batches + GPU resize/crop + the same network."""
    from plantray.model.artifact import load_artifact
    from plantray.model.network import Network

    net = Network(load_artifact(model_dir), device, "bf16")
    with ThreadPoolExecutor(1) as prefetch, ThreadPoolExecutor(8) as reader:
        gpu_decode_run(net.model, paths[: sizes.batch * 2], sizes, net.preset, device, (prefetch, reader))  # warm-up
        sync(device)
        t0 = time.perf_counter()
        done = gpu_decode_run(net.model, paths, sizes, net.preset, device, (prefetch, reader))
        sync(device)
        seconds = time.perf_counter() - t0
    return {"images": done, "seconds": round(seconds, 2), "images_per_s": round(done / seconds, 1),
            "decode_device": str(device)}


# --- e. plantray classify on Ray ------------------------------------------------------------------------

def stage_classify(model_dir: str, paths: list[str], sizes: Sizes, work: str, results: Results) -> dict:
    """``plantray classify`` on N then 2N rows (the set read twice); steady state = N / (t(2N) - t(N))."""
    from plantray.cluster import ensure_ray
    from plantray.commands.classify import ClassifyConfig, classify

    ensure_ray()
    out, times = {}, {}
    for label, rows in (("n", paths), ("2n", paths + paths)):
        if label == "2n" and results.left() < 2.5 * times["n"] + 10:
            out["note"] = "2N run skipped: time budget"
            break
        manifest = os.path.join(work, f"classify-{label}.parquet")
        pq.write_table(pa.table({"image_uri": rows}), manifest)
        t0 = time.perf_counter()
        summary = classify(ClassifyConfig(model=model_dir, input=manifest, output=os.path.join(work, f"out-{label}"),
                                          device="auto", overwrite=True, batch_size=sizes.batch))
        times[label] = time.perf_counter() - t0
        out[label] = {"images": summary["images"], "failed": summary["failed"], "seconds": round(times[label], 2),
                      "summary_images_per_s": summary["images_per_second"], "plan": summary["plan"]}
    out["images_per_s"] = out["n"]["summary_images_per_s"]
    if "2n" in times and times["2n"] > times["n"]:
        out["steady_images_per_s"] = round(len(paths) / (times["2n"] - times["n"]), 1)
        out["images_per_s"] = out["steady_images_per_s"]
    elif "2n" in times:  # start-up noise larger than the work itself (tiny dry runs)
        out["note"] = "t(2N) <= t(N): steady state not measurable; images_per_s is the N run's own rate"
    return out


# --- f. training ----------------------------------------------------------------------------------------

def stage_train_ceiling(sizes: Sizes, device: torch.device) -> dict:
    """One training step (bf16 autocast on GPU, channels_last, Adam) on synthetic tensors already on the device."""
    from plantray.model.network import build_model

    model, _ = build_model(sizes.arch, sizes.classes, "random")
    model = model.train().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(sizes.batch, 3, sizes.crop, sizes.crop, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, sizes.classes, (sizes.batch,), device=device)

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = measure(step, sizes.batch, device, sizes.cap, warmup=3)
    out["precision"] = "bf16" if device.type == "cuda" else "fp32"
    return out


def stage_plantray_train(manifest: str, sizes: Sizes, device: torch.device, work: str) -> dict:
    """``plantray train``: 1 worker, ``use_gpu`` when there is a GPU, random init; per-epoch images/s."""
    from plantray.commands.train import TrainConfig, train

    out_dir = os.path.join(work, "trained")
    summary = train(TrainConfig(data=manifest, output=out_dir, arch=sizes.arch, init="random",
                                epochs=sizes.train_epochs, num_workers=1, use_gpu=device.type == "cuda",
                                image_size=sizes.crop, batch_size=sizes.batch, checkpoint_every=sizes.train_epochs,
                                overwrite=True))
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:  # one JSON line per epoch
        epochs = [round(json.loads(line)["images_per_second"], 1) for line in f if line.strip()]
    return {"model": out_dir, "epochs_images_per_s": epochs, "images_per_s": epochs[-1],
            "seconds": summary["seconds"], "final_accuracy": round(summary["final"].get("accuracy", 0.0), 4)}


# --- g. precision -------------------------------------------------------------------------------------

def stage_agreement(model_dir: str, images: np.ndarray, device: torch.device, sizes: Sizes) -> dict:
    """Top-1 agreement of bf16 and fp32 predictions of the same model on the same decoded images."""
    from plantray.model.artifact import load_artifact
    from plantray.model.network import Network

    artifact = load_artifact(model_dir)
    probs = {}
    for precision in ("fp32", "bf16"):
        net = Network(artifact, device, precision)
        probs[precision] = torch.cat([net.probabilities(images[i:i + sizes.batch])
                                      for i in range(0, len(images), sizes.batch)])
        del net
    top32, top16 = probs["fp32"].argmax(1), probs["bf16"].argmax(1)
    p32 = probs["fp32"].max(1).values
    return {"images": len(images), "agreement": round(float((top32 == top16).float().mean()), 5),
            "max_abs_prob_diff": round(float((probs["fp32"] - probs["bf16"]).abs().max()), 5),
            "mean_top1_prob_fp32": round(float(p32.mean()), 5), "model": artifact.card.get("name")}


# --- report -----------------------------------------------------------------------------------------------

def _rate(stages: dict, name: str) -> float | None:
    entry = stages.get(name, {})
    return entry.get("images_per_s") if entry.get("status") == "ok" else None


def targets(stages: dict) -> dict:
    """Each end-to-end path against the issue's targets; agreement against the bf16 rule."""
    ceiling = _rate(stages, "c_model_ceiling")
    out = {}
    for name in ("d_e2e_cpu_decode", "d_e2e_gpu_decode", "e_plantray_classify"):
        rate = _rate(stages, name)
        if rate is None:
            continue
        ratio = round(rate / ceiling, 3) if ceiling else None
        out[name] = {"images_per_s": rate, "ratio_to_ceiling": ratio,
                     "meets": bool(rate >= TARGET_IMAGES_PER_S and ratio is not None and ratio >= TARGET_RATIO)}
    paths = {k: v["images_per_s"] for k, v in out.items() if k.startswith("d_")}
    if len(paths) == 2:
        out["faster_decode_path"] = max(paths, key=paths.get)
    for name in ("g_agreement_random", "g_agreement_trained"):
        entry = stages.get(name, {})
        if entry.get("status") == "ok":
            out[name] = {"agreement": entry["agreement"], "bf16_ok": entry["agreement"] >= TARGET_AGREEMENT}
    train, ceiling_t = _rate(stages, "f_plantray_train"), _rate(stages, "f_train_ceiling")
    if train and ceiling_t:
        out["f_plantray_train"] = {"images_per_s": train, "ratio_to_train_ceiling": round(train / ceiling_t, 3)}
    return out


ROWS = [("c_model_ceiling", "model-only ceiling, bf16 + channels_last, ready GPU tensors"),
        ("c_compile", "model-only ceiling, torch.compile (bf16)"),
        ("d_e2e_cpu_decode", "end to end: plantray CPU decode pool -> Network (bf16)"),
        ("d_e2e_gpu_decode", "end to end: nvJPEG decode + GPU resize/crop -> same network"),
        ("e_plantray_classify", "plantray classify (Ray Data, manifest -> Parquet)"),
        ("f_train_ceiling", "training step ceiling (bf16, Adam, ready tensors)"),
        ("f_plantray_train", "plantray train (Ray Train, 1 worker, last epoch)")]


def markdown(data: dict) -> str:
    """A short human-readable report of the run."""
    st, env, sz = data["stages"], data["stages"].get("a_env", {}), data["sizes"]
    ceiling = _rate(st, "c_model_ceiling")
    lines = [f"# plantray GPU benchmark ({env.get('gpu', env.get('device', '?'))}, {env.get('cpu_count', '?')} CPUs)",
             "", f"torch {env.get('torch')}, torchvision {env.get('torchvision')}, ray {env.get('ray')}; "
             f"{sz['arch']} at {sz['crop']} px, batch {sz['batch']}, {sz['images']} synthetic JPEGs "
             f"({sz['min_pixels']:,}-{sz['max_pixels']:,} px); run took {data.get('elapsed_s')} s.", "",
             "| measurement | images/s | x ceiling |", "|---|---:|---:|"]
    for name, label in ROWS:
        rate = _rate(st, name)
        status = st.get(name, {}).get("status", "not run")
        shown = rate if rate is not None else status[:80]
        ratio = f"{rate / ceiling:.2f}" if rate and ceiling and name != "f_train_ceiling" else ""
        lines.append(f"| {label} | {shown} | {ratio} |")
    fp32 = st.get("c_model_ceiling", {}).get("fp32", {}).get("images_per_s")
    if fp32:
        lines.append(f"| model-only ceiling, fp32 | {fp32} | {fp32 / ceiling:.2f} |")
    lines += ["", f"Targets (issue 7): end to end >= {TARGET_IMAGES_PER_S:,.0f} images/s and >= "
              f"{TARGET_RATIO:.0%} of the ceiling; bf16 default only where Top-1 agreement >= {TARGET_AGREEMENT:.1%}.",
              ""]
    for name, t in data.get("targets", {}).items():
        lines.append(f"- {name}: {json.dumps(t)}")
    lines += ["", "Stage status:", ""]
    for name, entry in st.items():
        lines.append(f"- {name}: {entry.get('status')} ({entry.get('stage_seconds', 0)} s)")
    return "\n".join(lines) + "\n"


# --- main -------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/gpu", help="directory for gpu_results.json/.md")
    parser.add_argument("--quick", action="store_true", help="CPU dry run with tiny sizes")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for the whole run; late stages skip")
    parser.add_argument("--images", type=int, default=None, help="synthetic JPEGs (default 2048, quick 48)")
    parser.add_argument("--cap", type=float, default=None, help="seconds per measurement (default 8, quick 2)")
    parser.add_argument("--work", default=None, help="scratch directory (default: a new temp dir)")
    # Internal: the torch.compile measurement runs in a child process (see stage_compile).
    parser.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    for flag, kind in (("--arch", str), ("--classes", int), ("--batch", int), ("--crop", int)):
        parser.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def ray_available() -> tuple[bool, str]:
    try:
        import ray
        import ray.data  # noqa: F401
        import ray.train  # noqa: F401

        return True, ray.__version__
    except Exception as e:
        return False, f"ray import failed: {type(e).__name__}: {e}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compile_child:
        compile_child(args)
        return 0
    sizes = Sizes.quick() if args.quick else Sizes(cap=8.0)
    sizes.images = args.images or sizes.images
    sizes.cap = args.cap or sizes.cap
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Without CUDA only a --quick dry run makes sense (every path then runs on the CPU, tiny).
    can_run = (device.type == "cuda" or args.quick, "no cuda")
    ray_ok, ray_why = ray_available()
    has_ray = (ray_ok, ray_why)
    work = args.work or tempfile.mkdtemp(prefix="plantray-gpu-bench-")
    res = Results(args.out, sizes, args.budget)
    res.data.update(quick=args.quick, work=work)
    pool = mp.get_context("spawn").Pool(sizes.procs)
    try:
        run_all(res, sizes, device, work, pool, can_run, has_ray)
    finally:
        pool.terminate()
        _shutdown_ray()
        res.save()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(res.data))
    return 0


def run_all(res: Results, sizes: Sizes, device: torch.device, work: str, pool, can_run, has_ray) -> None:
    """The stages in order of importance; Ray and torch.compile last since they take longest."""
    res.run("a_env", stage_env, device)
    synth = res.run("b_synth", stage_synth, work, sizes, pool) or {}
    paths = synth.get("_paths")
    have_data = (bool(paths), "no synthetic data")
    model_dir = res.run("b_model", lambda: {"_dir": make_model(work, sizes)}) or {}
    have_model = (bool(model_dir), "no model")
    model_dir = model_dir.get("_dir")
    res.run("c_model_ceiling", stage_ceiling, model_dir, sizes, device, needs=(can_run, have_model))
    res.run("f_train_ceiling", stage_train_ceiling, sizes, device, needs=(can_run,))
    kept: list = []
    res.run("d_e2e_cpu_decode", stage_e2e_cpu_decode, model_dir, paths, sizes, device, pool, kept,
            needs=(can_run, have_data, have_model))
    pool.close()  # the CPUs go to Ray from here on
    res.run("d_e2e_gpu_decode", stage_e2e_gpu_decode, model_dir, paths, sizes, device,
            needs=(can_run, have_data, have_model))
    images = np.concatenate(kept)[:1024] if kept else None
    have_images = (images is not None, "no decoded images (stage d_e2e_cpu_decode)")
    res.run("g_agreement_random", stage_agreement, model_dir, images, device, sizes,
            needs=(can_run, have_images, have_model))
    res.run("e_plantray_classify", stage_classify, model_dir, paths, sizes, work, res,
            needs=(can_run, has_ray, have_data, have_model), min_left=45)
    trained = res.run("f_plantray_train", stage_plantray_train, synth.get("manifest"), sizes, device, work,
                      needs=(can_run, has_ray, have_data), min_left=60) or {}
    res.run("g_agreement_trained", stage_agreement, trained.get("model"), images, device, sizes,
            needs=(can_run, have_images, (bool(trained), "no trained model (stage f_plantray_train)")))
    _shutdown_ray()  # frees the CPUs for the compiler
    res.run("c_compile", lambda: stage_compile(sizes, device, work, res.left()), needs=(can_run,), min_left=40)


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
