"""The per-worker training loop (Ray Train): DDP model, Adam with the paper's step schedule, checkpoints.

Runs inside each Ray Train worker. Batches arrive already decoded and augmented (uint8 NHWC + int64
labels) from the Ray Data shard; the loop normalises on the device, trains one epoch, reduces the
metrics over workers and reports them with a checkpoint every ``checkpoint_every`` epochs. A
checkpoint holds everything needed to continue exactly where it stopped: model, optimiser,
scheduler, epoch, RNG states and the metric history.
"""

from __future__ import annotations

import collections
import os
import platform
import random
import tempfile
import time

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from plantray import storage
from plantray.model.network import build_model, head_prefix, normalize
from plantray.storage.pause import pause_point

CHECKPOINT_FILE = "checkpoint.pt"
FAULT_MARKER = "_fault_injected"


class InjectedFault(RuntimeError):
    """Raised once by the test hook (``PLANTRAY_FAIL_AFTER_EPOCH``) to exercise recovery."""


def build_optimizer(model: torch.nn.Module, lr: float, backbone_scale: float, epochs: int):
    """Adam with the head at ``lr`` and the pretrained body at ``lr * backbone_scale``; LR x0.1 at 70%/90%.

    Returns:
        (optimizer, MultiStepLR scheduler stepped once per epoch).
    """
    prefix = head_prefix(model)
    head = [p for n, p in model.named_parameters() if n.startswith(prefix)]
    body = [p for n, p in model.named_parameters() if not n.startswith(prefix)]
    optimizer = torch.optim.Adam([{"params": body, "lr": lr * backbone_scale}, {"params": head, "lr": lr}])
    milestones = sorted({max(1, round(f * epochs)) for f in (0.7, 0.9)})
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)


def rng_state() -> dict:
    """Python, NumPy and torch RNG states (plain types, loadable with ``weights_only=True``)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": list(random.getstate()[1]), "numpy": [keys.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Restores :func:`rng_state`."""
    random.setstate((3, tuple(state["python"]), None))
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str, model, optimizer, scheduler, epoch: int, history: list) -> None:
    """Writes the full training state to ``path``."""
    sched = scheduler.state_dict()
    sched["milestones"] = dict(sched["milestones"])  # a Counter is not loadable with weights_only
    torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "scheduler": sched,
                "epoch": epoch, "rng": rng_state(), "history": history}, path)


def checkpoint_dir(epoch: int) -> str:
    """The name of epoch ``epoch``'s checkpoint directory in the run's storage (``epoch_0003``)."""
    return f"epoch_{epoch:04d}"


def load_checkpoint(path) -> dict:
    """Reads a checkpoint written by :func:`save_checkpoint` (a path or a binary file object)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["scheduler"]["milestones"] = collections.Counter(state["scheduler"]["milestones"])
    return state


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def hardware(use_gpu: bool) -> str:
    """A short description of this worker's device."""
    if use_gpu and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def _node_cpus() -> float:
    """The CPUs Ray counts on this worker's node (its ``--num-cpus``; 0 when unknown)."""
    node = ray.get_runtime_context().get_node_id()
    return next((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["NodeID"] == node), 0.0)


