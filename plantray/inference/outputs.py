"""Predictions as Parquet: writing them (classify, nightly) and summarising what was written."""

from __future__ import annotations

import collections
import json

import pyarrow.dataset as pads
import ray

from plantray import storage
from plantray.columns import CALIBRATION_METADATA_KEY, ERROR, PRECISION_METADATA_KEY


def write_predictions(ds: ray.data.Dataset, uri: str, rows_per_file: int) -> None:
    """Runs the pipeline into a Parquet dataset at ``uri`` (zstd, at least ``rows_per_file`` rows per file)."""
    fs, path = storage.arrow_fs(uri)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=rows_per_file,
                     arrow_parquet_args_fn=lambda: {"compression": "zstd"})


def summarize(uri: str, seconds: float) -> dict:
    """Counts rows and failures by reason, scanning only the ``error`` column of the written output,
    and reads the precision the model actors ran in from the files' footers.

    Returns:
        ``images``, ``classified``, ``failed``, ``failures_by_reason``, ``files``, ``seconds``,
        ``images_per_second``, ``precision``, ``calibration`` (the temperature applied, or ``none``).
    """
    fs, path = storage.arrow_fs(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    reasons: collections.Counter = collections.Counter()
    rows = 0
    for batch in dataset.to_batches(columns=[ERROR]):
        rows += batch.num_rows
        reasons.update(v for v in batch.column(0).to_pylist() if v is not None)
    precision = {(f.physical_schema.metadata or {}).get(PRECISION_METADATA_KEY, b"").decode()
                 for f in dataset.get_fragments()} - {""}
    return {"images": rows, "classified": rows - sum(reasons.values()), "failed": sum(reasons.values()),
            "failures_by_reason": dict(reasons.most_common()), "files": len(dataset.files),
            "seconds": round(seconds, 2), "images_per_second": round(rows / seconds, 2) if seconds > 0 else None,
            "precision": ",".join(sorted(precision)) or None, "calibration": _calibration(dataset)}


def _calibration(dataset: pads.Dataset) -> str | None:
    """What the files' footers say was applied: ``temperature 1.83`` or ``none`` (joined when they differ)."""
    seen = set()
    for f in dataset.get_fragments():
        raw = (f.physical_schema.metadata or {}).get(CALIBRATION_METADATA_KEY)
        if raw:
            c = json.loads(raw)
            seen.add(f"temperature {c['temperature']:.4g}" if c.get("method") == "temperature" else "none")
    return ",".join(sorted(seen)) or None
