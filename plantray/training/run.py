"""Driving a Ray Train run from the driver: TorchTrainer, per-epoch progress lines, controller retries.

The run writes checkpoints under ``--storage/--name`` (local or object storage), so rerunning with the
same name resumes it. Rank 0's per-epoch metrics travel from the Train controller to the driver through
a Ray queue and are logged as they arrive, so a long run shows progress before it ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import threading
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from plantray import __version__, storage
from plantray.config import to_json
from plantray.images.augment import TrainPreset
from plantray.images.presets import EvalPreset
from plantray.model.artifact import make_card, save_artifact
from plantray.model.labels import Labels
from plantray.model.network import build_model
from plantray.storage.pause import requested_point
from plantray.training import curves
from plantray.training.data import class_weights
from plantray.training.loop import CHECKPOINT_FILE, checkpoint_dir, load_checkpoint, train_loop_per_worker
from plantray.training.resources import ResourcesUnavailable, ResourceWait, describe, start_timeout

log = logging.getLogger(__name__)
FAIL_AFTER_EPOCH_ENV = "PLANTRAY_FAIL_AFTER_EPOCH"  # test hook, read on the driver (see loop_config)


class _Progress(ray.train.UserCallback):
    """Forwards rank 0's per-epoch metrics from the Train controller to the driver through a Ray queue."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put(metrics[0])


def _print_progress(queue, epochs: int, stop: threading.Event, seen: list, line=None, images: int = 0) -> None:
    """Driver thread: each epoch's metrics as the workers report them (collected in ``seen``), logged and
    shown as the note of the console's progress ``line`` (whose counts the workers add per batch)."""
    from ray.util.queue import Empty

    while not (stop.is_set() and queue.empty()):
        try:
            metrics = queue.get(timeout=0.5)
        except Empty:
            continue
        except Exception:  # the queue actor went away with the run: nothing more to print
            return
        seen.append(metrics)
        log.info(curves.format_epoch(metrics, epochs))
        if line is not None:
            total = (epochs - int(metrics.get("restored_epoch") or 0)) * images or None  # a resumed run
            line.update(note=f"epoch {metrics['epoch']}/{epochs} loss {metrics['loss']:.2f} "
                        f"acc {metrics['accuracy']:.2f}", total=total)


