"""``plantray table optimize|vacuum|migrate`` and the old-layout refusal, on real Ray and real files; the table
is read back with ``deltalake`` directly."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from plantray.cli import main
from plantray.commands.nightly import NightlyConfig, nightly
from plantray.storage import table as tbl
from tests.helpers import jpeg_bytes, tiny_model, write


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "m1")
    tiny_model(path, seed=0)
    return path


def _sha(model_dir: str) -> str:
    with open(os.path.join(model_dir, "weights.pt"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _chunk(uri: str, chunks: int) -> int:
    """The chunk nightly puts ``uri`` in, recomputed here: BLAKE2b-64 (little endian) modulo the chunk count."""
    return int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=8).digest(), "little") % chunks


def _manifest(root, n: int, per_chunk: int = 0) -> tuple[str, list[str]]:
    """n images and a manifest of them; with ``per_chunk``, names picked so that each of the
    ceil(n / per_chunk) chunks holds at most ``per_chunk`` (so none is empty)."""
    uris, i, chunks = [], 0, -(-n // per_chunk) if per_chunk else 1
    while len(uris) < n:
        uri = str(root / "imgs" / f"{i}.jpg")
        if not per_chunk or sum(_chunk(u, chunks) == _chunk(uri, chunks) for u in uris) < per_chunk:
            uris.append(uri)
        i += 1
    for i, uri in enumerate(uris):
        write(uri, jpeg_bytes(40 + i, 36, seed=i))
    path = str(root / "in.parquet")
    pq.write_table(pa.table({"image_uri": uris}), path)
    return path, uris


def _rows(table: str, version: int | None = None) -> list[tuple]:
    t = DeltaTable(table, version=version).to_pyarrow_table()
    return sorted(zip(t.column("image_uri").to_pylist(), t.column("scientificName").to_pylist(),
                      t.column("run_id").to_pylist()))


def test_optimize_and_vacuum(ray_session, tmp_path, model, capsys):
    table = str(tmp_path / "t")
    inp, uris = _manifest(tmp_path, 5, per_chunk=2)
    s = nightly(NightlyConfig(model=model, input=inp, table=table, run_id="r1", commit_every=2,
                              decode_batch_size=4))
    assert s["chunks"] == 3 and s["versions"] == [1, 2, 3] and s["counts"]["new"] == 5  # ceil(5 / 2) chunks
    files_before = DeltaTable(table).file_uris()
    rows_before = _rows(table)
    assert len(files_before) == 3 and sorted(r[0] for r in rows_before) == sorted(uris)
    latest_before = sorted((r["image_uri"], r["commit_seq"]) for r in tbl.latest(table, 2).take_all())

    assert main(["table", "optimize", "--table", table]) == 0
    assert "version 3 -> 4, 3 files compacted into 1" in capsys.readouterr().out
    assert len(DeltaTable(table).file_uris()) == 1 and _rows(table) == rows_before
    assert _rows(table, version=3) == rows_before  # time travel: the night's version still reads the same
    # The commit each row came from survives the rewrite (run_id/run_chunk columns).
    assert sorted((r["image_uri"], r["commit_seq"]) for r in tbl.latest(table, 2).take_all()) == latest_before

    # A file no commit references (an attempt that died) and the 3 files optimize replaced.
    stray = os.path.join(table, "data", "dead", "a1", "000000", "x.parquet")
    write(stray, b"not even parquet")
    assert main(["table", "vacuum", "--table", table, "--retention-hours", "1"]) == 2
    assert "--allow-short-retention" in capsys.readouterr().err
    assert main(["table", "vacuum", "--table", table, "--retention-hours", "0", "--allow-short-retention",
                 "--dry-run"]) == 0
    assert "would delete 4 files" in capsys.readouterr().out and os.path.exists(stray)
    assert main(["table", "vacuum", "--table", table, "--retention-hours", "0", "--allow-short-retention"]) == 0
    assert "deleted 4 files" in capsys.readouterr().out
    assert not os.path.exists(stray) and not any(os.path.exists(f) for f in files_before)
    assert _rows(table) == rows_before and os.path.exists(os.path.join(table, "_runs", "r1", "_plantray_run.json"))


def _old_layout(root, uris: list[str], sha: str) -> str:
    """A table of the old layout, written as plantray wrote it: data files, then exclusive _log entries."""
    table = str(root / "old")
    for seq, (run, part) in enumerate([("d1", uris[:2]), ("d2", uris[2:])], start=1):
        rel = f"data/{run}/a{seq}/part-0.parquet"
        os.makedirs(os.path.dirname(os.path.join(table, rel)), exist_ok=True)
        pq.write_table(pa.table({"image_uri": part, "scientificName": ["Old name"] * len(part),
                                 "model_sha256": [sha] * len(part), "error": pa.nulls(len(part), pa.string()),
                                 "run_id": [run] * len(part)}), os.path.join(table, rel))
        entry = {"run_id": run, "attempt": f"a{seq}", "model_sha256": sha, "key": ["image_uri"], "files": [rel],
                 "rows": len(part), "failed": 0, "seq": seq, "committed_at": f"2024-0{seq}-01T00:00:00Z"}
        write(os.path.join(table, "_log", f"{seq:020d}.json"), json.dumps(entry).encode())
    # An attempt that never committed: migrate must not add it.
    os.makedirs(os.path.join(table, "data", "d3", "a3"), exist_ok=True)
    pq.write_table(pa.table({"image_uri": ["ghost"]}), os.path.join(table, "data", "d3", "a3", "part-0.parquet"))
    return table


def test_old_layout_refused_then_migrated(ray_session, tmp_path, model, capsys):
    inp, uris = _manifest(tmp_path, 4)
    table = _old_layout(tmp_path, uris, _sha(model))
    for argv in (["nightly", "--model", model, "--input", inp, "--table", table],
                 ["table", "optimize", "--table", table], ["table", "vacuum", "--table", table]):
        assert main(argv) == 2
        assert f"plantray table migrate --table {table}" in capsys.readouterr().err

    assert main(["table", "migrate", "--table", table]) == 0
    assert "2 log entries -> Delta versions [1, 2]" in capsys.readouterr().out
    dt_ = DeltaTable(table)
    assert [(r, n) for r, n, _ in _rows(table)] == sorted((u, "Old name") for u in uris)  # no ghost row
    history = {h["version"]: h for h in dt_.history()}
    assert [history[v]["plantray.run_id"] for v in (1, 2)] == ["d1", "d2"]
    assert history[2]["plantray.committed_at"] == "2024-02-01T00:00:00Z"
    assert dt_.transaction_version("d1") == 0 and dt_.transaction_version("d2") == 0
    moved = glob.glob(os.path.join(table, "_log.migrated-*"))
    assert not os.path.exists(os.path.join(table, "_log")) and len(moved) == 1 and len(os.listdir(moved[0])) == 2
    assert main(["table", "migrate", "--table", table]) == 2  # already Delta

    # The migrated rows count as done for the same model ...
    s = nightly(NightlyConfig(model=model, input=inp, table=table, run_id="d4", decode_batch_size=4))
    assert s["counts"]["new"] == 0 and s["counts"]["skipped_done"] == 4
    # ... and keep their original commit times: --since between the two old commits redoes d1's two rows.
    s = nightly(NightlyConfig(model=model, input=inp, table=table, run_id="d5", since="2024-01-15",
                              decode_batch_size=4))
    assert s["counts"]["new"] == 2
    redone = [r for r in _rows(table) if r[2] == "d5"]
    assert sorted(r[0] for r in redone) == sorted(uris[:2])
