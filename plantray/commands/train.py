"""``plantray train``: the paper's fine-tuning recipe on Ray Train — multi-worker, fault-tolerant, resumable.

DATA (manifest or ImageFolder tree) -> label set and per-class counts (per-block counts summed) -> Ray Data
stream: global shuffle of the URI rows (re-seeded every epoch), read + decode + tag-aware augmentation
in CPU tasks -> one shard per Ray Train worker -> DDP training (:mod:`plantray.training.loop`, driven by
:mod:`plantray.training.run`) with a checkpoint under ``--storage/--name`` every ``--checkpoint-every`` epochs.
Rerunning with the same ``--name`` continues from the latest checkpoint; a failed worker or a lost node
restarts from it (``--max-failures``). ``--min-workers/--max-workers`` make the run elastic (Ray Train V2's
``ScalingConfig(num_workers=(min, max))``); workers are asked for, never sized from what is up at start, and
a run that cannot place them within ``--resource-timeout`` fails naming what it asked for and what the
cluster has. The final model goes to MODEL as a plantray artifact with metrics, a training curve and a
full card, whose duration covers every invocation of the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from plantray import console
from plantray.commands.options import RayOptions
from plantray.commands.record import made_by, mark_output, utc_now, write_run_record
from plantray.config import ConfigError, check, field
from plantray.images.presets import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(RayOptions):
    """Settings of ``plantray train`` (CLI flags are generated from these fields)."""

    data: str = field("", required=True, help="training manifest (.parquet/.csv: image_uri, scientificName[, tag, "
                      "genus, family]) or ImageFolder tree <root>/<scientificName>/**/*.jpg (local or s3://)")
    output: str = field("", required=True, help="model directory to write (local or s3://)")
    name: str = field("run", help="run name: rerunning with the same name resumes its latest checkpoint")
    storage: str | None = field(None, help="checkpoint storage (local dir or s3://; default OUTPUT-checkpoints, "
                                "beside the model directory, which holds only the model)")
    arch: str = field("resnet50", help="torchvision architecture")
    init: str = field("imagenet", help="imagenet | random | path/URI of a state dict")
    epochs: int = field(100, help="training epochs")
    num_workers: int = field(1, help="Ray Train workers, a fixed number (one GPU each with --use-gpu)")
    min_workers: int | None = field(None, help="elastic training: start with at least this many workers and "
                                    "go on with them after a node is lost (with --max-workers; overrides "
                                    "--num-workers)")
    max_workers: int | None = field(None, help="elastic training: grow to this many workers as nodes arrive "
                                    "(with --min-workers)")
    use_gpu: bool = field(False, help="train on GPUs (bf16 autocast, NCCL)")
    cpus_per_worker: float | None = field(None, help="CPUs reserved per worker (default: 1 with --use-gpu, "
                                          "else 0.5, so a 1-CPU node hosts one beside decode tasks); its "
                                          "torch threads: that many when given, else an equal share of its "
                                          "node's cores among the workers there")
    resource_timeout: float = field(600.0, help="seconds to wait for the workers' resources (at start or "
                                    "after a node is lost, while the autoscaler adds nodes) before failing")
    image_size: int = field(224, help="training crop side in pixels")
    batch_size: int = field(32, help="images per worker per step")
    lr: float = field(1e-3, help="Adam learning rate of the new head")
    backbone_lr_scale: float = field(0.1, help="pretrained layers train at lr x this (1.0 is used with --init random)")
    class_balance: str = field("none", choices=["none", "sqrt", "inverse"], help="class frequency correction")
    balance_mode: str = field("loss", choices=["loss", "sample"], help="re-weight the loss or re-sample images")
    checkpoint_every: int = field(1, help="epochs between checkpoints (the last epoch is always saved)")
    max_failures: int = field(3, help="worker failures to recover from (from the last checkpoint); -1 = always")
    seed: int = field(0, help="seed of the initial weights, shuffles and local shuffle buffers")
    val: str | None = field(None, help="optional validation manifest/tree: Top-1 and loss after each epoch "
                            "(see --val-every; metrics, training_curve.png) and the temperature of calibrated "
                            "confidences")
    val_every: int = field(1, help="validate on --val every N epochs instead (the last epoch always is): a "
                           "large --val costs a pass over it each time")
    data_license: str = field("", help="licence of the training images (recorded in the model card)")
    data_citation: str = field("", help="citation of the training data (recorded in the model card)")
    model_name: str | None = field(None, help="model name in the card (default plantray-ARCH)")
    model_version: str | None = field(None, help="model version in the card (default: today's date)")
    upright_tags: list[str] = field(["habit"], help="tags never rotated or flipped upside down (repeatable)")
    scale_min: float = field(0.35, help="smallest area fraction of the random resized crop")
    rotation: float = field(30.0, help="max rotation, degrees")
    shear: float = field(10.0, help="max shear, degrees")
    translate: float = field(0.1, help="max translation, fraction of the side")
    jitter: float = field(0.3, help="brightness/contrast/saturation jitter")
    shuffle_buffer: int = field(256, help="local shuffle buffer (images) on each worker")
    decode_batch_size: int = field(16, help="images per decode/augment task batch")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images are skipped as unreadable")
    overwrite: bool = field(False, help="replace a model already in OUTPUT (resuming the same run needs no flag)")
    fail_after_epoch: int | None = field(None, hidden=True, help="test hook: worker 0 fails once after this epoch "
                                         "(as PLANTRAY_FAIL_AFTER_EPOCH does)")


def validate(cfg: TrainConfig) -> dict:
    """Checks flags before any work; returns the run's storage location.

    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray import storage
    from plantray.model.artifact import CARD

    check([(cfg.epochs >= 1, f"--epochs {cfg.epochs} must be >= 1"),
           (cfg.num_workers >= 1, f"--num-workers {cfg.num_workers} must be >= 1"),
           ((cfg.min_workers is None) == (cfg.max_workers is None),
            "--min-workers and --max-workers go together (elastic training); or give --num-workers alone"),
           (cfg.min_workers is None or 1 <= cfg.min_workers <= cfg.max_workers,
            f"--min-workers {cfg.min_workers} must be >= 1 and <= --max-workers {cfg.max_workers}"),
           (cfg.resource_timeout > 0, f"--resource-timeout {cfg.resource_timeout} must be > 0"),
           (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size} must be >= 1"),
           (cfg.image_size >= 32, f"--image-size {cfg.image_size} must be >= 32"),
           (cfg.lr > 0, f"--lr {cfg.lr} must be > 0"),
           (cfg.backbone_lr_scale >= 0, f"--backbone-lr-scale {cfg.backbone_lr_scale} must be >= 0"),
           (cfg.checkpoint_every >= 1, f"--checkpoint-every {cfg.checkpoint_every} must be >= 1"),
           (cfg.val_every >= 1, f"--val-every {cfg.val_every} must be >= 1"),
           (cfg.max_failures >= -1, f"--max-failures {cfg.max_failures} must be >= -1"),
           (0 < cfg.scale_min <= 1, f"--scale-min {cfg.scale_min} must be in (0, 1]"),
           (cfg.cpus_per_worker is None or cfg.cpus_per_worker > 0, "--cpus-per-worker must be > 0"),
           (cfg.decode_batch_size >= 1, f"--decode-batch-size {cfg.decode_batch_size} must be >= 1")])
    if cfg.init not in ("random", "imagenet") and not storage.exists(cfg.init):
        raise ConfigError(f"--init {cfg.init!r} does not exist; give 'imagenet', 'random' or a state-dict path/URI")
    storage.check_writable(cfg.output, "--output")
    if cfg.storage:
        storage.check_writable(cfg.storage, "--storage")
    store = cfg.storage or default_storage(cfg.output)
    run_dir = storage.join(store, cfg.name)
    resuming = storage.exists(run_dir)
    if storage.exists(storage.join(cfg.output, CARD)) and not (resuming or cfg.overwrite):
        raise ConfigError(f"--output {cfg.output!r} already holds a model; choose a new location, pass "
                          "--overwrite, or resume its run with the same --name/--storage")
    if not resuming and storage.holds_data(cfg.output) and made_by(cfg.output) is None:
        raise ConfigError(f"--output {cfg.output!r} holds files plantray did not write; train writes the model "
                          "(weights.pt, labels.csv, model_card.json) there: choose a new or empty directory")
    return {"storage": store, "run_dir": run_dir, "resuming": resuming}