@contextlib.contextmanager
def _sigint_handler_kept():
    """Puts back the process's SIGINT handler after ``fit()``.

    Ray Train 2.58 installs one (Ctrl-C aborts the run) that holds the run's controller actor and never
    removes it, so the controller, its dataset manager and split coordinators (~2.5 GB on CPU) outlived every
    finished run in a driver that goes on (a notebook, a service, the test session) until the next fit().
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


def _fit(trainer: TorchTrainer, retries: int = 1):
    """``trainer.fit()``, run again from the latest checkpoint after a Train controller failure.

    Ray Train retries worker failures itself (``max_failures``) but gives up on controller errors, such
    as an actor briefly unreachable on an overloaded node; the same run name resumes where it stopped.

    Raises:
        ResourcesUnavailable: the workers could not be placed within ``--resource-timeout`` (not retried).
    """
    for attempt in range(retries + 1):
        try:
            with _sigint_handler_kept():
                return trainer.fit()
        except ray.train.ControllerError as e:
            if isinstance(e.controller_failure, ResourcesUnavailable):
                raise e.controller_failure from None
            if attempt == retries:
                raise
            log.warning("Ray Train controller failed (%s); resuming the run from its latest checkpoint", e)


def run_trainer(cfg: Any, scaling_config: ray.train.ScalingConfig, datasets: dict, loop_cfg: dict,
                where: dict, line=None, images: int = 0) -> tuple[dict, int]:
    """Runs TorchTrainer to completion.

    Args:
        cfg: the job's TrainConfig (``name``, ``epochs`` and ``max_failures`` are used).
        scaling_config: workers and their resources (:func:`plantray.inference.planner.train_scaling`).
        datasets: the Ray datasets handed to the workers (``train``, optionally ``val``).
        loop_cfg: the plain dict every worker receives (:func:`loop_config`).
        where: the run's ``storage`` location, from :func:`plantray.commands.train.validate`.
        line: the console's progress line (:class:`plantray.console.Progress`), or None.
        images: training images per epoch (the progress line's total is epochs x images).
    Returns:
        The final checkpoint's state and the number of epochs run by this call.
    Raises:
        ResourcesUnavailable: no worker group could run for ``cfg.resource_timeout`` seconds.
    """
    from ray.util.queue import Queue

    storage_fs, storage_path = None, storage.get_fs(where["storage"])[1]
    if storage.scheme(where["storage"]) != "file":
        storage_fs, storage_path = storage.arrow_fs(where["storage"])
    queue = Queue(actor_options=_on_this_node())
    wait = ResourceWait(cfg.resource_timeout, asked(scaling_config))
    # A node lost is a worker-group failure like any other: Ray Train restarts from the last checkpoint.
    run_config = ray.train.RunConfig(
        name=cfg.name, storage_path=storage_path, storage_filesystem=storage_fs,
        callbacks=[_Progress(queue), wait], failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2))
    stop, seen = threading.Event(), []
    printer = threading.Thread(target=_print_progress, args=(queue, cfg.epochs, stop, seen, line, images),
                               daemon=True)
    printer.start()
    try:
        with start_timeout(cfg.resource_timeout), _counting(line) as counter:
            result = _fit(TorchTrainer(train_loop_per_worker, train_loop_config={**loop_cfg, "progress": counter},
                                       scaling_config=scaling_config, run_config=run_config, datasets=datasets))
    finally:
        stop.set()
        printer.join(timeout=10)
        queue.shutdown()
    with result.checkpoint.as_directory() as d:
        return load_checkpoint(os.path.join(d, CHECKPOINT_FILE)), len(seen)


def _counting(line):
    """:func:`plantray.cluster.counting` for the workers' per-batch image counts; a null context without a line."""
    import contextlib

    from plantray.cluster import counting

    return counting(line) if line is not None else contextlib.nullcontext()


def finished_state(run_dir: str, epochs: int) -> dict | None:
    """The final state of a run whose last epoch's checkpoint is already written; None otherwise.

    Rerunning a finished run (a retried job, a repeated command) then writes its model again without starting
    Ray Train: no workers, no resources to wait for. A checkpoint cut short by a crash does not load, and the
    run goes to Ray Train, which resumes from the last checkpoint it registered.
    """
    uri = storage.join(run_dir, checkpoint_dir(epochs), CHECKPOINT_FILE)
    try:
        state = load_checkpoint(io.BytesIO(storage.read_bytes(uri)))
    except FileNotFoundError:
        return None
    except Exception as e:  # torch.load of a truncated file: zip, pickle or EOF errors alike
        log.info("the final checkpoint %s does not load (%s): resuming the run with Ray Train", uri, e)
        return None
    return state if state.get("epoch") == epochs else None


def _on_this_node() -> dict:
    """Actor options pinning a helper actor to the driver's node, so losing another node never takes it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def asked(scaling_config: ray.train.ScalingConfig) -> str:
    """What a run asks for, in words: ``1-4 worker(s) of CPU 1 each``."""
    workers = scaling_config.num_workers
    count = f"{workers[0]}-{workers[1]}" if isinstance(workers, tuple) else str(workers)
    return f"{count} worker(s) of {describe(scaling_config.resources_per_worker or {'CPU': 1})} each"


def _fail_after_epoch() -> int | None:
    value = os.environ.get(FAIL_AFTER_EPOCH_ENV)
    return int(value) if value else None


def loop_config(cfg, labels: Labels, eval_preset: EvalPreset, where: dict) -> dict:
    """The plain dict every worker receives (from the job's TrainConfig ``cfg``).

    The test suite makes worker 0 fail once after epoch N by setting ``PLANTRAY_FAIL_AFTER_EPOCH=N``
    (:data:`FAIL_AFTER_EPOCH_ENV`) in the driver's environment, or pause after epoch N's report with
    ``PLANTRAY_PAUSE_AT=epoch:N`` (:mod:`plantray.storage.pause`); neither is a user-facing flag.
    """
    weights = None
    if cfg.class_balance != "none" and cfg.balance_mode == "loss":
        weights = class_weights(labels.train_images, cfg.class_balance)
    init = cfg.init if cfg.init in ("random", "imagenet") else storage.absolute(cfg.init)  # workers' cwd differs
    return {"arch": cfg.arch, "init": init, "num_classes": len(labels), "epochs": cfg.epochs, "lr": cfg.lr,
            "backbone_lr_scale": 1.0 if cfg.init == "random" else cfg.backbone_lr_scale,
            "batch_size": cfg.batch_size, "seed": cfg.seed, "shuffle_buffer": cfg.shuffle_buffer,
            "checkpoint_every": cfg.checkpoint_every, "class_weights": weights, "use_gpu": cfg.use_gpu,
            "mean": list(eval_preset.mean), "std": list(eval_preset.std), "has_val": bool(cfg.val),
            "val_every": cfg.val_every,
            "fail_after_epoch": cfg.fail_after_epoch or _fail_after_epoch(), "pause_at": requested_point() or "",
            "run_dir": storage.absolute(where["run_dir"]),
            "fair_share_threads": cfg.cpus_per_worker is None}


def code_version() -> str:
    """plantray's version plus the git commit of its source tree when there is one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=os.path.dirname(__file__),
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def write_model(cfg, state: dict, labels: Labels, eval_preset: EvalPreset, preset: TrainPreset,
                info: dict) -> dict:
    """Saves the artifact, metrics and curve to the job's OUTPUT; returns the card."""
    model, _ = build_model(cfg.arch, len(labels), "random")
    model.load_state_dict(state["model"])
    history = state["history"]
    provenance = {**info.pop("provenance"), "trained": True}
    card = make_card(cfg.arch, labels, eval_preset, provenance, name=cfg.model_name, version=cfg.model_version,
                     training={"config": json.loads(to_json(cfg)), "augmentation": preset.to_dict(),
                               "epochs": state["epoch"], "final_metrics": history[-1] if history else {}},
                     data={"uri": cfg.data, "val": cfg.val, "license": cfg.data_license,
                           "citation": cfg.data_citation, **info.pop("data")},
                     code_version=code_version(), **info)
    card = save_artifact(cfg.output, model, labels, card)
    curves.write_metrics(cfg.output, history)
    curves.plot_curve(cfg.output, history, title=f"{card['name']} ({cfg.name})")
    return card
