"""Chunks of a run: stable, even, and every key in exactly one chunk."""

import hashlib

import pyarrow as pa

from plantray.inference.chunks import chunk_count, chunk_ids


def test_chunk_count_rounds_up_and_is_never_zero():
    assert [chunk_count(r, 100) for r in (0, 1, 100, 101, 1000)] == [1, 1, 1, 2, 10]


def test_chunk_ids_match_an_independent_blake2b_and_stay_in_range():
    keys = [f"s3://bucket/images/{i:06d}.jpg" for i in range(2000)]
    got = chunk_ids(pa.array(keys), 7).to_pylist()
    expected = [int.from_bytes(bytes.fromhex(hashlib.blake2b(k.encode(), digest_size=8).hexdigest()), "little") % 7
                for k in keys]
    assert got == expected
    counts = [got.count(c) for c in range(7)]
    assert min(counts) > 2000 / 7 * 0.7  # spread: no chunk starved


def test_the_same_key_falls_in_the_same_chunk_every_time():
    keys = pa.array(["a", "b", "a", "c", "b"])
    first, again = chunk_ids(keys, 3).to_pylist(), chunk_ids(keys, 3).to_pylist()
    assert first == again and first[0] == first[2] and first[1] == first[4]
