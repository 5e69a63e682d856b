"""plantray on clusters that start empty or small: Ray's fake multi-node autoscaler with a head of no CPUs and
worker types at ``min_workers: 0`` (classify, nightly, evaluate and train each make it add nodes and complete
with every row once), a cluster of 1-CPU nodes, and a worker node lost mid-classify (its images come from a
real HTTP server on 127.0.0.1 that holds most of them back until the node is gone).

Every command runs as a user runs it: ``python -m plantray ...`` as a subprocess with ``RAY_ADDRESS``
pointing at the cluster (the fake nodes are local processes, so local paths are shared).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.autoscaler import FakeAutoscalingCluster
from tests.gated_images import GatedImages
from tests.helpers import SPECIES, jpeg_bytes, tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # starts fake-autoscaling clusters of its own

REPO = Path(__file__).resolve().parents[2]
N = 24  # images: tiny, the machine is small and shared


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """N tiny JPEGs of the 4 test species and manifest.parquet (absolute image_uri, gbifID, scientificName)."""
    root = tmp_path_factory.mktemp("imgs")
    uris = []
    for i in range(N):
        path = root / f"{i:03d}.jpg"
        path.write_bytes(jpeg_bytes(44, 40, seed=i))
        uris.append(str(path))
    pq.write_table(pa.table({"image_uri": uris, "gbifID": [str(7000 + i) for i in range(N)],
                             "scientificName": [SPECIES[i % len(SPECIES)] for i in range(N)]}),
                   root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A tiny random model of the 4 species, each counted with 20 training images (evaluate keeps them)."""
    uri = str(tmp_path_factory.mktemp("model") / "m")
    tiny_model(uri, counts=[20] * len(SPECIES))
    return uri


@pytest.fixture(scope="module")
def fake():
    """Head with no CPUs; the autoscaler may add up to two 2-CPU workers (idle ones end after ~6 s)."""
    with FakeAutoscalingCluster({"cpu2": {"CPU": 2, "max_workers": 2}}, max_workers=2) as cluster:
        yield cluster


@pytest.fixture
def cold(fake):
    """The fake cluster with no worker node up: every test starts from an empty cluster."""
    fake.wait_cold()
    return fake


def plantray(address: str, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """``python -m plantray ARGS`` against the cluster at ``address``."""
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": str(REPO), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "plantray", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # keep what it said: the test's failure message shows it
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[test] killed after {timeout} s"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def expected_uris(images: Path) -> Counter:
    return Counter(pq.read_table(images / "manifest.parquet").column("image_uri").to_pylist())


def read_rows(uri: str) -> pa.Table:
    """A Parquet dataset read with pyarrow (not plantray); run records and other non-Parquet files skipped."""
    return pads.dataset(uri, format="parquet", exclude_invalid_files=True).to_table()


def assert_added_nodes(cluster: FakeAutoscalingCluster, before: int, run: subprocess.CompletedProcess) -> None:
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}\n{cluster.logs()}"
    launched = cluster.launched_nodes()
    assert len(launched) > before and set(launched) == {"cpu2"}, cluster.logs()


def test_classify_on_a_cold_cluster(cold, images, model, tmp_path):
    before = len(cold.launched_nodes())
    out = tmp_path / "out"
    run = plantray(cold.address, "classify", "--model", model, "--input", str(images / "manifest.parquet"),
                   "--output", str(out), "--batch-size", "4", "--decode-batch-size", "4")
    assert_added_nodes(cold, before, run)
    rows = read_rows(str(out))
    assert Counter(rows.column("image_uri").to_pylist()) == expected_uris(images)  # every row exactly once
    assert rows.column("error").null_count == N


def test_nightly_on_a_cold_cluster(cold, images, model, tmp_path):
    before = len(cold.launched_nodes())
    table = str(tmp_path / "table")
    run = plantray(cold.address, "nightly", "--model", model, "--input", str(images / "manifest.parquet"),
                   "--table", table, "--run-id", "n1", "--batch-size", "4", "--join-partitions", "2")
    assert_added_nodes(cold, before, run)
    rows = deltalake.DeltaTable(table).to_pyarrow_table()  # the committed table, read by delta-rs itself
    keys = Counter(zip(rows.column("gbifID").to_pylist(), rows.column("image_uri").to_pylist()))
    manifest = pq.read_table(images / "manifest.parquet")
    assert keys == Counter(zip(manifest.column("gbifID").to_pylist(), manifest.column("image_uri").to_pylist()))


def test_evaluate_on_a_cold_cluster(cold, images, model, tmp_path):
    before = len(cold.launched_nodes())
    out = tmp_path / "report"
    run = plantray(cold.address, "evaluate", "--model", model, "--test", f"t={images / 'manifest.parquet'}",
                   "--output", str(out), "--tta", "center", "--bootstrap", "0", "--batch-size", "4")
    assert_added_nodes(cold, before, run)
    rows = read_rows(str(out / "predictions"))
    assert Counter(rows.column("image_uri").to_pylist()) == expected_uris(images)
    # The report's Top-1 is the share of rows whose first-ranked name is the manifest's, counted here.
    truth = dict(zip(*pq.read_table(images / "manifest.parquet", columns=["image_uri", "scientificName"])
                     .to_pydict().values()))
    hits = sum(r["topk_scientificName"][0] == truth[r["image_uri"]]
               for r in rows.select(["image_uri", "topk_scientificName"]).to_pylist())
    result = json.loads((out / "report.json").read_text())["results"][0]
    assert result["images"]["scored"] == N and result["metrics"]["top1"] == pytest.approx(hits / N)


