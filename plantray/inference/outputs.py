"""Predictions as Parquet: writing them (classify, nightly) and summarising what was written."""

from __future__ import annotations

import collections
import json

import pyarrow.dataset as pads
import ray

from plantray import storage
from plantray.columns import (
    CALIBRATION_METADATA_KEY,
    ERROR,
    MIN_CONFIDENCE_METADATA_KEY,
    PRECISION_METADATA_KEY,
    TAXON_RANK,
)


def write_predictions(ds: ray.data.Dataset, uri: str, rows_per_file: int) -> None:
    """Runs the pipeline into a Parquet dataset at ``uri`` (zstd, at least ``rows_per_file`` rows per file)."""
    fs, path = storage.arrow_fs(uri)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=rows_per_file,
                     arrow_parquet_args_fn=lambda: {"compression": "zstd"})


def _footer_values(dataset: pads.Dataset, key: bytes) -> str | None:
    """The distinct values of one Parquet footer metadata key over the files, comma-joined (None if absent)."""
    values = {(f.physical_schema.metadata or {}).get(key, b"").decode() for f in dataset.get_fragments()} - {""}
    return ",".join(sorted(values)) or None


def summarize(uri: str, seconds: float) -> dict:
    """Counts rows, failures by reason and identifications by rank, scanning only the ``error`` and
    ``taxonRank`` columns of the written output, and reads the precision the model actors ran in and the
    run's ``--min-confidence`` from the files' footers.

    Returns:
        ``images``, ``classified``, ``failed``, ``failures_by_reason``, ``by_rank`` (taxonRank -> rows),
        ``unknown`` (classified rows with no name: no rank reached ``--min-confidence``), ``min_confidence``
        (as written in the footers, e.g. ``"0.5"``; ``"0.0"`` = off),
        ``files``, ``seconds``, ``images_per_second``, ``precision``, ``calibration`` (the temperature
        applied, or ``none``).
    """
    fs, path = storage.arrow_fs(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    reasons: collections.Counter = collections.Counter()
    ranks: collections.Counter = collections.Counter()
    rows = 0
    columns = [ERROR] + ([TAXON_RANK] if TAXON_RANK in dataset.schema.names else [])
    for batch in dataset.to_batches(columns=columns):
        rows += batch.num_rows
        errors = batch.column(0).to_pylist()
        reasons.update(v for v in errors if v is not None)
        if len(columns) > 1:  # a classified row with a null rank was withheld: "unknown"
            ranks.update(r or "unknown" for r, e in zip(batch.column(1).to_pylist(), errors) if e is None)
    unknown = ranks.pop("unknown", 0)
    return {"images": rows, "classified": rows - sum(reasons.values()), "failed": sum(reasons.values()),
            "failures_by_reason": dict(reasons.most_common()), "by_rank": dict(ranks.most_common()),
            "unknown": unknown, "min_confidence": _footer_values(dataset, MIN_CONFIDENCE_METADATA_KEY),
            "files": len(dataset.files), "seconds": round(seconds, 2),
            "images_per_second": round(rows / seconds, 2) if seconds > 0 else None,
            "precision": _footer_values(dataset, PRECISION_METADATA_KEY), "calibration": _calibration(dataset)}
def _calibration(dataset: pads.Dataset) -> str | None:
    """What the files' footers say was applied: ``temperature 1.83`` or ``none`` (joined when they differ)."""
    seen = set()
    for f in dataset.get_fragments():
        raw = (f.physical_schema.metadata or {}).get(CALIBRATION_METADATA_KEY)
        if raw:
            c = json.loads(raw)
            seen.add(f"temperature {c['temperature']:.4g}" if c.get("method") == "temperature" else "none")
    return ",".join(sorted(seen)) or None
