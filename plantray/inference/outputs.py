"""Predictions as Parquet: writing them (classify, nightly), publishing them chunk by chunk, telling a complete
output from a partial one, and summarising what was written.

Layout of a classify OUTPUT (names starting with ``_`` or ``.`` are skipped by pyarrow, Spark, Hive, DuckDB
and Polars readers of the directory, so only published data files are read)::

    OUTPUT/_plantray_progress.json   the plan, written before any work: input, key, model, chunks
    OUTPUT/_staging/<chunk>/...      a chunk's files while its pipeline runs
    OUTPUT/chunk-<chunk>-<name>      published data files (moved out of staging)
    OUTPUT/_chunks/<chunk>.json      a chunk's commit marker, listing its files, written after they moved
    OUTPUT/_plantray_run.json        the run record, at the end
    OUTPUT/_SUCCESS                  written last: the run is complete (Hadoop's convention)

A data file without a marker belongs to a chunk that was being published when the run died; a resumed run
deletes it (and the staging area) and redoes that chunk, so a run loses at most the chunk in flight.
"""

from __future__ import annotations

import collections
import json
from typing import TYPE_CHECKING

import pyarrow.dataset as pads

from plantray import storage
from plantray.columns import (
    CALIBRATION_METADATA_KEY,
    ERROR,
    MIN_CONFIDENCE_METADATA_KEY,
    PRECISION_METADATA_KEY,
    TAXON_RANK,
)
from plantray.config import ConfigError
from plantray.storage.pause import pause_point

if TYPE_CHECKING:  # the readers (export dwca) check outputs without starting Ray
    import ray

SUCCESS = "_SUCCESS"
PROGRESS = "_plantray_progress.json"
STAGING = "_staging"
MARKERS = "_chunks"


class PartialOutput(ConfigError):
    """A classify OUTPUT whose run has not committed every chunk (killed, or still running)."""


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


def _marker_uri(uri: str, chunk: int) -> str:
    return storage.join(uri, MARKERS, f"{chunk:06d}.json")


def staging_dir(uri: str, chunk: int) -> str:
    """Where one chunk's pipeline writes its files before they are published."""
    return storage.join(uri, STAGING, f"{chunk:06d}")


def write_progress(uri: str, plan: dict) -> None:
    """Records a run's plan in ``OUTPUT/_plantray_progress.json`` (before any data is written)."""
    storage.write_bytes(storage.join(uri, PROGRESS), json.dumps(plan, indent=2, sort_keys=True).encode())


def read_progress(uri: str) -> dict | None:
    """The plan recorded by :func:`write_progress`; None when OUTPUT holds none."""
    try:
        return json.loads(storage.read_bytes(storage.join(uri, PROGRESS)))
    except (FileNotFoundError, NotADirectoryError):  # nothing there, or ``uri`` is a single file
        return None


def committed_chunks(uri: str) -> dict[int, list[str]]:
    """Chunk -> its published file names, for every chunk whose marker exists."""
    markers = storage.join(uri, MARKERS)
    if not storage.exists(markers):
        return {}
    done = {}
    for marker in storage.list_files(markers):
        entry = json.loads(storage.read_bytes(marker))
        done[entry["chunk"]] = entry["files"]
    return done


def discard_uncommitted(uri: str) -> list[str]:
    """Removes the staging area and every published data file no marker lists (a chunk cut short).

    Returns:
        The data files removed (URIs).
    """
    storage.remove(storage.join(uri, STAGING))
    kept = {name for files in committed_chunks(uri).values() for name in files}
    removed = [f for f in storage.list_files(uri) if f.rstrip("/").rsplit("/", 1)[-1] not in kept]
    for f in removed:
        storage.remove(f)
    return removed


def publish_chunk(uri: str, chunk: int) -> list[str]:
    """Moves a chunk's staged files into OUTPUT, then writes its marker: the chunk's commit.

    A reader of OUTPUT may see a chunk's files before its marker (moves are one file at a time, and copies
    on object stores); plantray's readers go by the markers (:func:`check_complete`), others by ``_SUCCESS``.

    Returns:
        The published file names.
    """
    pause_point(f"staged:{chunk}", uri)
    names = []
    for src in storage.list_files(staging_dir(uri, chunk)):
        name = f"chunk-{chunk:06d}-" + src.rstrip("/").rsplit("/", 1)[-1]
        storage.move(src, storage.join(uri, name))
        names.append(name)
    pause_point(f"published:{chunk}", uri)
    storage.write_bytes(_marker_uri(uri, chunk), json.dumps({"chunk": chunk, "files": names}).encode())
    storage.remove(staging_dir(uri, chunk))
    return names


def mark_success(uri: str) -> None:
    """Writes ``OUTPUT/_SUCCESS`` (empty) and drops the staging area: the run is complete."""
    storage.remove(storage.join(uri, STAGING))
    storage.write_bytes(storage.join(uri, SUCCESS), b"")


def completion(uri: str) -> tuple[bool, int, int] | None:
    """How far a classify run into ``uri`` got: (``_SUCCESS`` present, chunks committed, chunks planned).

    Returns:
        None when ``uri`` holds no classify progress file (a hand-made dataset, a single file, or an output
        of plantray before chunked runs): nothing tells it is partial.
    """
    progress = read_progress(uri)
    if progress is None:
        return None
    done = storage.exists(storage.join(uri, SUCCESS))
    return done, len(committed_chunks(uri)), progress["chunks"]


def check_complete(uri: str) -> None:
    """Refuses a classify OUTPUT whose run has not committed every chunk; every plantray reader calls it.

    Complete means ``_SUCCESS`` is present, or (for classify's own aggregation, which runs before it writes
    ``_SUCCESS``) every planned chunk has its marker. Datasets without a progress file pass.

    Raises:
        PartialOutput: naming how many chunks are committed and how to finish the run.
    """
    state = completion(uri)
    if state is None or state[0] or state[1] >= state[2]:
        return
    raise PartialOutput(f"{uri!r} is a partial plantray classify output ({state[1]} of {state[2]} chunks "
                        f"committed, no {SUCCESS}): the run was killed or is still running. Finish it with "
                        f"`plantray classify --resume` (same --input, --model and --output), then read it")
