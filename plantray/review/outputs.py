"""What ``review apply`` writes: the applied predictions (a Parquet rewrite, or a nightly table's new commit)
and the training manifest of the images people named.

- Parquet: every input file is rewritten, batch by batch (pyarrow; nothing collected), to a file of the same
  name in OUTPUT, with its footer metadata (the model card, precision, calibration), so one output row stands for
  each input row in the same order. OUTPUT gets classify's progress marker first and ``_SUCCESS`` last, so every
  plantray reader refuses it while it is being written or after a crash (:func:`plantray.inference.outputs.
  check_complete`).
- A nightly table: the decided rows, applied, are one Parquet file committed as a new Delta version with the
  application transaction ``(review-<digest of the decisions>, 0)``: applying the same decisions again finds the
  transaction and commits nothing. The rows carry that run id, so readers date them like any commit.
- The training manifest: ``image_uri`` (resolved against the classified input's directory), ``scientificName``,
  ``genus``, ``family``, ``taxonID`` and ``tag`` (when the predictions have it) of every image a person accepted
  or corrected to a species (or a name below); ``plantray train --data`` and ``calibrate --data`` read it as it is.
"""

from __future__ import annotations

import contextlib
import json
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from plantray import columns as col
from plantray import storage
from plantray.inference.outputs import PROGRESS, SUCCESS
from plantray.review.apply import apply_table, decided_mask, output_schema
from plantray.review.inputs import Predictions

MANIFEST_COLUMNS = (col.IMAGE_URI, col.SCIENTIFIC_NAME, col.GENUS, col.FAMILY, col.TAXON_ID, col.TAG)
TRAINABLE_RANKS = frozenset({"species", "subspecies", "variety", "form", "infraspecific name"})
_BATCH = 16_384


class TrainingManifest:
    """Writes the manifest of accepted and corrected images (Parquet, or CSV for a ``.csv`` URI), batch by batch.

    Args:
        uri: where to write it (None: no manifest, every call is a no-op).
        base: the directory relative ``image_uri`` values resolve against ("" keeps them as given).
        with_tag: whether the predictions carry the organ ``tag``.
    """

    def __init__(self, uri: str | None, base: str, with_tag: bool):
        self.uri, self.base = uri, base
        names = [c for c in MANIFEST_COLUMNS if c != col.TAG or with_tag]
        self.schema = pa.schema([(c, pa.string()) for c in names],
                                metadata={col.REVIEW_MANIFEST_METADATA_KEY: b"1"})
        self.counts = {"images": 0, "not_species": 0, "no_image": 0}
        self._raw = self._writer = None
        self._file = contextlib.ExitStack()

    def _open(self):
        # The file is published (renamed into place, or its upload completed) only by close().
        self._raw = self._file.enter_context(storage.open_for_write(self.uri))
        if self.uri.lower().endswith(".csv"):
            self._writer = pacsv.CSVWriter(self._raw, self.schema.remove_metadata())
        else:
            self._writer = pq.ParquetWriter(self._raw, self.schema, compression="zstd")

    def add(self, table: pa.Table) -> None:
        """Adds the accepted and corrected rows of an applied batch (species rank or below, with an image)."""
        if self.uri is None:
            return
        named = table.filter(decided_mask(table, (col.ACCEPTED, col.CORRECTED)))
        if not named.num_rows:
            return
        rows = named.to_pylist()
        imaged = [r for r in rows if r.get(col.IMAGE_URI)]
        kept = [r for r in imaged if r.get(col.TAXON_RANK) in TRAINABLE_RANKS]
        self.counts["no_image"] += len(rows) - len(imaged)
        self.counts["not_species"] += len(imaged) - len(kept)
        if not kept:
            return
        for r in kept:
            r[col.IMAGE_URI] = storage.resolve(r[col.IMAGE_URI], self.base) if self.base else r[col.IMAGE_URI]
        if self._writer is None:
            self._open()
        table = pa.Table.from_pylist([{c: r.get(c) for c in self.schema.names} for r in kept], schema=self.schema)
        parquet = isinstance(self._writer, pq.ParquetWriter)
        self._writer.write_table(table if parquet else table.replace_schema_metadata())
        self.counts["images"] += len(kept)

    def close(self) -> dict:
        """Finishes the file (an empty one with the header when no image qualified); returns the counts."""
        if self.uri is None:
            return {}
        if self._writer is None:
            self._open()
        self._writer.close()
        self._file.close()
        return {"uri": self.uri, **self.counts}


def _out_name(path: str, i: int) -> str:
    name = posixpath.basename(path)
    return name if name.endswith(".parquet") else f"part-{i:05d}.parquet"