def default_storage(output: str) -> str:
    """Where a run's checkpoints go without ``--storage``: ``OUTPUT-checkpoints``, beside the model.

    Not inside it: a model directory is what users copy to buckets and clusters (weights, labels, card,
    curves: a few MB for ResNet-50), and each checkpoint also holds the optimiser's state (~300 MB). Beside
    it, on the same storage, so every node of a cluster that can write the model can also write them.
    """
    return output.rstrip("/") + "-checkpoints"


def train(cfg: TrainConfig) -> dict:
    """Runs ``plantray train``; returns the closing summary (also in MODEL/_plantray_run.json).

    Args:
        cfg: the job's configuration.
    Returns:
        Summary: epochs, images, classes, skipped images, final metrics, duration, output.
    Raises:
        ConfigError: bad flags or data (empty, unlabelled, a single class, missing --init), before training.
    """
    from plantray.sources import open_source

    where = validate(cfg)
    source = open_source(cfg.data, flag="--data")
    source.check()
    if cfg.val:
        open_source(cfg.val, flag="--val").check()
    from plantray.model.network import check_arch  # the last check: it needs torchvision's architectures

    check_arch(cfg.arch)
    # Ray and torch only once every check has passed: refusals stay quick and light.
    import ray
    import torch

    from plantray.cluster import ensure_ray, started_here
    from plantray.inference.planner import check_data_room, train_scaling
    from plantray.training.invocations import InvocationClock
    from plantray.training.run import write_model

    workers, per_worker = train_scaling(workers_asked(cfg), cfg.use_gpu, cfg.cpus_per_worker)
    console.headline(f"training on {cfg.data} into {cfg.output}")
    ensure_ray(cfg.dashboard)
    if started_here():  # its size is fixed: no autoscaler adds nodes to a Ray this process started
        check_data_room(workers, per_worker, ray.cluster_resources().get("CPU", 0.0))
    mark_output(cfg.output, "train")
    started = utc_now()
    # The run's time over every invocation (a killed one included), not only this one's.
    with InvocationClock(where["run_dir"]) as clock:
        state, epochs_now, scan, labels, presets, provenance = _train(cfg, source, where, workers, per_worker)
        seconds, invocations = round(clock.total(), 1), clock.invocations()
    history = state["history"]
    skipped = max((m.get("skipped_unreadable", 0) for m in history), default=0)
    info = {"provenance": provenance, "data": {**scan, "skipped_unreadable": skipped},
            "hardware": {"device": history[-1].get("device") if history else None,
                         "workers": max((m.get("workers", 0) for m in history), default=0),
                         "workers_asked": list(workers) if isinstance(workers, tuple) else workers,
                         "use_gpu": cfg.use_gpu, "torch": torch.__version__, "ray": ray.__version__},
            "duration_seconds": seconds, "invocations": invocations, "finished": utc_now(),
            "checkpoints": where["run_dir"]}
    card = write_model(cfg, state, labels, presets[1], presets[0], dict(info))
    summary = {"output": cfg.output, "run": where["run_dir"], "epochs": state["epoch"], "images": scan["images"],
               "classes": len(labels), "unlabelled": scan["unlabelled"], "skipped_unreadable": skipped,
               "final": history[-1] if history else {}, "epochs_run_now": epochs_now,
               "seconds": seconds, "invocations": invocations, "sha256": card["weights"]["sha256"]}
    if cfg.val:  # calibrated confidences from the start: the temperature goes into the card just written
        from plantray.commands.calibrate import after_training

        summary["calibration"] = after_training(cfg)
    write_run_record(cfg.output, "train", cfg, summary, started)
    return summary


