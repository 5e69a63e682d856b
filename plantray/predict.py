"""The model stage: an actor that loads a plantray model once and maps decoded batches to predictions.

Follows Ray's batch-inference pattern: ``__init__`` loads the model, ``__call__(batch) -> batch``.
Rows that failed upstream pass through with null prediction columns, so none is ever dropped.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import torch

from plantray.decode import ERROR, PIXELS
from plantray.imaging import normalize
from plantray.io import SOURCE_COLUMN
from plantray.model import Artifact, load_artifact

CARD_METADATA_KEY = b"plantray.model_card"


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


class Network:
    """A model on a device, ready for uint8 NHWC batches: normalisation, precision, memory format.

    Args:
        artifact: the loaded model directory.
        device: where to run.
        precision: ``fp32`` or ``bf16`` (autocast).
        threads: torch intra-op threads on CPU (None keeps torch's default).
    """

    def __init__(self, artifact: Artifact, device: torch.device, precision: str = "fp32",
                 threads: int | None = None):
        if threads and device.type == "cpu":
            torch.set_num_threads(threads)
        self.device, self.precision = device, precision
        self.preset = artifact.preset
        self.model = artifact.build().to(device)
        # channels_last lets cuDNN/oneDNN pick their fastest convolution kernels.
        self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 softmax probabilities [N, C] on CPU."""
        x = torch.from_numpy(images)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = normalize(x, self.preset.mean, self.preset.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu()


def stack_pixels(pixels: pa.Array, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows of a ``_pixels`` column as uint8 [N, size, size, 3], plus their row indices."""
    valid = np.flatnonzero(pixels.is_valid().to_numpy(zero_copy_only=False))
    if len(valid) == 0:
        return np.zeros((0, size, size, 3), np.uint8), valid
    chunks = pixels.take(pa.array(valid)).to_pylist()
    images = np.frombuffer(b"".join(chunks), np.uint8).reshape(len(valid), size, size, 3)
    return images, valid


def scatter(values: list, rows: np.ndarray, n: int) -> list:
    """Places ``values`` at ``rows`` in a list of ``n`` Nones."""
    out = [None] * n
    for i, v in zip(rows, values):
        out[i] = v
    return out


class Predictor:
    """``map_batches`` actor: decoded pyarrow batch in, prediction columns out.

    Args:
        model_uri: plantray model directory (loaded once per actor).
        top_k: how many ranked names/probabilities to keep.
        use_gpu: run on the actor's GPU when present.
        precision: ``fp32`` or ``bf16``.
        threads: CPU threads for torch in this actor.
        identified: run-wide Darwin Core identification values (``dateIdentified``...).
        extra_columns: optional callable(probs, rows, artifact) -> dict of per-row columns
            (Darwin Core roll-up for archives).
    """

    def __init__(self, model_uri: str, top_k: int = 5, use_gpu: bool = False, precision: str = "fp32",
                 threads: int | None = None, identified: dict | None = None, extra_columns=None):
        self.artifact = load_artifact(model_uri)
        self.net = Network(self.artifact, pick_device(use_gpu), precision, threads)
        self.top_k = min(top_k, len(self.artifact.labels))
        self.identified = identified or {}
        self.extra_columns = extra_columns
        self.metadata = {CARD_METADATA_KEY: json.dumps(self.artifact.card).encode()}

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        images, rows = stack_pixels(table.column(PIXELS).combine_chunks(), self.net.preset.crop_size)
        probs = self.net.probabilities(images) if len(rows) else torch.zeros((0, len(self.artifact.labels)))
        columns = self._prediction_columns(probs, rows, n)
        if self.extra_columns is not None:
            columns.update(self.extra_columns(probs.numpy(), rows, n, self.artifact))
        out = table.drop_columns([PIXELS, ERROR, SOURCE_COLUMN])
        for name, array in columns.items():
            out = out.append_column(name, array)
        out = out.append_column(ERROR, table.column(ERROR))
        return out.replace_schema_metadata({**(out.schema.metadata or {}), **self.metadata})

    def _prediction_columns(self, probs: torch.Tensor, rows: np.ndarray, n: int) -> dict[str, pa.Array]:
        labels = self.artifact.labels
        conf, idx = probs.topk(self.top_k, dim=1) if len(rows) else (probs[:, :0], probs[:, :0].long())
        idx, conf = idx.numpy(), conf.numpy()
        top1 = [labels.names[i[0]] for i in idx]
        ok = pa.array(np.isin(np.arange(n), rows))
        cols = {
            "scientificName": pa.array(scatter(top1, rows, n), pa.string()),
            "confidence": pa.array(scatter(conf[:, 0].tolist() if len(rows) else [], rows, n), pa.float32()),
            "topk_scientificName": pa.array(scatter([[labels.names[j] for j in r] for r in idx], rows, n),
                                            pa.list_(pa.string())),
            "topk_confidence": pa.array(scatter([r.tolist() for r in conf], rows, n), pa.list_(pa.float32())),
        }
        if labels.has_genus:
            cols["genus"] = pa.array(scatter([labels.genus[i[0]] for i in idx], rows, n), pa.string())
        if labels.has_family:
            cols["family"] = pa.array(scatter([labels.family[i[0]] for i in idx], rows, n), pa.string())
        for key, value in self.identified.items():
            cols[key] = pa.array([value if k else None for k in ok.to_pylist()], pa.string())
        card = self.artifact.card
        for key, value in (("model_name", card["name"]), ("model_version", card["version"]),
                           ("model_sha256", self.artifact.sha256)):
            cols[key] = pa.array([value] * n, pa.string())
        return cols


def default_threads() -> int:
    """CPU threads available to this process (Ray sets OMP_NUM_THREADS from the task's num_cpus)."""
    return int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1
