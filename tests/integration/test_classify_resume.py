"""``plantray classify`` killed (SIGKILL) at several points, then ``--resume``d.

Each case runs the CLI as its own process tree (tests/crash.py), kills it when a file appears, reads what
it left with pyarrow, resumes, and checks every input row once, ``_SUCCESS`` only at the end, and that the
resumed run recomputed only the chunks that had no marker (the work lost is at most the chunk in flight).
The runs submit to the test session's Ray (a driver crash on a cluster), except one case whose run starts
its own embedded Ray and loses it with the driver (a laptop crash). Figures are printed (``pytest -s``) and
quoted in docs/resume.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plantray.cli import main
from tests.crash import file_appears, plantray_env, run_until
from tests.helpers import jpeg_bytes, tiny_model, write

ROWS, COMMIT_EVERY = 60, 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 tiny images in a manifest with gbifID (two images per occurrence) and a tiny model."""
    root = tmp_path_factory.mktemp("resume")
    uris = [write(f"{root}/img/{i}.jpg", jpeg_bytes(24, 20, seed=i)) for i in range(ROWS)]
    pq.write_table(pa.table({"image_uri": uris, "gbifID": [1000 + i // 2 for i in range(ROWS)]}), root / "m.parquet")
    tiny_model(str(root / "model"), crop=16)
    return {"root": root, "uris": uris, "manifest": str(root / "m.parquet"), "model": str(root / "model")}


def _argv(data, out: str, *extra: str) -> list[str]:
    return ["classify", "--model", data["model"], "--input", data["manifest"], "--output", out,
            "--commit-every", str(COMMIT_EVERY), "--num-actors", "1", *extra]


def _data_files(out: str) -> list[str]:
    """What a plain reader of OUTPUT loads: files not starting with ``_`` or ``.``."""
    return sorted(f for f in os.listdir(out) if not f.startswith(("_", ".")) and os.path.isfile(f"{out}/{f}"))


def _rows(path: str) -> int:
    """Rows of one Parquet file, or 0 for a file cut short (no footer yet)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError):
        return 0


def _after_kill(out: str) -> dict:
    """What the killed run left: committed files (listed by a marker), uncommitted data and staged rows."""
    markers = f"{out}/_chunks"
    committed = set()
    for name in os.listdir(markers) if os.path.isdir(markers) else []:
        with open(f"{markers}/{name}") as f:
            committed.update(json.load(f)["files"])
    data = _data_files(out)
    staged = [os.path.join(d, f) for d, _, fs in os.walk(f"{out}/_staging") for f in fs]
    return {"committed_files": committed & set(data),
            "committed_rows": sum(_rows(f"{out}/{f}") for f in committed & set(data)),
            "visible_rows": sum(_rows(f"{out}/{f}") for f in data),  # what pyarrow alone would read
            "discarded_rows": sum(_rows(f"{out}/{f}") for f in set(data) - committed) + sum(map(_rows, staged)),
            "success": os.path.exists(f"{out}/_SUCCESS")}


def _chunk_sizes(out: str) -> dict[str, int]:
    """Rows per chunk of the finished output, from the chunk prefix of each data file's name."""
    sizes: dict[str, int] = {}
    for f in _data_files(out):
        chunk = f.split("-")[1]
        sizes[chunk] = sizes.get(chunk, 0) + _rows(f"{out}/{f}")
    return sizes


# (kill point, what to wait for, extra environment, embedded Ray): before any chunk is published (chunk 0's
# files staged; the run pauses there, since a poll for staged files missed them when the run was quick),
# mid-publish (chunk 1's files moved into OUTPUT, its marker not yet written), after two chunks committed.
# The last one kills the run's own embedded Ray with it.
CASES = {
    "chunk 0 staged": (lambda out: file_appears(f"{out}/_paused-staged-0"), {"PLANTRAY_PAUSE_AT": "staged:0"}, False),
    "chunk 1 published, no marker": (lambda out: file_appears(f"{out}/_paused-published-1"),
                                     {"PLANTRAY_PAUSE_AT": "published:1"}, False),
    "2 chunks committed, embedded Ray": (lambda out: file_appears(f"{out}/_chunks/000001.json"), {}, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(CASES))
def test_kill_then_resume_every_row_once(data, tmp_path, point, capsys, ray_address):
    out, emb = str(tmp_path / "out"), str(tmp_path / "emb")
    condition, env, embedded = CASES[point]
    address = None if embedded else ray_address
    killed = run_until(_argv(data, out, "--embeddings", emb), condition(out), timeout=600,
                       log_path=str(tmp_path / "killed.log"), env=plantray_env(address, **env))
    assert killed.killed, f"the run ended before the kill point ({killed.returncode}):\n{killed.log[-3000:]}"
    left = _after_kill(out)
    assert not left["success"]

    # A partial OUTPUT is refused by plain classify, export and the occurrence aggregation.
    assert main(_argv(data, out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["export", "dwca", out, str(tmp_path / "a.zip")]) == 2
    err = capsys.readouterr().err
    assert "partial" in err and "--resume" in err, err
    assert not os.path.exists(tmp_path / "a.zip")

    # Resumed with another batch size, so a recomputed chunk's batches (and vector files) differ from the
    # killed attempt's: its vectors must still be there once.
    # The resume runs in the test's process, on the session's Ray (the killed run's embedded Ray died with it).
    start = time.monotonic()
    assert main(_argv(data, out, "--resume", "--embeddings", emb, "--batch-size", "7")) == 0, capsys.readouterr()
    resumed_seconds = time.monotonic() - start
    assert os.path.exists(f"{out}/_SUCCESS") and not os.path.exists(f"{out}/_staging")

    # Every input row exactly once, read with pyarrow file by file.
    files = _data_files(out)
    uris = [u for f in files for u in pq.read_table(f"{out}/{f}", columns=["image_uri"]).column(0).to_pylist()]
    assert sorted(uris) == sorted(data["uris"])
    vectors = pq.ParquetDataset(emb).read(columns=["image_uri"]).column(0).to_pylist()
    assert sorted(vectors) == sorted(data["uris"])
    # The resumed run kept the committed files and recomputed exactly the other chunks' rows.
    assert left["committed_files"] <= set(files)
    recomputed = sum(_rows(f"{out}/{f}") for f in set(files) - left["committed_files"])
    assert recomputed == ROWS - left["committed_rows"]
    sizes = _chunk_sizes(out)
    assert left["discarded_rows"] <= max(sizes.values())  # the work lost: at most the chunk in flight
    print(f"\nFIGURES {point!r}: chunk rows {sorted(sizes.values())}; committed before kill "
          f"{left['committed_rows']}/{ROWS} rows; a plain pyarrow read of the killed OUTPUT: "
          f"{left['visible_rows']} rows; computed and discarded (lost) {left['discarded_rows']} rows; resumed run "
          f"recomputed {recomputed} rows in {resumed_seconds:.0f} s (killed run {killed.seconds:.0f} s)")


def test_resume_refuses_another_run_or_no_run(data, tmp_path, capsys):
    """No Ray: the refusals come from validation, before any work."""
    out = tmp_path / "out"
    assert main(_argv(data, str(out), "--resume")) == 2  # nothing to resume
    assert "--resume" in capsys.readouterr().err
    # A partial run's plan as classify records it, by hand: 3 chunks of the same input, model and key.
    out.mkdir()
    with open(f"{data['model']}/weights.pt", "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    progress = {"input": data["manifest"], "model_sha256": sha, "key_columns": ["gbifID", "image_uri"],
                "commit_every": COMMIT_EVERY, "input_rows": ROWS, "chunks": 3}
    (out / "_plantray_progress.json").write_text(json.dumps(progress))
    (out / "chunk-000000-x.parquet").write_bytes(b"")
    assert main(_argv(data, str(out), "--resume", "--commit-every", "30")) == 2
    err = capsys.readouterr().err
    assert "commit_every" in err and "--overwrite" in err and "model_sha256" not in err, err
    assert main(_argv(data, str(out))) == 2
    err = capsys.readouterr().err
    assert "partial" in err and "--resume" in err and "--overwrite" in err, err


def _layout(out, chunks: int, markers: dict[int, list[str]], data: list[str]) -> None:
    """An OUTPUT as a killed classify leaves it, written by hand (no plantray code)."""
    os.makedirs(f"{out}/_chunks", exist_ok=True)
    with open(f"{out}/_plantray_progress.json", "w") as f:
        json.dump({"chunks": chunks}, f)
    for chunk, files in markers.items():
        with open(f"{out}/_chunks/{chunk:06d}.json", "w") as f:
            json.dump({"chunk": chunk, "files": files}, f)
    for name in data:
        pq.write_table(pa.table({"image_uri": [name]}), f"{out}/{name}")


def test_check_complete_goes_by_markers_then_success(tmp_path):
    from plantray.inference.outputs import PartialOutput, check_complete, discard_uncommitted

    out = str(tmp_path / "out")
    os.makedirs(f"{out}/_staging/000001")
    pq.write_table(pa.table({"image_uri": ["s"]}), f"{out}/_staging/000001/s.parquet")
    _layout(out, 2, {0: ["chunk-000000-a.parquet"]}, ["chunk-000000-a.parquet", "chunk-000001-b.parquet"])
    with pytest.raises(PartialOutput, match=r"partial .*1 of 2 chunks"):
        check_complete(out)
    removed = discard_uncommitted(out)
    assert [os.path.basename(f) for f in removed] == ["chunk-000001-b.parquet"]
    assert sorted(os.listdir(out)) == ["_chunks", "_plantray_progress.json", "chunk-000000-a.parquet"]
    _layout(out, 2, {1: []}, [])  # the last chunk committed (empty): complete by the markers
    check_complete(out)
    check_complete(str(tmp_path / "out" / "chunk-000000-a.parquet"))  # a single file: nothing to go by
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    check_complete(str(tmp_path))  # a directory without a progress file is not a chunked classify OUTPUT


def test_move_on_s3_and_locally(s3_server, tmp_path):
    import s3fs

    from plantray import storage

    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, key="testing", secret="testing")
    if not s3.exists("plantray-test"):
        s3.mkdir("plantray-test")
    s3.pipe("plantray-test/mv/_staging/0/a.parquet", b"abc")
    storage.move("s3://plantray-test/mv/_staging/0/a.parquet", "s3://plantray-test/mv/chunk-0-a.parquet")
    assert s3.cat("plantray-test/mv/chunk-0-a.parquet") == b"abc"
    assert not s3.exists("plantray-test/mv/_staging/0/a.parquet")
    write(f"{tmp_path}/a/b.bin", b"xyz")
    storage.move(f"{tmp_path}/a/b.bin", f"{tmp_path}/c/d.bin")
    assert open(f"{tmp_path}/c/d.bin", "rb").read() == b"xyz" and not os.path.exists(f"{tmp_path}/a/b.bin")
