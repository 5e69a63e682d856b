"""The model stage: actors that load a plantray model once and map decoded batches to predictions.

Ray's batch-inference pattern: ``__init__`` loads the model, ``__call__(batch) -> batch``. One family:
:class:`Predictor` (classify and nightly: ranked names, roll-up, provenance) and :class:`CropPredictor`
(evaluate: the ranking with the correct@k columns a report is scored from). Both average the softmax
over each image's crops (one crop unless the loader's view made more) in one forward pass. Rows that
failed upstream pass through with null prediction columns, so none is ever dropped.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from plantray import columns as col
from plantray import storage
from plantray.images.loader import stack_pixels
from plantray.inference.agreement import agreement
from plantray.inference.prior import Prior, drop_zero_ranks
from plantray.inference.ranking import rollup, top_k_indices, withhold
from plantray.model.artifact import load_artifact
from plantray.model.network import Network, softmax
from plantray.model.precision import pick_device


def scatter(values: list, rows: np.ndarray, n: int) -> list:
    """Places ``values`` at ``rows`` in a list of ``n`` Nones."""
    out = [None] * n
    for i, v in zip(rows, values):
        out[i] = v
    return out


def with_absolute_uri(table: pa.Table) -> pa.Table:
    """Adds ``image_uri_absolute`` after ``image_uri``: the resolved ``_source`` as an absolute URI."""
    if col.IMAGE_URI_ABSOLUTE in table.column_names:
        return table
    absolute = pa.array([storage.absolute_uri(u) for u in table.column(col.SOURCE_COLUMN).to_pylist()], pa.string())
    at = table.column_names.index(col.IMAGE_URI) + 1 if col.IMAGE_URI in table.column_names else 0
    return table.add_column(at, col.IMAGE_URI_ABSOLUTE, absolute)


class Predictor:
    """``map_batches`` actor: decoded pyarrow batch in, prediction columns out.

    Args:
        model_uri: plantray model directory (loaded once per actor).
        top_k: how many ranked names/probabilities to keep.
        use_gpu: run on the actor's GPU when present.
        precision: ``fp32``, ``bf16`` or ``auto``.
        threads: CPU threads for torch in this actor.
        crops: crops per image in ``_pixels`` (the loader's view); their softmax is averaged.
        rollup_threshold: below this top-1 probability, report the genus/family that clears it.
        min_confidence: the probability a reported name must reach; below it at every rank the row keeps
            its top-k but gets no name or rank (an honest "unknown"). Implies the roll-up at this threshold.
        finish: applied to each output batch (e.g. :func:`plantray.darwincore.terms.add_terms`).
        prior: a location prior (:class:`plantray.inference.prior.Prior`) applied before ranking.
        embeddings: directory/prefix where each batch's penultimate-layer vectors are written (see
            :meth:`write_embeddings`); None writes none.
        progress: a :class:`plantray.cluster.ProgressCounter` handle told each batch's rows and failures
            (the console's progress line), or None.
    """

    def __init__(self, model_uri: str, top_k: int = 5, use_gpu: bool = False, precision: str = "fp32",
                 threads: int | None = None, crops: int = 1, rollup_threshold: float = 0.0,
                 min_confidence: float = 0.0, finish: Callable[[pa.Table], pa.Table] | None = None,
                 prior: Prior | None = None, embeddings: str | None = None, progress=None):
        self.artifact = load_artifact(model_uri)
        self.progress = progress
        self.labels = self.artifact.labels
        self.net = Network(self.artifact, pick_device(use_gpu), precision, threads)
        self.top_k, self.crops = min(top_k, len(self.labels)), crops
        self.rollup_threshold, self.finish = rollup_threshold, finish
        self.temperature = self.artifact.temperature  # 1.0 for a model never calibrated
        self.embeddings = embeddings
        if embeddings:
            self.net.keep_features()
        self.metadata = {col.CARD_METADATA_KEY: json.dumps(self.artifact.card).encode(),
                         col.PRECISION_METADATA_KEY: self.net.precision.encode(),
                         col.CALIBRATION_METADATA_KEY: json.dumps(self.artifact.calibration
                                                                  or {"method": "none"}).encode()}
        self.prior = prior
        if prior is not None:
            self.metadata.update(prior.metadata())
        self.min_confidence = min_confidence  # the files' footers say which rows could become "unknown"
        self.metadata[col.MIN_CONFIDENCE_METADATA_KEY] = str(min_confidence).encode()

    def __call__(self, table: pa.Table) -> pa.Table:
        size = self.net.preset.crop_size
        images, rows = stack_pixels(table.column(col.PIXELS), (self.crops, size, size, 3))
        probs = self.probabilities(images, len(rows))
        if self.embeddings and len(rows):
            self.write_embeddings(table, rows)
        probs, prior_columns = self.apply_prior(table, probs, rows)
        out = with_absolute_uri(table).drop_columns([col.PIXELS, col.ERROR, col.SOURCE_COLUMN])
        for name, array in self.trim_ranking({**self.columns(table, probs, rows), **prior_columns}).items():
            out = out.append_column(name, array)
        out = out.append_column(col.ERROR, table.column(col.ERROR))
        if self.finish is not None:
            out = self.finish(out)
        self.report(table)
        return out.replace_schema_metadata({**(out.schema.metadata or {}), **self.metadata})

    def report(self, table: pa.Table) -> None:
        """Tells the progress counter this batch's rows and failed rows (counts only).

        Waits (at most a second) until the counter has them: Ray Data stops the pool as soon as the last batch
        is out, and a call still in flight from a stopped actor would be lost from the count.
        """
        if self.progress is None:
            return
        import ray

        errors = table.column(col.ERROR)
        try:
            ray.wait([self.progress.add.remote(table.num_rows, len(errors) - errors.null_count)], timeout=1.0)
        except Exception:  # a progress line must never cost a batch
            self.progress = None

    def probabilities(self, images: np.ndarray, images_valid: int) -> np.ndarray:
        """float32 ``[V, C]``: the softmax averaged over each valid image's crops, from ONE forward pass.

        The logits are divided by the card's temperature first (1.0 when uncalibrated), so every
        confidence, ranking probability and roll-up downstream is calibrated.
        """
        if images_valid == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        probs = self.net.probabilities(images, self.temperature)
        return probs.view(images_valid, self.crops, -1).mean(dim=1).numpy()

    def apply_prior(self, table: pa.Table, probs: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """The location prior (if any) on the averaged probabilities, before ranking; adds the ``prior`` column."""
        if self.prior is None:
            return probs, {}
        adjusted, status = self.prior.apply(table, probs, rows)
        return adjusted, {col.PRIOR: status}

    def trim_ranking(self, columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
        """``--prior restrict`` drops absent species: ranked names of probability 0 leave the top-k lists."""
        if self.prior is None or self.prior.mode != "restrict":
            return columns
        names, conf = drop_zero_ranks(columns[col.TOPK_NAMES].to_pylist(), columns[col.TOPK_CONFIDENCE].to_pylist(),
                                      columns[col.PRIOR].to_pylist())
        return {**columns, col.TOPK_NAMES: pa.array(names, pa.list_(pa.string())),
                col.TOPK_CONFIDENCE: pa.array(conf, pa.list_(pa.float32()))}

    def write_embeddings(self, table: pa.Table, rows: np.ndarray) -> str:
        """Writes the batch's decoded images' penultimate-layer vectors (the same forward as the probabilities,
        averaged over each image's crops) as one Parquet file ``<embeddings>/part-<id>.parquet``.

        Written here, by the actor, so the pipeline runs once and the prediction rows stay small: Ray Data
        has one sink per dataset, and splitting the vectors off the predictions downstream would mean
        materialising both. The file name derives from the model and the batch's images, so a retried batch
        rewrites its file instead of adding a duplicate.

        Args:
            table: the batch (``image_uri``, ``gbifID`` when present).
            rows: indexes of the decoded images in ``table``.
        Returns:
            The file's URI. Columns: ``image_uri``, ``gbifID`` (when the input has it), ``model_sha256``,
            ``embedding`` (fixed-size list of float16, the network's feature size).
        """
        feats = self.net.features.view(len(rows), self.crops, -1).mean(dim=1).numpy().astype(np.float16)
        keys = [c for c in (col.IMAGE_URI, col.GBIF_ID) if c in table.column_names]
        out = pa.table({c: table.column(c).take(pa.array(rows)) for c in keys})
        out = out.append_column(col.MODEL_SHA256, pa.array([self.artifact.sha256] * len(rows), pa.string()))
        out = out.append_column(col.EMBEDDING, pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()),
                                                                                 feats.shape[1]))
        name = uuid.uuid5(uuid.NAMESPACE_URL, "\n".join([self.artifact.sha256, *out.column(0).to_pylist()]))
        buf = io.BytesIO()
        pq.write_table(out, buf, compression="zstd")
        uri = storage.join(self.embeddings, f"part-{name}.parquet")
        storage.write_bytes(uri, buf.getvalue())
        return uri

    def columns(self, table: pa.Table, probs: np.ndarray, rows: np.ndarray) -> dict[str, pa.Array]:
        """The prediction columns of classify and nightly (see columns.PREDICTION_COLUMNS)."""
        n, names = table.num_rows, self.labels.names
        ranked = top_k_indices(probs, self.top_k)
        conf = np.take_along_axis(probs, ranked, axis=1)
        top1 = ranked[:, 0] if len(rows) else np.zeros(0, np.int64)
        cols = {
            col.SCIENTIFIC_NAME: pa.array(scatter([names[i] for i in top1], rows, n), pa.string()),
            col.CONFIDENCE: pa.array(scatter(conf[:, 0].tolist() if len(rows) else [], rows, n), pa.float32()),
            col.TOPK_NAMES: pa.array(scatter([[names[j] for j in r] for r in ranked], rows, n),
                                     pa.list_(pa.string())),
            col.TOPK_CONFIDENCE: pa.array(scatter([r.tolist() for r in conf], rows, n), pa.list_(pa.float32())),
            col.TAXON_RANK: pa.array(scatter(["species"] * len(rows), rows, n), pa.string()),
        }
        if self.labels.has_genus:
            cols[col.GENUS] = pa.array(scatter([self.labels.genus[i] for i in top1], rows, n), pa.string())
        if self.labels.has_family:
            cols[col.FAMILY] = pa.array(scatter([self.labels.family[i] for i in top1], rows, n), pa.string())
        if self.rollup_threshold > 0 or self.min_confidence > 0:
            cols.update(self._rollup_columns(probs, rows, n))
        cols.update(self._taxon_columns(table, cols[col.SCIENTIFIC_NAME], cols[col.TAXON_RANK], rows))
        card = self.artifact.card
        for key, value in ((col.MODEL_NAME, card["name"]), (col.MODEL_VERSION, card["version"]),
                           (col.MODEL_SHA256, self.artifact.sha256)):
            cols[key] = pa.array([value] * n, pa.string())
        return cols

    def _taxon_columns(self, table: pa.Table, names: pa.Array, ranks: pa.Array, rows: np.ndarray) -> dict:
        """The reported species' taxonID, scientificNameID and the checklist they come from (nameAccordingTo[ID];
        from the labels; null at genus/family rank), and
        ``publisher_agreement`` with the input's own scientificName (null for rows that failed)."""
        index = {name: i for i, name in enumerate(self.labels.names)}
        names, ranks = names.to_pylist(), ranks.to_pylist()
        species = [index[nm] if rk == "species" and nm in index else None for nm, rk in zip(names, ranks)]
        publisher = next((table.column(c).to_pylist() for c in col.PUBLISHER_NAMES if c in table.column_names),
                         [None] * table.num_rows)
        ok = np.zeros(table.num_rows, bool)
        ok[rows] = True
        def per_label(values: list) -> pa.Array:
            return pa.array([values[i] if i is not None else None for i in species], pa.string())

        return {
            col.TAXON_ID: per_label(self.labels.taxon_id),
            col.SCIENTIFIC_NAME_ID: per_label(self.labels.scientific_name_id),
            col.NAME_ACCORDING_TO: per_label(self.labels.name_according_to),
            col.NAME_ACCORDING_TO_ID: per_label(self.labels.name_according_to_id),
            col.PUBLISHER_AGREEMENT: pa.array([agreement(nm, rk, pub) if good else None
                                               for nm, rk, pub, good in zip(names, ranks, publisher, ok)], pa.string()),
        }

    def _rollup_columns(self, probs: np.ndarray, rows: np.ndarray, n: int) -> dict[str, pa.Array]:
        """Names at the most specific rank whose probability clears the threshold (inference.ranking).

        The threshold is the larger of ``rollup_threshold`` and ``min_confidence``; rows whose reported
        name is still below ``min_confidence`` get null name, rank, genus and family (:func:`withhold`).
        """
        labels = self.labels
        threshold = max(self.rollup_threshold, self.min_confidence)
        names, ranks, conf = rollup(probs, labels.genus, labels.family, threshold, species=labels.names)
        names, ranks = withhold(names, ranks, conf, self.min_confidence)
        family_of = dict(zip(labels.genus, labels.family))
        genus = [nm if rk == "genus" else (nm.split()[0] if rk == "species" else None) for nm, rk in zip(names, ranks)]
        family = [family_of.get(g) if g else nm for g, nm in zip(genus, names)]
        cols = {col.SCIENTIFIC_NAME: pa.array(scatter(names, rows, n), pa.string()),
                col.CONFIDENCE: pa.array(scatter([float(c) for c in conf], rows, n), pa.float32()),
                col.TAXON_RANK: pa.array(scatter(ranks, rows, n), pa.string())}
        if labels.has_genus:
            cols[col.GENUS] = pa.array(scatter(genus, rows, n), pa.string())
        if labels.has_family:
            cols[col.FAMILY] = pa.array(scatter(family, rows, n), pa.string())
        return cols


class CropPredictor(Predictor):
    """The evaluation variant: ranked predictions and ``correct@k`` against the row's true label.

    Args:
        model_label: the model's name in the report.
        ks: the Top-k reported; the ranking keeps max(ks) labels.
        others: as :class:`Predictor`.
    """

    def __init__(self, model_uri: str, model_label: str, ks: tuple = (1, 5), **kwargs):
        super().__init__(model_uri, top_k=max(ks), **kwargs)
        self.label, self.ks = model_label, tuple(ks)
        self.genus = dict(zip(self.labels.names, self.labels.genus))
        self.family = dict(zip(self.labels.names, self.labels.family))
        self.index = {name: i for i, name in enumerate(self.labels.names)}
        self.raw = np.zeros((0, len(self.labels)), np.float32)

    def probabilities(self, images: np.ndarray, images_valid: int) -> np.ndarray:
        """As :meth:`Predictor.probabilities`; the raw softmax (T = 1) of the same pass is kept in ``raw``
        for this batch's ``uncalibrated_*`` columns."""
        if images_valid == 0:
            self.raw = np.zeros((0, len(self.labels)), np.float32)
            return self.raw
        logits = self.net.logits(images)
        self.raw = softmax(logits).view(images_valid, self.crops, -1).mean(dim=1).numpy()
        return softmax(logits, self.temperature).view(images_valid, self.crops, -1).mean(dim=1).numpy()

    def _calibration_columns(self, probs: np.ndarray, rows: np.ndarray, true: list, n: int) -> dict:
        """Per image: probability of the true class and Brier contribution, calibrated and raw
        (evaluation.calibration aggregates them; the rows hold known labels only)."""
        index = np.array([self.index.get(true[r], -1) for r in rows], np.int64)
        known = index >= 0
        cols = {}
        for (p_col, brier_col), p in (((col.TRUE_PROBABILITY, col.BRIER), probs),
                                      ((col.UNCALIBRATED_TRUE_PROBABILITY, col.UNCALIBRATED_BRIER), self.raw)):
            p64 = p.astype(np.float64)
            p_true = np.where(known, p64[np.arange(len(p64)), np.maximum(index, 0)], np.nan)
            brier = (p64**2).sum(axis=1) - 2 * p_true + 1
            cols[p_col] = pa.array(scatter(p_true.tolist(), rows, n), pa.float64())
            cols[brier_col] = pa.array(scatter(brier.tolist(), rows, n), pa.float64())
        cols[col.UNCALIBRATED_CONFIDENCE] = pa.array(scatter(self.raw.max(axis=1, initial=0).tolist(), rows, n),
                                                     pa.float64())
        return cols

    def columns(self, table: pa.Table, probs: np.ndarray, rows: np.ndarray) -> dict[str, pa.Array]:
        n = table.num_rows
        ranked = top_k_indices(probs, self.top_k)
        conf = np.take_along_axis(probs, ranked, axis=1)
        names = scatter([[self.labels.names[j] for j in r] for r in ranked], rows, n)
        true = table.column(col.SCIENTIFIC_NAME).to_pylist()
        top1 = [r[0] if r else None for r in names]
        cols = {
            "model": pa.array([self.label] * n, pa.string()),
            col.TOPK_NAMES: pa.array(names, pa.list_(pa.string())),
            col.TOPK_CONFIDENCE: pa.array(scatter([c.tolist() for c in conf], rows, n), pa.list_(pa.float32())),
            "predicted_genus": pa.array([self.genus.get(p) if p else None for p in top1], pa.string()),
            "predicted_family": pa.array([self.family.get(p) if p else None for p in top1], pa.string()),
        }
        # The test set's own genus/family when it has them, else the model's for the true species.
        for rank, lookup in ((col.GENUS, self.genus), (col.FAMILY, self.family)):
            given = table.column(rank).to_pylist()
            cols[f"true_{rank}"] = pa.array([g or lookup.get(t) for g, t in zip(given, true)], pa.string())
        for k in self.ks:
            cols[f"correct@{k}"] = pa.array([None if r is None else t in r[:k] for r, t in zip(names, true)],
                                            pa.bool_())
        cols.update(self._calibration_columns(probs, rows, true, n))
        cols[col.MODEL_SHA256] = pa.array([self.artifact.sha256] * n, pa.string())
        return cols

    def apply_prior(self, table: pa.Table, probs: np.ndarray,
                    rows: np.ndarray) -> tuple[np.ndarray, dict[str, pa.Array]]:
        """Evaluation scores both: the ranking without the prior (the usual columns) and with it
        (``prior_topk_scientificName``, ``prior_correct@k``), side by side."""
        if self.prior is None:
            return probs, {}
        adjusted, status = self.prior.apply(table, probs, rows)
        n = table.num_rows
        ranked = top_k_indices(adjusted, self.top_k)
        names = scatter([[self.labels.names[j] for j in r] for r in ranked], rows, n)
        if self.prior.mode == "restrict":
            conf = scatter(np.take_along_axis(adjusted, ranked, axis=1).tolist(), rows, n)
            names, _ = drop_zero_ranks(names, conf, status.to_pylist())
        true = table.column(col.SCIENTIFIC_NAME).to_pylist()
        cols = {col.PRIOR: status, col.PRIOR_TOPK_NAMES: pa.array(names, pa.list_(pa.string()))}
        for k in self.ks:
            cols[f"prior_correct@{k}"] = pa.array([None if r is None else t in r[:k] for r, t in zip(names, true)],
                                                  pa.bool_())
        return probs, cols

    def trim_ranking(self, columns: dict[str, pa.Array]) -> dict[str, pa.Array]:
        return columns  # the ranking without the prior stays whole; the prior's is trimmed in apply_prior
