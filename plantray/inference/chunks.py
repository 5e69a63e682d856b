"""Runs in chunks: input rows split by a stable hash of their key, so a run commits chunk by chunk and a
re-run after a crash redoes at most the chunk that was in flight.

Why a hash of the key, not input order: Ray Data reads in parallel and gives no stable row order from
one run to the next, while the key (``image_uri``, or ``gbifID`` + ``image_uri``) is a row's identity in
every output. Rows with the same key always fall in the same chunk, so a committed chunk is done as a
whole, and the chunk a row belongs to depends only on its key and the number of chunks (which a run
records when it starts, so its re-run splits the same way).
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:  # Ray is imported where it runs: classify's module must not pull it into ``plantray --help``
    import ray

CHUNK = "_chunk"
DEFAULT_COMMIT_EVERY = 100_000  # rows per chunk: at archive scale minutes of GPU time, a few files


def key_columns(source) -> list[str]:
    """A row's identity in classify's and nightly's outputs: ``["gbifID", "image_uri"]`` when the input has
    gbifID, else ``["image_uri"]``.

    Args:
        source: the input (:class:`plantray.sources.base.Source`).
    """
    from plantray.columns import GBIF_ID, IMAGE_URI

    return [GBIF_ID, IMAGE_URI] if GBIF_ID in source.columns() else [IMAGE_URI]


def chunk_count(rows: int, commit_every: int) -> int:
    """How many chunks ``rows`` input rows make with at most about ``commit_every`` rows each (>= 1)."""
    return max(1, math.ceil(rows / commit_every))


def chunk_ids(keys: pa.Array, chunks: int) -> pa.Array:
    """The chunk (0 .. chunks-1) of each key: BLAKE2b of its UTF-8 bytes, modulo ``chunks``.

    A cryptographic hash because Python's ``hash`` is salted per process and pyarrow has no stable one;
    it spreads keys evenly whatever their shape (URLs sharing long prefixes included).
    """
    digests = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
               for k in keys.to_pylist()]
    return pa.array(np.array(digests, dtype=np.uint64) % np.uint64(chunks), pa.int32())


def _add_chunk(batch: pa.Table, key_columns: list[str], chunks: int) -> pa.Table:
    from plantray.storage.table import key_array

    return batch.append_column(CHUNK, chunk_ids(key_array(batch, key_columns), chunks))


def add_chunks(ds: ray.data.Dataset, key_columns: list[str], chunks: int) -> ray.data.Dataset:
    """``ds`` with a ``_chunk`` column from the key columns (see :func:`chunk_ids`)."""
    return ds.map_batches(_add_chunk, fn_args=(key_columns, chunks), batch_format="pyarrow", zero_copy_batch=True)


def chunk_rows(ds: ray.data.Dataset, chunk: int) -> ray.data.Dataset:
    """The rows of one chunk, without the ``_chunk`` column."""
    from ray.data.expressions import col

    return ds.filter(expr=col(CHUNK) == chunk).drop_columns([CHUNK])
