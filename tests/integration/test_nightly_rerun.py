"""``plantray nightly`` run again on the same day (issue 21), on real Ray and a real Delta table read back with
``deltalake``: new images and a new model become the day's next run (``nightly-<date>.2``), the same input
again is a no-op, a crashed run resumes under its own id, and an explicit completed ``--run-id`` says what it
left (``--strict``: exit 2). Expected keys and counts come from the manifests written here."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from plantray.cli import main
from plantray.commands import nightly as nightly_mod
from plantray.commands.nightly import NightlyConfig, nightly
from tests.helpers import jpeg_bytes, tiny_model, write


class Died(BaseException):
    """The run dying abruptly between writing a chunk's files and committing them (no cleanup runs)."""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerun-models")
    paths = {name: str(root / name) for name in ("m1", "m2")}
    tiny_model(paths["m1"], seed=0)
    tiny_model(paths["m2"], seed=1)
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Manifests of images 0..19 and 0..29 (the same files): (path, URIs) by name."""
    root = tmp_path_factory.mktemp("rerun-inputs")
    uris = [str(root / "imgs" / f"{i}.jpg") for i in range(30)]
    for i, uri in enumerate(uris):
        write(uri, jpeg_bytes(32 + i % 5, 32, seed=i))
    out = {}
    for n in (20, 30):
        path = str(root / f"n{n}.parquet")
        pq.write_table(pa.table({"image_uri": uris[:n]}), path)
        out[f"n{n}"] = (path, uris[:n])
    return out


def _sha(model_dir: str) -> str:
    with open(os.path.join(model_dir, "weights.pt"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _days() -> set[str]:
    """The default run id of today (UTC), and of tomorrow in case a test runs across midnight."""
    now = dt.datetime.now(dt.timezone.utc)
    return {f"nightly-{d:%Y-%m-%d}" for d in (now, now + dt.timedelta(days=1))}


def _cli(capsys, model: str, manifest: str, table: str, *extra: str) -> tuple[int, str, str]:
    code = main(["nightly", "--model", model, "--input", manifest, "--table", table, "--decode-batch-size", "8",
                 *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(table: str) -> pa.Table:
    """The committed rows, read by delta-rs (nothing of plantray's reading code)."""
    return DeltaTable(table).to_pyarrow_table(columns=["image_uri", "model_sha256", "run_id"])


def _records(table: str) -> dict[str, dict]:
    """The run records in TABLE/_runs/, by run id (read as plain JSON files)."""
    runs = os.path.join(table, "_runs")
    out = {}
    for run_id in os.listdir(runs) if os.path.isdir(runs) else []:
        with open(os.path.join(runs, run_id, "_plantray_run.json")) as f:
            out[run_id] = json.load(f)["summary"]
    return out


def _first_run(table: str) -> str:
    (base,) = _records(table)
    assert base in _days()
    return base


def test_new_images_same_day_become_the_next_run(ray_session, tmp_path, models, inputs, capsys):
    table = str(tmp_path / "t")
    (n20, uris20), (n30, uris30) = inputs["n20"], inputs["n30"]
    assert _cli(capsys, models["m1"], n20, table)[0] == 0
    base = _first_run(table)
    code, out, _ = _cli(capsys, models["m1"], n30, table)
    assert code == 0
    new = sorted(set(uris30) - set(uris20))
    rows = _rows(table)
    keys = rows.column("image_uri").to_pylist()
    assert sorted(keys) == sorted(uris30) and len(keys) == len(set(keys))  # 30 keys, each once
    records = _records(table)
    assert set(records) == {base, f"{base}.2"}  # two runs recorded
    by_run = collections.defaultdict(list)
    for uri, run_id in zip(keys, rows.column("run_id").to_pylist()):
        by_run[run_id].append(uri)
    assert sorted(by_run[base]) == sorted(uris20) and sorted(by_run[f"{base}.2"]) == new
    later = records[f"{base}.2"]
    assert later["follows"] == base and later["counts"]["new"] == len(new)
    assert later["reason"] == (f"run {base} already completed; {len(new)} input rows are new for model "
                               f"{_sha(models['m1'])[:12]} -> run {base}.2")
    assert later["reason"] in out.splitlines()


def test_same_input_again_is_a_noop(ray_session, tmp_path, models, inputs, capsys):
    table = str(tmp_path / "t")
    n20, uris20 = inputs["n20"]
    assert _cli(capsys, models["m1"], n20, table)[0] == 0
    base, version = _first_run(table), DeltaTable(table).version()
    listing = sorted(os.path.relpath(os.path.join(r, f), table) for r, _, fs in os.walk(table) for f in fs)
    code, out, _ = _cli(capsys, models["m1"], n20, table)
    assert code == 0
    assert out.strip() == (f"run {base} already completed (table version {version}) and all {len(uris20)} input "
                           f"rows are committed for model {_sha(models['m1'])[:12]}: nothing to do")
    assert DeltaTable(table).version() == version
    assert sorted(os.path.relpath(os.path.join(r, f), table) for r, _, fs in os.walk(table) for f in fs) == listing


def test_new_model_same_day_reclassifies_everything(ray_session, tmp_path, models, inputs, capsys):
    table = str(tmp_path / "t")
    n20, uris20 = inputs["n20"]
    assert _cli(capsys, models["m1"], n20, table)[0] == 0
    base = _first_run(table)
    code, out, _ = _cli(capsys, models["m2"], n20, table)
    assert code == 0
    sha1, sha2 = _sha(models["m1"]), _sha(models["m2"])
    assert f"{len(uris20)} input rows are new for model {sha2[:12]} -> run {base}.2" in out
    rows = _rows(table)
    pairs = collections.Counter(zip(rows.column("image_uri").to_pylist(), rows.column("model_sha256").to_pylist()))
    assert pairs == {(uri, sha): 1 for uri in uris20 for sha in (sha1, sha2)}  # every key once per model
    assert {r: s["model"]["sha256"] for r, s in _records(table).items()} == {base: sha1, f"{base}.2": sha2}


def _crash_after_first_chunk(monkeypatch, model: str, manifest: str, table: str, commit_every: int) -> None:
    """A default-id run that commits chunk 0 and dies before committing chunk 1."""
    def die(entry):
        if entry["chunk"] == 1:
            raise Died()

    monkeypatch.setattr(nightly_mod, "_before_commit", die)
    with pytest.raises(Died):
        nightly(NightlyConfig(model=model, input=manifest, table=table, decode_batch_size=8,
                              commit_every=commit_every))
    monkeypatch.undo()


def test_crashed_runs_resume_under_their_own_id(ray_session, tmp_path, models, inputs, capsys, monkeypatch):
    table = str(tmp_path / "t")
    (n20, uris20), (n30, uris30) = inputs["n20"], inputs["n30"]
    # The day's first run dies after chunk 0 of 2; the retry finishes it under the same id.
    _crash_after_first_chunk(monkeypatch, models["m1"], n20, table, commit_every=10)
    committed = DeltaTable(table).to_pyarrow_table().column("run_id").to_pylist()
    (base,) = set(committed)
    assert base in _days() and DeltaTable(table).transaction_version(base) == 0 and not _records(table)
    code, out, _ = _cli(capsys, models["m1"], n20, table, "--commit-every", "10")
    assert code == 0 and "already completed" not in out
    record = _records(table)[base]
    assert "follows" not in record and record["resumed_after_chunks"] == 1
    assert record["counts"]["new_this_attempt"] == len(uris20) - len(committed)
    assert DeltaTable(table).transaction_version(base) == 1
    # The day's second run (10 new images, 2 chunks) dies after chunk 0; its retry is still run .2, not .3.
    _crash_after_first_chunk(monkeypatch, models["m1"], n30, table, commit_every=5)
    assert DeltaTable(table).transaction_version(f"{base}.2") == 0 and set(_records(table)) == {base}
    code, out, _ = _cli(capsys, models["m1"], n30, table)
    assert code == 0
    assert f"run {base} already completed; resuming run {base}.2, which did not complete" in out
    assert set(_records(table)) == {base, f"{base}.2"}
    rows = _rows(table)
    keys = rows.column("image_uri").to_pylist()
    assert sorted(keys) == sorted(uris30) and len(keys) == len(set(keys))
    assert set(rows.column("run_id").to_pylist()) == {base, f"{base}.2"}


def test_explicit_completed_run_id_reports_what_it_left(ray_session, tmp_path, models, inputs, capsys):
    table = str(tmp_path / "t")
    (n20, uris20), (n30, uris30) = inputs["n20"], inputs["n30"]
    assert _cli(capsys, models["m1"], n20, table, "--run-id", "r1")[0] == 0
    version, left = DeltaTable(table).version(), len(set(uris30) - set(uris20))
    code, out, _ = _cli(capsys, models["m1"], n30, table, "--run-id", "r1")
    assert code == 0
    assert out.strip() == (f"run r1 already completed (table version {version}): nothing done; {left} of the "
                           f"{len(uris30)} input rows are not committed for model {_sha(models['m1'])[:12]}; to "
                           "classify them run again without --run-id (the day's next run) or with a new --run-id")
    code, out, err = _cli(capsys, models["m1"], n30, table, "--run-id", "r1", "--strict")
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert f"{left} of the {len(uris30)} input rows are not committed" in err
    assert DeltaTable(table).version() == version and set(_records(table)) == {"r1"}
    # As the message says: without --run-id the rows left are classified (the day's first default run).
    assert _cli(capsys, models["m1"], n30, table)[0] == 0
    keys = _rows(table).column("image_uri").to_pylist()
    assert sorted(keys) == sorted(uris30) and len(keys) == len(set(keys))
