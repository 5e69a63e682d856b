"""Driving a Ray Train run from the driver: TorchTrainer, per-epoch progress lines, controller retries.

The run writes checkpoints under ``--storage/--name`` (local or object storage), so rerunning with the
same name resumes it. Rank 0's per-epoch metrics travel from the Train controller to the driver through
a Ray queue and are logged as they arrive, so a long run shows progress before it ends.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from plantray import storage
from plantray.training import curves
from plantray.training.loop import CHECKPOINT_FILE, load_checkpoint, train_loop_per_worker

log = logging.getLogger(__name__)


class _Progress(ray.train.UserCallback):
    """Forwards rank 0's per-epoch metrics from the Train controller to the driver through a Ray queue."""

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put(metrics[0])


def _print_progress(queue, epochs: int, stop: threading.Event, seen: list) -> None:
    """Driver thread: one log line per epoch as the workers report (collected in ``seen``)."""
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


def _fit(trainer: TorchTrainer, retries: int = 1):
    """``trainer.fit()``, run again from the latest checkpoint after a Train controller failure.

    Ray Train retries worker failures itself (``max_failures``) but gives up on controller errors, such
    as an actor briefly unreachable on an overloaded node; the same run name resumes where it stopped.
    """
    for attempt in range(retries + 1):
        try:
            return trainer.fit()
        except ray.train.ControllerError as e:
            if attempt == retries:
                raise
            log.warning("Ray Train controller failed (%s); resuming the run from its latest checkpoint", e)


def run_trainer(cfg: Any, scaling_config: ray.train.ScalingConfig, datasets: dict, loop_cfg: dict,
                where: dict) -> tuple[dict, int]:
    """Runs TorchTrainer to completion.

    Args:
        cfg: the job's :class:`plantray.train.TrainConfig` (``name``, ``epochs`` and ``max_failures`` are used).
        scaling_config: workers and their resources, from :func:`plantray.train.scaling`.
        datasets: the Ray datasets handed to the workers (``train``, optionally ``val``).
        loop_cfg: the plain dict every worker receives (:func:`plantray.train.loop_config`).
        where: the run's ``storage`` location, from :func:`plantray.train.validate`.
    Returns:
        The final checkpoint's state and the number of epochs run by this call.
    """
    from ray.util.queue import Queue

    storage_fs, storage_path = None, storage.get_fs(where["storage"])[1]
    if storage.scheme(where["storage"]) != "file":
        storage_fs, storage_path = storage.arrow_fs(where["storage"])
    queue = Queue(actor_options={"num_cpus": 0})
    run_config = ray.train.RunConfig(
        name=cfg.name, storage_path=storage_path, storage_filesystem=storage_fs, callbacks=[_Progress(queue)],
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2))
    stop, seen = threading.Event(), []
    printer = threading.Thread(target=_print_progress, args=(queue, cfg.epochs, stop, seen), daemon=True)
    printer.start()
    try:
        result = _fit(TorchTrainer(train_loop_per_worker, train_loop_config=loop_cfg, scaling_config=scaling_config,
                                   run_config=run_config, datasets=datasets))
    finally:
        stop.set()
        printer.join(timeout=10)
        queue.shutdown()
    with result.checkpoint.as_directory() as d:
        return load_checkpoint(os.path.join(d, CHECKPOINT_FILE)), len(seen)