def worker_threads(fair_share: bool) -> int:
    """This worker's torch threads, from what it got rather than from a snapshot of the cluster.

    Args:
        fair_share: False when ``--cpus-per-worker`` was given: as many threads as the CPUs Ray assigned.
            True (the default): an equal share, among the training workers on this node, of the cores this
            process may run on (at most the node's Ray CPUs), and never fewer than the CPUs assigned.
            Decode tasks use their CPUs only part of the time, so a worker held to its 1-CPU reservation
            leaves the rest idle (on 2 CPUs: 0.53x the step ceiling; bench/train_throughput.py).
    Returns:
        Threads, at least 1.
    """
    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(assigned))
    if not fair_share:
        return threads
    cores = len(os.sched_getaffinity(0))
    cores = min(cores, int(_node_cpus()) or cores)
    return max(threads, cores // max(1, ray.train.get_context().get_local_world_size()))


def _step_batch(model, batch, class_weights, device, cfg) -> tuple[torch.Tensor, int, int, int]:
    """Forward and loss of one batch; returns (loss, valid images, correct, skipped)."""
    valid = batch["valid"].to(device)
    x, y = batch["image"].to(device), batch["label"].to(device)
    skipped = int((~valid).sum())
    if int(valid.sum()) >= 2:
        x, y = x[valid], y[valid]
        weight = torch.ones(len(y), device=device)
    else:  # nothing usable: still step (DDP needs every worker's gradients) with a zero loss
        weight = valid.float()
    x = normalize(x, cfg["mean"], cfg["std"])
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(x)
    losses = F.cross_entropy(logits.float(), y, weight=class_weights, reduction="none")
    per_class = class_weights[y] if class_weights is not None else torch.ones_like(losses)
    loss = (losses * weight).sum() / (per_class * weight).sum().clamp_min(1e-8)
    correct = int(((logits.argmax(1) == y) & (weight > 0)).sum())
    return loss, int(weight.sum()), correct, skipped


def train_one_epoch(model, optimizer, shard, class_weights, device, cfg: dict, epoch: int) -> dict:
    """One pass over this worker's shard; returns the metrics summed over all workers.

    Returns:
        ``loss`` (mean per image), ``accuracy``, ``images``, ``skipped_unreadable``, ``images_per_second``.
    """
    model.train()
    start = time.perf_counter()
    sums = torch.zeros(4, dtype=torch.float64)  # loss * n, n, correct, skipped
    batches = shard.iter_torch_batches(batch_size=cfg["batch_size"], device="cpu", drop_last=False,
                                       local_shuffle_buffer_size=cfg["shuffle_buffer"] or None,
                                       local_shuffle_seed=cfg["seed"] * 1000 + epoch)
    for batch in batches:
        loss, n, correct, skipped = _step_batch(model, batch, class_weights, device, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.tensor([float(loss.detach()) * n, n, correct, skipped], dtype=torch.float64)
        if cfg.get("progress") is not None:  # the driver's progress line: counts only, fire and forget
            cfg["progress"].add.remote(n, skipped)
    sums = all_reduce(sums)
    n = max(sums[1].item(), 1.0)
    seconds = time.perf_counter() - start
    return {"loss": sums[0].item() / n, "accuracy": sums[2].item() / n, "images": int(sums[1].item()),
            "skipped_unreadable": int(sums[3].item()), "images_per_second": sums[1].item() / seconds,
            "seconds": seconds}


@torch.inference_mode()
def evaluate(model, shard, device, cfg: dict) -> dict:
    """Top-1 accuracy and loss on the validation set (each worker's shard, summed over workers).

    Returns:
        ``val_accuracy``, ``val_loss`` (mean cross-entropy per image, without class weights: the plain
        likelihood of the validation labels, comparable across runs whatever ``--class-weights``) and
        ``val_images``.
    """
    model.eval()
    _share_buffers(model)
    sums = torch.zeros(3, dtype=torch.float64)  # correct, images, summed cross-entropy
    for batch in shard.iter_torch_batches(batch_size=cfg["batch_size"], device="cpu"):
        valid = batch["valid"]
        if not bool(valid.any()):
            continue
        x = normalize(batch["image"][valid].to(device), cfg["mean"], cfg["std"])
        y = batch["label"][valid]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = unwrap(model)(x).float().cpu()
        loss = F.cross_entropy(logits, y, reduction="sum")
        sums += torch.tensor([float((logits.argmax(1) == y).sum()), float(valid.sum()), float(loss)],
                             dtype=torch.float64)
    sums = all_reduce(sums)
    images = max(sums[1].item(), 1.0)
    return {"val_accuracy": sums[0].item() / images, "val_loss": sums[2].item() / images,
            "val_images": int(sums[1].item())}


def _share_buffers(model) -> None:
    """Gives every worker rank 0's buffers (batch-norm running statistics) before validation.

    DDP keeps the weights equal but each worker updates its running statistics on its own last batches, so
    without this every worker validated a slightly different network (1.5% apart in loss in the tests) and
    none of them the one rank 0 saves. DDP broadcasts the same buffers at the next training step anyway.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    for buffer in unwrap(model).buffers():
        torch.distributed.broadcast(buffer, src=0)


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sums a CPU tensor over workers (gloo and NCCL both accept it via a device copy)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return t
    device = ray.train.torch.get_device()
    out = t.to(device)
    torch.distributed.all_reduce(out)
    return out.cpu()


def _restore(model, optimizer, scheduler) -> tuple[int, list]:
    """Loads the run's latest checkpoint if Ray Train has one; returns (epochs done, history)."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as d:
        state = load_checkpoint(os.path.join(d, CHECKPOINT_FILE))
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["epoch"], state["history"]


def _maybe_fail(cfg: dict, epoch: int) -> None:
    """Test hook: raise once (marker file in the run directory) after epoch ``fail_after_epoch``."""
    if cfg.get("fail_after_epoch") != epoch or ray.train.get_context().get_world_rank() != 0:
        return
    marker = storage.join(cfg["run_dir"], FAULT_MARKER)
    if storage.exists(marker):
        return
    storage.write_bytes(marker, b"1")
    raise InjectedFault(f"injected failure after epoch {epoch} (PLANTRAY_FAIL_AFTER_EPOCH)")


def validates(epoch: int, cfg: dict) -> bool:
    """Whether epoch ``epoch`` ends with a pass over --val: every ``val_every``-th and the last."""
    return epoch % cfg.get("val_every", 1) == 0 or epoch == cfg["epochs"]


def _report(metrics: dict, model, optimizer, scheduler, epoch: int, history: list, save: bool) -> None:
    """Reports the epoch's metrics; rank 0 attaches the checkpoint when ``save``."""
    rank = ray.train.get_context().get_world_rank()
    if not save or rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(os.path.join(d, CHECKPOINT_FILE), model, optimizer, scheduler, epoch, history)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=checkpoint_dir(epoch))


def train_loop_per_worker(cfg: dict) -> None:
    """Ray Train entry point: builds the model, restores the latest checkpoint, trains the remaining epochs.

    Args:
        cfg: plain dict from :func:`plantray.training.run.loop_config` (arch, init, lr, epochs, class weights...).
    """
    torch.manual_seed(cfg["seed"])  # same initial head on every worker (DDP also broadcasts rank 0's)
    np.random.seed(cfg["seed"])
    random.seed(cfg["seed"])
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(worker_threads(cfg["fair_share_threads"]))
    model, _ = build_model(cfg["arch"], cfg["num_classes"], cfg["init"])
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg["lr"], cfg["backbone_lr_scale"], cfg["epochs"])
    model = ray.train.torch.prepare_model(model)
    done, history = _restore(model, optimizer, scheduler)
    weights = cfg.get("class_weights")
    class_weights = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None
    shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val") if cfg["has_val"] else None
    for epoch in range(done + 1, cfg["epochs"] + 1):
        metrics = train_one_epoch(model, optimizer, shard, class_weights, device, cfg, epoch)
        if val is not None and validates(epoch, cfg):
            metrics.update(evaluate(model, val, device, cfg))
        metrics.update(epoch=epoch, lr=optimizer.param_groups[-1]["lr"], restored_epoch=done,
                       workers=ray.train.get_context().get_world_size(), device=hardware(cfg["use_gpu"]),
                       threads=torch.get_num_threads())
        scheduler.step()
        history.append(metrics)
        save = epoch % cfg["checkpoint_every"] == 0 or epoch == cfg["epochs"]
        _report(metrics, model, optimizer, scheduler, epoch, history, save)
        _maybe_fail(cfg, epoch)
        if ray.train.get_context().get_world_rank() == 0:
            pause_point(f"epoch:{epoch}", cfg["run_dir"], cfg.get("pause_at", ""))
