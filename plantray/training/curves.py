"""Per-epoch training metrics beside the model: ``metrics.jsonl``, ``metrics.csv`` and ``training_curve.png``."""

from __future__ import annotations

import csv
import io
import json

from plantray import storage

METRICS_JSONL, METRICS_CSV, CURVE_PNG = "metrics.jsonl", "metrics.csv", "training_curve.png"
CSV_COLUMNS = ("epoch", "loss", "accuracy", "val_accuracy", "lr", "images", "skipped_unreadable",
               "images_per_second", "seconds", "restored_epoch", "workers")


def format_epoch(m: dict, epochs: int) -> str:
    """The driver's one progress line for an epoch's metrics."""
    line = (f"epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f}  acc {m['accuracy']:.3f}  "
            f"{m['images_per_second']:.1f} images/s")
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
    """Draws loss and accuracy per epoch to ``training_curve.png`` under directory ``uri``.

    Args:
        uri: the model directory.
        history: per-epoch metric dicts (``epoch``, ``loss``, ``accuracy``, optional ``val_accuracy``).
        title: figure title (the run name).
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["loss"] for m in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [m["accuracy"] for m in history], marker="o", label="train (augmented)")
    if any("val_accuracy" in m for m in history):
        ax_acc.plot(epochs, [m.get("val_accuracy") for m in history], marker="s", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes(storage.join(uri, CURVE_PNG), buf.getvalue())