def rewrite(p: Predictions, out: str, by_id: dict, by_occurrence: dict, manifest: TrainingManifest,
            progress: dict) -> dict:
    """Writes OUTPUT: every input file rewritten with the decisions applied (see the module docstring).

    Returns:
        ``{"rows", "files", "decided": {decision: rows}}``.
    """
    schema = output_schema(p.dataset.schema)
    storage.write_bytes(storage.join(out, PROGRESS), json.dumps({**progress, "chunks": 1}).encode())
    names = [_out_name(f, i) for i, f in enumerate(p.files)]
    if len(set(names)) < len(names):  # the same name in two input folders
        names = [f"part-{i:05d}.parquet" for i in range(len(p.files))]
    counts: dict = {"rows": 0, "files": len(p.files), "decided": {}}
    for fragment, name in zip(sorted(p.dataset.get_fragments(), key=lambda f: f.path), names):
        meta = fragment.physical_schema.metadata  # the model card, precision and calibration of the run
        with storage.open_for_write(storage.join(out, name)) as raw:
            with pq.ParquetWriter(raw, schema.with_metadata(meta), compression="zstd") as writer:
                for batch in fragment.to_batches(schema=p.dataset.schema, batch_size=_BATCH):
                    table, decided = apply_table(pa.Table.from_batches([batch]), schema, by_id, by_occurrence,
                                                 p.occurrence_key)
                    writer.write_table(table.replace_schema_metadata(meta))
                    manifest.add(table)
                    counts["rows"] += table.num_rows
                    for k, v in decided.items():
                        counts["decided"][k] = counts["decided"].get(k, 0) + v
    return counts


def finish(out: str) -> None:
    """Marks OUTPUT complete (``_SUCCESS``, written last)."""
    storage.write_bytes(storage.join(out, SUCCESS), b"")


def commit_to_table(p: Predictions, rows: pa.Table, by_id: dict, run_id: str, manifest: TrainingManifest,
                    metadata: dict) -> dict:
    """Commits the decided rows of a nightly table, applied, as one new Delta version (idempotent).

    Args:
        p: the opened table.
        rows: the rows the decisions name (:func:`plantray.review.inputs.table_rows`).
        by_id: identificationID -> decision.
        run_id: the review's run id (the commit's application transaction).
        manifest: where accepted and corrected images go.
        metadata: recorded in the commit (``plantray.*`` keys).
    Returns:
        ``{"status": "committed" | "noop", "version", "rows", "decided"}``.
    """
    from plantray.storage import delta
    from plantray.storage import table as tbl

    schema = output_schema(p.dataset.schema)
    applied, decided = apply_table(rows, schema, by_id, {}, None)
    applied = applied.set_column(applied.schema.get_field_index(col.RUN_ID), col.RUN_ID,
                                 pa.array([run_id] * applied.num_rows, applied.schema.field(col.RUN_ID).type))
    applied = applied.set_column(applied.schema.get_field_index(col.RUN_CHUNK), col.RUN_CHUNK,
                                 pc.cast(pa.array([0] * applied.num_rows), applied.schema.field(col.RUN_CHUNK).type))
    manifest.add(applied)  # the same images whether or not this commit was made before
    now = delta.open_table(p.uri)
    if now.transaction_version(run_id) is not None:
        return {"status": "noop", "version": now.version(), "rows": 0, "decided": {}}
    relative = f"{tbl.DATA}/{run_id}/{metadata['attempt']}/000000/part-00000.parquet"
    with storage.open_for_write(storage.join(p.uri, relative)) as raw:
        pq.write_table(applied, raw, compression="zstd")
    meta = {"run_id": run_id, "chunk": 0, "chunks": 1, "rows": applied.num_rows, "failed": 0, **metadata}
    for _ in range(5):  # another writer may take the next version first: re-read and try again
        now = delta.open_table(p.uri)
        if now.transaction_version(run_id) is not None:
            storage.remove(storage.join(p.uri, tbl.DATA, run_id, metadata["attempt"]))
            return {"status": "noop", "version": now.version(), "rows": 0, "decided": {}}
        if delta.add_columns(now, applied.schema):
            continue
        try:
            version = delta.commit(now, p.uri, [relative], applied.schema, meta, txn=(run_id, 0))
        except delta.VersionTaken:
            continue
        return {"status": "committed", "version": version, "rows": applied.num_rows, "decided": decided}
    raise tbl.CommitConflict(f"table {p.uri!r} kept moving; the decisions were not committed, run again")