def test_train_on_a_cold_cluster(cold, images, tmp_path):
    before = len(cold.launched_nodes())
    out = tmp_path / "trained"
    run = plantray(cold.address, "train", "--data", str(images / "manifest.parquet"), "--output", str(out),
                   "--arch", "tinyresnet", "--init", "random", "--epochs", "1", "--num-workers", "1",
                   "--image-size", "32", "--batch-size", "8")
    assert_added_nodes(cold, before, run)
    card = json.loads((out / "model_card.json").read_text())
    assert card["arch"] == "tinyresnet" and card["training"]["epochs"] == 1 and card["num_classes"] == len(SPECIES)
    assert card["weights"]["sha256"] == hashlib.sha256((out / "weights.pt").read_bytes()).hexdigest()
    with open(out / "labels.csv", newline="") as f:
        assert sorted(r["scientificName"] for r in csv.DictReader(f)) == sorted(SPECIES)


def test_a_job_the_cluster_cannot_serve_fails_in_time_with_what_it_asked(cold, images, model, tmp_path):
    # 3 fixed actors of 2 CPUs each (--threads-per-actor 4) and a task CPU: more than two 2-CPU workers hold.
    run = plantray(cold.address, "classify", "--model", model, "--input", str(images / "manifest.parquet"),
                   "--output", str(tmp_path / "out"), "--num-actors", "3", "--threads-per-actor", "4",
                   "--resource-timeout", "5")
    assert run.returncode == 2, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.parquet"))  # no work started
    assert "3 model actors with 2 CPU each, and 1 CPU for Ray Data's read/decode tasks" in run.stderr
    assert "within --resource-timeout 5 s; it has" in run.stderr and "CPUs and 0 GPUs on" in run.stderr


# 1-CPU nodes: fractional actor reservations used to leave 0.75 CPU on every node, and Ray Data's 1-CPU read
# task waited forever. A cold cluster whose only worker type has 1 CPU (the autoscaler's own nodes: a
# fixed `ray start` cluster's dashboard misses its 30 s start-up limit on this loaded 2-core machine).

@pytest.fixture(scope="module")
def ones():
    with FakeAutoscalingCluster({"cpu1": {"CPU": 1, "max_workers": 3}}, max_workers=3) as cluster:
        yield cluster


def test_one_cpu_nodes_complete_classify(ones, images, model, tmp_path):
    ones.wait_cold()
    before = len(ones.launched_nodes())
    run = plantray(ones.address, "classify", "--model", model, "--input", str(images / "manifest.parquet"),
                   "--output", str(tmp_path / "out"), "--batch-size", "2", "--decode-batch-size", "2")
    assert run.returncode == 0, f"{run.stderr[-6000:]}\n{ones.logs()}"
    assert len(ones.launched_nodes()) > before and set(ones.launched_nodes()) == {"cpu1"}
    assert Counter(read_rows(str(tmp_path / "out")).column("image_uri").to_pylist()) == expected_uris(images)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return 0


def _model_actor_raylet(cluster: FakeAutoscalingCluster) -> int | None:
    """The raylet pid of the (fake) node running a model actor (a process titled ray::MapWorker...)."""
    for pid in cluster.pids():
        if _cmdline(pid).startswith("ray::MapWorker"):
            parent = _parent(pid)
            while parent > 1 and "raylet" not in _cmdline(parent).split(" ")[0]:
                parent = _parent(parent)
            if parent > 1:
                return parent
    return None


@pytest.fixture
def gated_images():
    """N images over HTTP: 4 at once, the rest held until the test releases them (at most 120 s)."""
    images = GatedImages(N, free=4, hold=120, size=(44, 40))
    yield images
    images.close()


def test_worker_node_lost_mid_classify_every_row_once(ones, gated_images, model, tmp_path):
    from tests.multinode import descendants

    images, urls, out = gated_images, gated_images.urls(), tmp_path / "out"
    pq.write_table(pa.table({"image_uri": urls, "gbifID": [str(7000 + i) for i in range(N)],
                             "scientificName": [SPECIES[i % len(SPECIES)] for i in range(N)]}),
                   tmp_path / "manifest.parquet")
    env = {**os.environ, "RAY_ADDRESS": ones.address, "PYTHONPATH": str(REPO), "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    cmd = [sys.executable, "-m", "plantray", "classify", "--model", model, "--input",
           str(tmp_path / "manifest.parquet"), "--output", str(out), "--batch-size", "1", "--decode-batch-size", "1",
           # Held fetches must not time out before the gate opens (it holds each at most 120 s).
           "--num-actors", "1", "--http-timeout", "180"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        # Mid-run by construction: the model actor is up and the gate holds the images after the first 4.
        deadline = time.monotonic() + 300
        while (raylet := _model_actor_raylet(ones)) is None or not images.held():
            assert proc.poll() is None, proc.stdout.read()[-5000:]
            assert time.monotonic() < deadline, f"no model actor, or no fetch held ({images.held()})\n{ones.logs()}"
            time.sleep(0.3)
        assert proc.poll() is None, "classify ended before the fault could be injected"
        # Remove the node: its raylet, then everything it started (the model actor among them).
        victims = [raylet, *descendants(raylet)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        images.release()
        log, _ = proc.communicate(timeout=420)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-5000:]
    rows = read_rows(str(out))
    assert Counter(rows.column("image_uri").to_pylist()) == Counter(urls)  # every row once
    assert rows.column("error").null_count == N, rows.column("error").to_pylist()