def workers_asked(cfg: TrainConfig) -> int | tuple[int, int]:
    """``--num-workers N`` or, for elastic training, ``(--min-workers, --max-workers)``."""
    return cfg.num_workers if cfg.min_workers is None else (cfg.min_workers, cfg.max_workers)


def _train(cfg: TrainConfig, source, where: dict, workers, per_worker: dict) -> tuple:
    """Data, model check and Ray Train run; returns (state, epochs run now, scan, labels, presets, provenance)."""
    import ray

    from plantray.model.network import build_model
    from plantray.training.data import build_datasets, build_presets, scan_labels
    from plantray.training.run import finished_state, loop_config, run_trainer

    # Data
    console.say(f"  reading the labels of {cfg.data}")
    ds, _ = source.dataset(labels_from_dirs=True)
    columns = source.columns(labels_from_dirs=True)
    labels, scan = scan_labels(ds, cfg.data, columns)
    preset, eval_preset = build_presets(cfg)
    # Model (built once here so a bad --arch/--init fails before any worker starts)
    _, provenance = build_model(cfg.arch, len(labels), cfg.init)
    if where["resuming"] and (state := finished_state(where["run_dir"], cfg.epochs)) is not None:
        console.say(f"  run {where['run_dir']} already trained all {cfg.epochs} epochs: writing its model again")
        return state, 0, scan, labels, (preset, eval_preset), provenance
    datasets = build_datasets(cfg, ds, columns, labels, preset, eval_preset)
    # Asked for, never checked against what is up now: Ray Train places the workers as nodes arrive.
    scaling = ray.train.ScalingConfig(num_workers=workers, use_gpu=cfg.use_gpu, resources_per_worker=per_worker)
    # Train
    log.info("training %s on %d images of %d classes, %s worker(s), run %s", cfg.arch, scan["images"],
             len(labels), workers, where["run_dir"])
    console.say(f"  training {cfg.arch} on {scan['images']:,} images of {len(labels)} species for {cfg.epochs} "
                f"epochs with {workers} worker(s)")
    with console.Progress("training", total=cfg.epochs * scan["images"]) as line:
        state, epochs_now = run_trainer(cfg, scaling, datasets, loop_config(cfg, labels, eval_preset, where), where,
                                        line, scan["images"])
    return state, epochs_now, scan, labels, (preset, eval_preset), provenance


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    final = summary["final"]
    lines = [f"trained {summary['epochs']} epochs on {summary['images']} images of {summary['classes']} classes "
             f"in {summary['seconds']} s"
             + (f" over {summary['invocations']} invocations" if summary.get("invocations", 1) > 1 else "")
             + f" -> {summary['output']}",
             f"  final loss {final.get('loss', float('nan')):.4f}  accuracy {final.get('accuracy', 0):.3f}"
             + (f"  val_accuracy {final['val_accuracy']:.3f}" if "val_accuracy" in final else "")]
    if "calibration" in summary:
        lines.append(f"  calibrated on --val: temperature {summary['calibration']['temperature']:.4g} (model card)")
    if summary["skipped_unreadable"] or summary["unlabelled"]:
        lines.append(f"  skipped: {summary['skipped_unreadable']} unreadable, {summary['unlabelled']} unlabelled")
    return "\n".join(lines)


CONFIG = TrainConfig
run = train
