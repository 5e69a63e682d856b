"""The model stage: actors that load a plantray model once and map decoded batches to predictions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import torch

from plantray.columns import CARD_METADATA_KEY, DWC_TERMS, ERROR, PIXELS, PRECISION_METADATA_KEY, SOURCE_COLUMN
from plantray.darwincore.terms import dwc_columns
from plantray.evaluation.metrics import top_k_indices
from plantray.inference.rollup import rollup
from plantray.model.artifact import load_artifact
from plantray.model.network import Network
from plantray.model.precision import pick_device


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


def average_probabilities(net: Network, crops: np.ndarray, n: int) -> torch.Tensor:
    """Softmax averaged over each image's ``n`` crops, from ONE forward pass over all crops.

    Args:
        net: the model on its device.
        crops: uint8 ``[N * n, S, S, 3]``, the crops of image i at rows ``i*n .. i*n+n-1``.
        n: crops per image.
    Returns:
        float32 ``[N, C]`` on CPU.
    """
    probs = net.probabilities(crops)
    return probs.view(len(crops) // n, n, -1).mean(dim=1)


class CropPredictor:
    """``map_batches`` actor: crop batches in, ranked predictions and correct@k columns out.

    Args:
        model_uri: plantray model directory (loaded once per actor).
        model_label: the model's name in the report.
        crops: crops per image (1 or 10).
        ks: the Top-k reported; the ranking keeps max(ks) labels.
        use_gpu, precision, threads: as :class:`plantray.predict.Predictor`.
    """

    def __init__(self, model_uri: str, model_label: str, crops: int, ks: tuple = (1, 5), use_gpu: bool = False,
                 precision: str = "fp32", threads: int | None = None):
        self.artifact = load_artifact(model_uri)
        self.net = Network(self.artifact, pick_device(use_gpu), precision, threads)
        self.label, self.crops, self.ks = model_label, crops, tuple(ks)
        labels = self.artifact.labels
        self.names = np.array(labels.names, dtype=object)
        self.genus = dict(zip(labels.names, labels.genus))
        self.family = dict(zip(labels.names, labels.family))

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        size = self.net.preset.crop_size
        pixels = table.column(PIXELS).combine_chunks()
        images, rows = _stack_crops(pixels, size, self.crops)
        k = min(max(self.ks), len(self.names))
        if len(rows):
            probs = average_probabilities(self.net, images, self.crops).numpy()
            ranked = top_k_indices(probs, k)
            conf = np.take_along_axis(probs, ranked, axis=1)
        else:
            ranked, conf = np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        out = table.drop_columns([PIXELS, ERROR, SOURCE_COLUMN])
        for name, array in self._columns(table, ranked, conf, rows, n).items():
            out = out.append_column(name, array)
        return out.append_column(ERROR, table.column(ERROR))

    def _columns(self, table: pa.Table, ranked: np.ndarray, conf: np.ndarray, rows: np.ndarray,
                 n: int) -> dict[str, pa.Array]:
        names = [self.names[r].tolist() for r in ranked]
        true = table.column("scientificName").to_pylist()
        top1 = scatter([r[0] for r in names], rows, n)
        cols = {
            "model": pa.array([self.label] * n, pa.string()),
            "topk_scientificName": pa.array(scatter(names, rows, n), pa.list_(pa.string())),
            "topk_confidence": pa.array(scatter([c.tolist() for c in conf], rows, n), pa.list_(pa.float32())),
            "predicted_genus": pa.array([self.genus.get(p) if p else None for p in top1], pa.string()),
            "predicted_family": pa.array([self.family.get(p) if p else None for p in top1], pa.string()),
        }
        # The test set's own genus/family when it has them, else the model's for the true species.
        for col, lookup in (("genus", self.genus), ("family", self.family)):
            given = table.column(col).to_pylist()
            cols[f"true_{col}"] = pa.array([g or lookup.get(t) for g, t in zip(given, true)], pa.string())
        ranked_rows = scatter(names, rows, n)
        for k in self.ks:
            cols[f"correct@{k}"] = pa.array([None if r is None else t in r[:k] for r, t in zip(ranked_rows, true)],
                                            pa.bool_())
        cols["model_sha256"] = pa.array([self.artifact.sha256] * n, pa.string())
        return cols


def _stack_crops(pixels: pa.Array, size: int, crops: int) -> tuple[np.ndarray, np.ndarray]:
    """Valid rows' crops as uint8 ``[V * crops, size, size, 3]``, plus the valid row indices."""
    valid = np.flatnonzero(pixels.is_valid().to_numpy(zero_copy_only=False))
    if len(valid) == 0:
        return np.zeros((0, size, size, 3), np.uint8), valid
    data = b"".join(pixels.take(pa.array(valid)).to_pylist())
    return np.frombuffer(data, np.uint8).reshape(len(valid) * crops, size, size, 3), valid
