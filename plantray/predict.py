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

from plantray.darwincore import dwc_columns, rollup
from plantray.decode import ERROR, PIXELS
from plantray.imaging import normalize
from plantray.io import SOURCE_COLUMN
from plantray.model import Artifact, head_name, load_artifact, set_head

CARD_METADATA_KEY = b"plantray.model_card"
PRECISION_METADATA_KEY = b"plantray.precision"  # what --precision auto resolved to on the actor's node
DWC_TERMS = ("identificationID", "identifiedBy", "dateIdentified", "identificationRemarks",
             "identificationVerificationStatus", "identificationType", "kingdom", "taxonRank")


def pick_device(use_gpu: bool) -> torch.device:
    """CUDA when asked for and present (Ray sets CUDA_VISIBLE_DEVICES per actor), else CPU."""
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def native_bf16_cpu() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays.

    Elsewhere oneDNN emulates bf16 and it is slower than fp32 (``bench/precision.py`` measures both).
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's capability probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device computes it natively, else ``fp32``; other values unchanged.

    Resolved where the model runs (each actor, on its own node), so a cluster mixing CPU generations
    gets the right choice per node. bench/precision.py measured Top-1 agreement with fp32 >= 99.5%.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16_cpu() else "fp32"


class FP32Head(torch.nn.Module):
    """A classifier head that runs in fp32 inside a bf16 autocast region.

    bf16 logits keep 8 significant bits, so close classes tie exactly and the Top-1 flips: 0.8% of
    images in bench/precision.py (ResNet50 at 224), all of them ties; with this head, 0.2%. The head
    is a tiny share of the FLOPs (bf16 speed-up x1.96 with it, x2.07 without, in separate runs).
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.head(x.float())


class Network:
    """A model on a device, ready for uint8 NHWC batches: normalisation, precision, memory format.

    Args:
        artifact: the loaded model directory.
        device: where to run.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (see :func:`resolve_precision`).
        threads: torch intra-op threads on CPU (None keeps torch's default).
    """

    def __init__(self, artifact: Artifact, device: torch.device, precision: str = "fp32",
                 threads: int | None = None):
        if threads and device.type == "cpu":
            torch.set_num_threads(threads)
        self.device, self.precision = device, resolve_precision(precision, device)
        self.preset = artifact.preset
        self.model = artifact.build().to(device)
        if self.precision == "bf16":
            head = self.model.get_submodule(head_name(self.model))
            set_head(self.model, FP32Head(head))
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
    """``map_batches`` actor: decoded pyarrow batch in, prediction and Darwin Core columns out.

    Args:
        model_uri: plantray model directory (loaded once per actor).
        top_k: how many ranked names/probabilities to keep.
        use_gpu: run on the actor's GPU when present.
        precision: ``fp32``, ``bf16`` or ``auto``.
        threads: CPU threads for torch in this actor.
        now_iso: the run's ``dateIdentified`` (one timestamp per run).
        rollup_threshold: below this top-1 probability, report the genus/family that clears it.
    """

    def __init__(self, model_uri: str, top_k: int = 5, use_gpu: bool = False, precision: str = "fp32",
                 threads: int | None = None, now_iso: str = "", rollup_threshold: float = 0.0):
        self.artifact = load_artifact(model_uri)
        self.net = Network(self.artifact, pick_device(use_gpu), precision, threads)
        self.top_k = min(top_k, len(self.artifact.labels))
        self.now_iso, self.rollup_threshold = now_iso, rollup_threshold
        self.metadata = {CARD_METADATA_KEY: json.dumps(self.artifact.card).encode(),
                         PRECISION_METADATA_KEY: self.net.precision.encode()}

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        images, rows = stack_pixels(table.column(PIXELS).combine_chunks(), self.net.preset.crop_size)
        probs = self.net.probabilities(images) if len(rows) else torch.zeros((0, len(self.artifact.labels)))
        columns = self._prediction_columns(probs, rows, n)
        if self.rollup_threshold > 0:
            columns.update(self._rollup_columns(probs.numpy(), rows, n))
        columns.update(self._darwin_core_columns(table, columns))
        out = table.drop_columns([PIXELS, ERROR, SOURCE_COLUMN])
        for name, array in columns.items():
            out = out.append_column(name, array)
        out = out.append_column(ERROR, table.column(ERROR))
        return out.replace_schema_metadata({**(out.schema.metadata or {}), **self.metadata})

    def _prediction_columns(self, probs: torch.Tensor, rows: np.ndarray, n: int) -> dict[str, pa.Array]:
        labels = self.artifact.labels
        conf, idx = probs.topk(self.top_k, dim=1)
        idx, conf = idx.numpy(), conf.numpy()
        top1 = [labels.names[i[0]] for i in idx]
        cols = {
            "scientificName": pa.array(scatter(top1, rows, n), pa.string()),
            "confidence": pa.array(scatter(conf[:, 0].tolist() if len(rows) else [], rows, n), pa.float32()),
            "topk_scientificName": pa.array(scatter([[labels.names[j] for j in r] for r in idx], rows, n),
                                            pa.list_(pa.string())),
            "topk_confidence": pa.array(scatter([r.tolist() for r in conf], rows, n), pa.list_(pa.float32())),
            "taxonRank": pa.array(scatter(["species"] * len(rows), rows, n), pa.string()),
        }
        if labels.has_genus:
            cols["genus"] = pa.array(scatter([labels.genus[i[0]] for i in idx], rows, n), pa.string())
        if labels.has_family:
            cols["family"] = pa.array(scatter([labels.family[i[0]] for i in idx], rows, n), pa.string())
        card = self.artifact.card
        for key, value in (("model_name", card["name"]), ("model_version", card["version"]),
                           ("model_sha256", self.artifact.sha256)):
            cols[key] = pa.array([value] * n, pa.string())
        return cols

    def _rollup_columns(self, probs: np.ndarray, rows: np.ndarray, n: int) -> dict[str, pa.Array]:
        """Names at the most specific rank whose probability clears the threshold (darwincore.rollup)."""
        labels = self.artifact.labels
        names, ranks, conf = rollup(probs, labels.genus, labels.family, self.rollup_threshold, species=labels.names)
        family_of = dict(zip(labels.genus, labels.family))
        genus = [nm if rk == "genus" else (nm.split()[0] if rk == "species" else None) for nm, rk in zip(names, ranks)]
        family = [family_of.get(g) if g else nm for g, nm in zip(genus, names)]
        cols = {"scientificName": pa.array(scatter(names, rows, n), pa.string()),
                "confidence": pa.array(scatter([float(c) for c in conf], rows, n), pa.float32()),
                "taxonRank": pa.array(scatter(ranks, rows, n), pa.string())}
        if labels.has_genus:
            cols["genus"] = pa.array(scatter(genus, rows, n), pa.string())
        if labels.has_family:
            cols["family"] = pa.array(scatter(family, rows, n), pa.string())
        return cols

    def _darwin_core_columns(self, table: pa.Table, columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
        """identificationID, identifiedBy, dateIdentified, remarks and the other identification terms."""
        batch = {"image_uri": np.asarray(table.column("image_uri").to_pylist(), dtype=object),
                 "error": np.asarray(table.column(ERROR).to_pylist(), dtype=object)}
        for key in ("scientificName", "confidence", "taxonRank"):
            batch[key] = np.asarray(columns[key].to_pylist(), dtype=object)
        batch["confidence"] = np.asarray([c if c is not None else np.nan for c in batch["confidence"]])
        out = dwc_columns(batch, self.artifact.card, self.now_iso)
        return {k: pa.array(out[k].tolist(), pa.string()) for k in DWC_TERMS}


def default_threads() -> int:
    """CPU threads available to this process (Ray sets OMP_NUM_THREADS from the task's num_cpus)."""
    return int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1
