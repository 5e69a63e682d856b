"""Per-epoch training metrics beside the model: ``metrics.jsonl``, ``metrics.csv`` and ``training_curve.png``."""

from __future__ import annotations

import csv
import io
import json

from plantray import storage

METRICS_JSONL, METRICS_CSV, CURVE_PNG = "metrics.jsonl", "metrics.csv", "training_curve.png"
CSV_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "images", "skipped_unreadable",
               "images_per_second", "seconds", "restored_epoch", "workers")


def format_epoch(m: dict, epochs: int) -> str:
    """The driver's one progress line for an epoch's metrics."""
    line = (f"epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f}  acc {m['accuracy']:.3f}  "
            f"{m['images_per_second']:.1f} images/s")
    if "val_loss" in m:
        line += f"  val_loss {m['val_loss']:.4f}"
    if "val_accuracy" in m:
        line += f"  val_acc {m['val_accuracy']:.3f}"
    if m.get("skipped_unreadable"):
        line += f"  skipped {m['skipped_unreadable']}"
    return line


def write_metrics(uri: str, history: list[dict]) -> None:
    """Writes the per-epoch history as JSON lines and CSV under directory ``uri``."""
    lines = "".join(json.dumps(m, default=str) + "\n" for m in history)
    storage.write_bytes(storage.join(uri, METRICS_JSONL), lines.encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    storage.write_bytes(storage.join(uri, METRICS_CSV), buf.getvalue().encode())


def plot_curve(uri: str, history: list[dict], title: str = "") -> None:
    """Draws loss and accuracy per epoch to ``training_curve.png`` under directory ``uri``: training figures,
    and validation loss and accuracy when the run had ``--val``.

    Args:
        uri: the model directory.
        history: per-epoch metric dicts (``epoch``, ``loss``, ``accuracy``, optional ``val_loss`` and
            ``val_accuracy``).
        title: figure title (the run name).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    # Training figures are taken on augmented crops while the weights change during the epoch (and with
    # --class-balance the loss is re-weighted); validation ones on the evaluation crops after the epoch.
    for ax, key, name in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "accuracy", "top-1 accuracy")):
        validated = [m for m in history if f"val_{key}" in m]  # every epoch, or every --val-every
        if validated:  # open squares, dashed: a training line on top stays visible
            ax.plot([m["epoch"] for m in validated], [m[f"val_{key}"] for m in validated], "s--", ms=9, mfc="none",
                    color="tab:orange", label="validation (--val, after the epoch)")
        ax.plot(epochs, [m[key] for m in history], "o-", ms=5, color="tab:blue",
                label="training (augmented, during the epoch)")
        ax.set(xlabel="epoch", ylabel=name, title=name.split()[-1])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.legend(fontsize=8)
    ax_loss.set_ylim(bottom=0)
    ax_acc.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(storage.join(uri, CURVE_PNG), buf.getvalue())
