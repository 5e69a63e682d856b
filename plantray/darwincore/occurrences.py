"""Per-occurrence aggregation of image predictions (one identification per gbifID)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from plantray import columns as col
from plantray import storage
from plantray.darwincore.terms import _failed
from plantray.inference.outputs import check_complete


def _occurrence_schema(key_type: pa.DataType, key: str) -> pa.Schema:
    return pa.schema([(key, key_type), ("topk_scientificName", pa.list_(pa.string())),
                      ("topk_confidence", pa.list_(pa.float64())), ("scientificName", pa.string()),
                      ("confidence", pa.float64()), ("images_used", pa.int64()),
                      ("images_failed", pa.int64())])


def mean_topk(names_per_image: list[list[str]], confs_per_image: list[list[float]], top_k: int
              ) -> tuple[list[str], list[float]]:
    """Top-k of the mean class probability over images, from each image's top-k.

    A class missing from an image's top-k counts as probability 0 for that image: an approximation that
    slightly underestimates every class (by at most the image's k-th probability).

    Args:
        names_per_image: each image's top-k names.
        confs_per_image: each image's top-k probabilities.
        top_k: how many classes to keep.

    Returns:
        (names, mean probabilities), best first; ties broken by name for determinism.
    """
    totals: dict[str, float] = {}
    for names, confs in zip(names_per_image, confs_per_image):
        for n, c in zip(names, confs):
            totals[n] = totals.get(n, 0.0) + float(c)
    count = len(names_per_image)
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    return [n for n, _ in ranked], [t / count for _, t in ranked]


def _aggregate_group(group: pa.Table, key: str, top_k: int, schema: pa.Schema, min_confidence: float = 0.0
                     ) -> pa.Table:
    """map_groups function: one occurrence's image predictions -> one occurrence row (no name when the
    combined top-1 is below ``min_confidence``)."""
    errors = group.column(col.ERROR).to_pylist()
    ok = [i for i, e in enumerate(errors) if not _failed(e)]
    names_col = group.column("topk_scientificName").to_pylist()
    confs_col = group.column("topk_confidence").to_pylist()
    names, confs = mean_topk([names_col[i] or [] for i in ok], [confs_col[i] or [] for i in ok], top_k)
    row = {key: [group.column(key)[0].as_py()], "topk_scientificName": [names], "topk_confidence": [confs],
           "scientificName": [names[0] if names and confs[0] >= min_confidence else None],
           "confidence": [confs[0] if confs else None],
           "images_used": [len(ok)], "images_failed": [len(errors) - len(ok)]}
    return pa.Table.from_pydict(row, schema=schema)


def _write_empty(uri: str, schema: pa.Schema) -> None:
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    storage.write_bytes(storage.join(uri, "part-empty.parquet"), buf.getvalue())


def _read_parquet(uri: str, columns: list[str] | None = None):
    import ray

    fs, path = storage.arrow_fs(uri)  # storage's filesystem: S3-compatible endpoints included
    return ray.data.read_parquet(path, filesystem=fs, columns=columns)


def aggregate_occurrences(predictions_path: str, out_path: str, top_k: int = 5, key: str = col.GBIF_ID,
                          min_confidence: float = 0.0) -> dict:
    """Combines per-image predictions into one identification per occurrence, with Ray Data.

    Each occurrence's probabilities are the mean over its successfully classified images, computed from
    their top-k (see :func:`mean_topk`). Runs as a distributed groupby, so it scales past driver memory
    (each single occurrence's images must fit in a worker, which they always do).

    Args:
        predictions_path: Parquet dataset with columns ``key``, ``topk_scientificName``,
            ``topk_confidence`` and ``error``.
        out_path: where to write the occurrence Parquet dataset.
        top_k: classes kept per occurrence.
        key: occurrence key column.
        min_confidence: an occurrence whose combined top-1 probability is below it gets no
            ``scientificName`` (its top-k stays), as classify's ``--min-confidence`` does per image.

    Returns:
        ``{"occurrences": ..., "images_used": ..., "images_failed": ...}``, and ``"unknown"`` (occurrences with
        classified images but no name) when ``min_confidence > 0``.
    Raises:
        PartialOutput: ``predictions_path`` is a classify OUTPUT whose chunks are not all committed.
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k!r} is invalid: use 1 or more")
    check_complete(predictions_path)
    columns = [key, col.TOPK_NAMES, col.TOPK_CONFIDENCE, col.ERROR]
    ds = _read_parquet(predictions_path)
    schema_in = ds.schema()
    missing = [c for c in columns if c not in schema_in.names]
    if missing:
        raise ValueError(f"{predictions_path} lacks columns {missing}: aggregation needs {columns} "
                         "(pass key= to name the occurrence key column)")
    key_type = schema_in.types[schema_in.names.index(key)]
    ds = ds.select_columns(columns)
    schema = _occurrence_schema(key_type, key)
    kwargs = {"key": key, "top_k": top_k, "schema": schema, "min_confidence": min_confidence}
    grouped = ds.groupby(key).map_groups(_aggregate_group, batch_format="pyarrow", fn_kwargs=kwargs)
    out_fs, out_dir = storage.arrow_fs(out_path)
    grouped.write_parquet(out_dir, filesystem=out_fs)
    if not storage.holds_data(out_path):  # no predictions: still leave a readable, empty table with the schema
        _write_empty(out_path, schema)
        return {"occurrences": 0, "images_used": 0, "images_failed": 0, **({"unknown": 0} if min_confidence else {})}
    # Counting re-reads two small columns of the output rather than holding anything on the driver.
    written = _read_parquet(out_path, columns=["images_used", "images_failed"])
    occurrences = written.count()
    totals = written.sum(["images_used", "images_failed"]) if occurrences else {}
    counts = {"occurrences": occurrences, "images_used": int(totals.get("sum(images_used)") or 0),
              "images_failed": int(totals.get("sum(images_failed)") or 0)}
    if min_confidence:
        counts["unknown"] = _count_unknown(out_path)
    return counts


def _count_unknown(out_path: str) -> int:
    """Occurrences with classified images but no name, scanning two columns of the written table."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    fs, path = storage.arrow_fs(out_path)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["scientificName", "images_used"])
    withheld = pc.and_(pc.is_null(table.column("scientificName")), pc.greater(table.column("images_used"), 0))
    return int(pc.sum(withheld.cast("int64")).as_py() or 0)
