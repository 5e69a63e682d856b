"""``plantray nightly`` and the committed table on real Ray, real files and a real S3 server: incremental runs,
model changes, crashes before the commit, idempotent reruns and racing commits."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from plantray.cli import main
from plantray.commands import nightly as nightly_mod
from plantray.commands.nightly import NightlyConfig, nightly
from plantray.storage import delta
from plantray.storage import table as tbl
from tests.helpers import jpeg_bytes, tiny_model, write


class Died(BaseException):
    """A run dying abruptly (no cleanup runs), like a SIGKILL between writing files and committing."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {name: str(root / name) for name in ("m1", "m2")}
    tiny_model(paths["m1"], seed=0)
    tiny_model(paths["m2"], seed=1)
    return paths


def _sha(model_dir: str) -> str:
    with open(os.path.join(model_dir, "weights.pt"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _manifest(root, n: int, name: str, gbif: bool = False) -> tuple[str, list[str]]:
    """Images 0..n-1 (the same files across manifests) and a manifest of them; returns (manifest, uris)."""
    uris = [str(root / "imgs" / f"{i}.jpg") for i in range(n)]
    for i, uri in enumerate(uris):
        if not os.path.exists(uri):
            write(uri, jpeg_bytes(40 + i, 36, seed=i))
    columns = {"image_uri": uris, "note": [f"n{i}" for i in range(n)]}
    if gbif:
        columns["gbifID"] = [1000 + i for i in range(n)]
    path = str(root / f"{name}.parquet")
    pq.write_table(pa.table(columns), path)
    return path, uris


def _committed(table_uri: str, storage_options=None, version=None) -> pa.Table:
    """The committed rows, read with deltalake (delta-rs), independent of plantray and Ray."""
    return DeltaTable(table_uri, version=version, storage_options=storage_options).to_pyarrow_table()


def _snapshot(table_uri: str) -> dict:
    """Bytes of every Delta log entry and every committed file."""
    out = {}
    committed = set(DeltaTable(table_uri).file_uris())
    for root, _, names in os.walk(table_uri):
        for name in names:
            path = os.path.join(root, name)
            if "/_delta_log/" in path or path in committed:
                with open(path, "rb") as f:
                    out[path] = f.read()
    return out


def _cfg(model, inp, table, run_id, **kw) -> NightlyConfig:
    return NightlyConfig(model=model, input=inp, table=table, run_id=run_id, decode_batch_size=4, **kw)


def _latest_rows(table_uri: str) -> list[dict]:
    return tbl.latest(table_uri, num_partitions=2).take_all()


def test_incremental_runs_model_change_and_noop(ray_session, tmp_path, models):
    table = str(tmp_path / "table")
    m1, sha1, sha2 = models["m1"], _sha(models["m1"]), _sha(models["m2"])
    inp1, uris1 = _manifest(tmp_path, 5, "day1")
    s1 = nightly(_cfg(m1, inp1, table, "day1"))
    assert s1["status"] == "committed" and s1["commit_seq"] == 1
    assert s1["counts"]["new"] == 5 and s1["counts"]["skipped_done"] == 0 and s1["counts"]["input_rows"] == 5
    assert sorted(_committed(table).column("image_uri").to_pylist()) == sorted(uris1)

    # Day 2: three more images; only those are classified.
    inp2, uris2 = _manifest(tmp_path, 8, "day2")
    s2 = nightly(_cfg(m1, inp2, table, "day2"))
    assert (s2["counts"]["new"], s2["counts"]["skipped_done"], s2["commit_seq"]) == (3, 5, 2)
    manifest = json.loads(open(os.path.join(table, "_runs", "day2", "_plantray_run.json")).read())["summary"]
    assert manifest["counts"]["new"] == 3 and manifest["model"]["sha256"] == sha1
    rows = _committed(table)
    assert sorted(rows.column("image_uri").to_pylist()) == sorted(uris2)  # N+M rows, no duplicates
    assert set(rows.column("model_sha256").to_pylist()) == {sha1}
    # passthrough columns kept, each row with its own image's value (_manifest gives image i the note "n<i>")
    notes = dict(zip(rows.column("image_uri").to_pylist(), rows.column("note").to_pylist()))
    assert notes == {uri: f"n{i}" for i, uri in enumerate(uris2)}

    # A new model re-classifies everything; the table keeps both versions, the latest view only the new one.
    s3_ = nightly(_cfg(models["m2"], inp2, table, "day3"))
    assert s3_["counts"]["new"] == 8 and s3_["counts"]["skipped_done"] == 0
    rows = _committed(table)
    assert rows.num_rows == 16
    assert sorted(rows.column("model_sha256").to_pylist()) == sorted([sha1] * 8 + [sha2] * 8)
    latest = _latest_rows(table)
    assert sorted(r["image_uri"] for r in latest) == sorted(uris2)
    assert {r["model_sha256"] for r in latest} == {sha2} and {r["commit_seq"] for r in latest} == {3}

    # Re-running a committed run id changes nothing.
    before = _snapshot(table)
    assert nightly(_cfg(models["m2"], inp2, table, "day3"))["status"] == "noop"
    assert _snapshot(table) == before

    # --since after the last commit re-classifies every row of this model; --full does too.
    s4 = nightly(_cfg(models["m2"], inp2, table, "day4", since="2999-01-01"))
    assert s4["counts"]["new"] == 8
    s5 = nightly(_cfg(models["m2"], inp1, table, "day5"))
    assert s5["counts"]["new"] == 0 and s5["counts"]["skipped_done"] == 5 and s5["commit_seq"] == 5


def test_crash_before_commit_leaves_table_unchanged(ray_session, tmp_path, models, monkeypatch):
    table = str(tmp_path / "table")
    inp1, _ = _manifest(tmp_path, 4, "day1", gbif=True)
    nightly(_cfg(models["m1"], inp1, table, "day1"))
    before, latest_before = _snapshot(table), sorted(map(str, _latest_rows(table)))

    inp2, uris2 = _manifest(tmp_path, 7, "day2", gbif=True)

    def die(entry):
        assert entry["files"]  # the attempt's data files are written ...
        raise Died()           # ... and the process dies before its commit

    monkeypatch.setattr(nightly_mod, "_before_commit", die)
    with pytest.raises(Died):
        nightly(_cfg(models["m1"], inp2, table, "day2"))
    staged = os.listdir(os.path.join(table, "data", "day2"))
    assert len(staged) == 1 and os.listdir(os.path.join(table, "data", "day2", staged[0]))
    assert _snapshot(table) == before
    assert sorted(map(str, _latest_rows(table))) == latest_before
    assert not os.path.exists(os.path.join(table, "_runs", "day2"))

    # The retry completes the run and collects the dead attempt's files.
    monkeypatch.undo()
    s = nightly(_cfg(models["m1"], inp2, table, "day2", stale_hours=0))
    assert s["counts"]["new"] == 3 and s["garbage_collected"] == [f"day2/{staged[0]}"]
    assert os.listdir(os.path.join(table, "data", "day2")) == [s["attempt"]]
    rows = _committed(table)
    keys = list(zip(rows.column("gbifID").to_pylist(), rows.column("image_uri").to_pylist()))
    assert sorted(keys) == sorted(zip(range(1000, 1007), uris2))


def _table_with_file(table: str) -> tuple:
    """A Delta table (version 0) holding one file, written by deltalake itself; returns (rows, storage options)."""
    t = pa.table({"image_uri": ["a.jpg"], "model_sha256": ["x"]})
    opts = delta.storage_options(table)
    write_deltalake(delta.table_uri(table), t, storage_options=opts)
    return t, opts


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_commits_only_one_wins(tmp_path, where, request):
    if where == "s3":  # the S3 server only: this race needs no Ray
        import s3fs

        endpoint = request.getfixturevalue("s3_server")
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing")
        if not fs.exists("plantray-race"):
            fs.mkdir("plantray-race")
        table = f"s3://plantray-race/race-{os.getpid()}"
    else:
        table = str(tmp_path / "table")
    t, opts = _table_with_file(table)
    # Both writers plan against version 0 and race for version 1 with the same file.
    planned = {r: DeltaTable(delta.table_uri(table), storage_options=opts) for r in ("a", "b")}
    barrier, results = threading.Barrier(2), {}
    rel = DeltaTable(delta.table_uri(table), storage_options=opts).get_add_actions(flatten=True)
    rel = pa.table(rel).column("path")[0].as_py()

    def attempt(run_id):
        barrier.wait()
        try:
            results[run_id] = delta.commit(planned[run_id], table, [rel], t.schema, {"run_id": run_id},
                                           txn=(run_id, 0))
        except delta.VersionTaken:
            results[run_id] = "conflict"

    threads = [threading.Thread(target=attempt, args=(r,)) for r in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results.values(), key=str) == [1, "conflict"]
    winner = next(r for r, v in results.items() if v == 1)
    now = DeltaTable(delta.table_uri(table), storage_options=opts)
    assert now.version() == 1
    assert now.transaction_version(winner) == 0 and now.transaction_version({"a": "b", "b": "a"}[winner]) is None
    with pytest.raises(delta.VersionTaken):  # planned against version 0 again: refused
        delta.commit(DeltaTable(delta.table_uri(table), version=0, storage_options=opts), table, [rel], t.schema,
                     {"run_id": "c"})
    assert delta.commit(now, table, [], t.schema, {"run_id": "c"}) == 2


def _done_join_table(table: str) -> pa.Table:
    """Ten committed rows: model s1 (one failed, one of run r1), model s2, and one of run r1 under s2."""
    rows = pa.table({
        "gbifID": list(range(10)), "image_uri": [f"https://h/{i}.jpg" for i in range(10)],
        "model_sha256": ["s1"] * 6 + ["s2"] * 3 + ["s1"],
        "error": [None, None, None, "decode_failed", None, None, None, None, None, None],
        "run_id": ["r0"] * 5 + ["r1"] + ["r0"] * 2 + ["r1", "r0"], "run_chunk": [0] * 10})
    write_deltalake(table, rows)
    return rows


@pytest.mark.parametrize("flags", [{}, {"run_id": "r1", "full": True}, {"run_id": "r1", "retry_failed": False}])
def test_done_join_broadcast_and_shuffle_agree(ray_session, tmp_path, flags):
    """The already-done join gives the same rows broadcast (a small table) and hash-shuffled (any table)."""
    import ray

    from plantray.inference.incremental import table_rows, todo

    table = str(tmp_path / "t")
    committed = _done_join_table(table).to_pylist()
    # Input: gbifIDs 0..11 (10 and 11 new), as strings, so int and string ids must compare equal.
    ds = ray.data.from_items([{"gbifID": str(i), "image_uri": f"https://h/{i}.jpg"} for i in range(12)])
    run_id, full, retry = flags.get("run_id"), flags.get("full", False), flags.get("retry_failed", True)
    done = {r["gbifID"] for r in committed if r["run_id"] == run_id or (
        not full and r["model_sha256"] == "s1" and (not retry or r["error"] is None))}
    expected = sorted(set(range(12)) - done)
    snap = tbl.snapshot(table)
    assert table_rows(snap) == len(committed)
    for broadcast_rows in (0, len(committed)):  # 0: always shuffle; the table's size: broadcast
        rows = todo(ds, snap, ["gbifID", "image_uri"], "s1", run_id, full=full, retry_failed=retry,
                    join_partitions=2, broadcast_rows=broadcast_rows)
        assert sorted(int(r["gbifID"]) for r in rows.iter_rows()) == expected, broadcast_rows
        assert ("Join" in rows.stats()) == (broadcast_rows == 0)


def test_s3_table_incremental(ray_session, s3, tmp_path, models):
    table = "s3://plantray-test/nightly-table"
    inp1, _ = _manifest(tmp_path, 3, "day1")
    assert nightly(_cfg(models["m1"], inp1, table, "day1"))["counts"]["new"] == 3
    inp2, uris2 = _manifest(tmp_path, 5, "day2")
    s = nightly(_cfg(models["m1"], inp2, table, "day2"))
    assert (s["counts"]["new"], s["counts"]["skipped_done"], s["commit_seq"]) == (2, 3, 2)
    assert sorted(s3.ls("plantray-test/nightly-table/_delta_log")) == [
        f"plantray-test/nightly-table/_delta_log/{i:020d}.json" for i in (0, 1, 2)]
    rows = _committed(table, delta.storage_options(table))
    assert sorted(rows.column("image_uri").to_pylist()) == sorted(uris2)
    record = json.loads(s3.cat("plantray-test/nightly-table/_runs/day2/_plantray_run.json"))
    assert record["summary"]["counts"]["new"] == 2
    assert nightly(_cfg(models["m1"], inp2, table, "day2"))["status"] == "noop"


def test_cli_and_refusals(ray_session, tmp_path, models, capsys):
    inp, uris = _manifest(tmp_path, 2, "m")
    table = str(tmp_path / "t")
    assert main(["nightly", "--model", models["m1"], "--input", inp, "--table", table, "--run-id", "r1"]) == 0
    assert "2 new of 2 input rows" in capsys.readouterr().out
    assert main(["nightly", "--model", models["m1"], "--input", inp, "--table", table, "--since", "yesterday"]) == 2
    assert "--since 'yesterday'" in capsys.readouterr().err
    assert main(["nightly", "--model", models["m1"], "--input", inp, "--table", "gs://b/t"]) == 2
    assert main(["nightly", "--model", models["m1"], "--input", inp, "--table", table, "--run-id", "a/b"]) == 2
    assert main(["nightly", "--model", models["m1"], "--input", inp, "--table", table, "--broadcast-rows", "-1"]) == 2
    assert "--broadcast-rows -1 must be >= 0" in capsys.readouterr().err
    gbif, _ = _manifest(tmp_path, 2, "g", gbif=True)  # a table keyed by image_uri refuses a gbifID input
    assert main(["nightly", "--model", models["m1"], "--input", gbif, "--table", table, "--run-id", "r2"]) == 2
    assert DeltaTable(table).version() == 1  # version 0 creates the table, 1 is run r1's only chunk
