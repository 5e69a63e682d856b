"""The jobs on a real multi-node Ray cluster (head + worker as separate processes), submitted through the Jobs
API with the repository as working_dir, reading and writing the tests' S3 server: ``jobs/classify.py`` end to
end, ``jobs/nightly.py`` submitted twice on one day with more images the second time, and ``jobs/nightly.py``
surviving the loss of the worker node mid-run without losing or duplicating rows (its images come from a real
HTTP server on 127.0.0.1 that holds most of them back until the node is gone, so the fault always lands
mid-run)."""

from __future__ import annotations

import collections
import datetime as dt
import os
import time

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.gated_images import GatedImages
from tests.helpers import jpeg_bytes, tiny_model
from tests.multinode import RayCluster, wait_for_job

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "plantray-test"
EXCLUDES = [".git", ".venv", "tests", "bench", "outputs", "runs", "quickstart", "*.log"]


@pytest.fixture
def cluster(two_nodes):
    """The session's shared head + worker (tests/e2e/conftest.py); every node has the S3 server's AWS_* variables."""
    return two_nodes


def _upload(s3, tmp_path, prefix: str, n: int) -> list[str]:
    """n tiny JPEGs and a manifest with relative URIs under s3://BUCKET/prefix; returns the URIs."""
    names = [f"img/{i:04d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        s3.pipe(f"{BUCKET}/{prefix}/{name}", jpeg_bytes(40, 36, seed=i))
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_uri": names, "gbifID": [str(5000 + i) for i in range(n)]}), buf)
    s3.pipe(f"{BUCKET}/{prefix}/manifest.parquet", buf.getvalue().to_pybytes())
    return names


def _model(s3, tmp_path, prefix: str) -> str:
    local = str(tmp_path / "model")
    tiny_model(local)
    for f in os.listdir(local):
        s3.put(os.path.join(local, f), f"{BUCKET}/{prefix}/{f}")
    return f"s3://{BUCKET}/{prefix}"


def _submit(cluster: RayCluster, entrypoint: str) -> tuple[JobSubmissionClient, str]:
    client = JobSubmissionClient(cluster.dashboard_url)
    env = {"working_dir": REPO, "excludes": EXCLUDES, "env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}}
    return client, client.submit_job(entrypoint=entrypoint, runtime_env=env)



def _read(s3, files: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(s3.open(f.removeprefix("s3://"), "rb")) for f in files])


def test_classify_job_on_two_nodes(cluster, s3, tmp_path):
    names = _upload(s3, tmp_path, "cj", 12)
    model = _model(s3, tmp_path, "cj-model")
    out = f"s3://{BUCKET}/cj-out"
    client, job_id = _submit(cluster, f"python jobs/classify.py --model {model} --input "
                                      f"s3://{BUCKET}/cj/manifest.parquet --output {out} --batch-size 4")
    status = wait_for_job(client, job_id)
    assert status == JobStatus.SUCCEEDED, f"{client.get_job_logs(job_id)}\n{cluster.logs()}"
    files = [f"s3://{f}" for f in s3.find(f"{BUCKET}/cj-out") if f.endswith(".parquet")]
    rows = _read(s3, files)
    assert sorted(rows.column("image_uri").to_pylist()) == sorted(names)
    assert rows.column("error").null_count == rows.num_rows


def _delta_options() -> dict[str, str]:
    """delta-rs storage options for the tests' S3 server (written here, not taken from plantray)."""
    return {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_nightly_job_rerun_same_day(cluster, s3, tmp_path):
    """Issue 21 through the Jobs API: 20 images, then the same 20 plus 10 new ones, both without --run-id."""
    names = _upload(s3, tmp_path, "rr", 30)  # 30 images and manifest.parquet naming all of them
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_uri": names[:20], "gbifID": [str(5000 + i) for i in range(20)]}), buf)
    s3.pipe(f"{BUCKET}/rr/first20.parquet", buf.getvalue().to_pybytes())
    model, table = _model(s3, tmp_path, "rr-model"), f"s3://{BUCKET}/rr-table"
    logs = []
    for manifest in ("first20.parquet", "manifest.parquet"):
        client, job_id = _submit(cluster, f"python jobs/nightly.py --model {model} --input s3://{BUCKET}/rr/{manifest}"
                                          f" --table {table} --batch-size 4 --decode-batch-size 4")
        assert wait_for_job(client, job_id) == JobStatus.SUCCEEDED, f"{client.get_job_logs(job_id)}\n{cluster.logs()}"
        logs.append(client.get_job_logs(job_id))
    rows = deltalake.DeltaTable(table, storage_options=_delta_options()).to_pyarrow_table()
    keys = list(zip(rows.column("gbifID").to_pylist(), rows.column("image_uri").to_pylist()))
    assert len(keys) == len(set(keys)) == 30  # every key once
    assert set(keys) == {(str(5000 + i), name) for i, name in enumerate(names)}
    runs = collections.Counter(rows.column("run_id").to_pylist())
    base = min(runs)
    now = dt.datetime.now(dt.timezone.utc)
    assert base in {f"nightly-{d:%Y-%m-%d}" for d in (now - dt.timedelta(days=1), now)}
    assert runs == {base: 20, f"{base}.2": 10}  # two runs: the first 20, then the 10 new images
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.ls(f"{BUCKET}/rr-table/_runs")) == [base, f"{base}.2"]
    assert f"run {base} already completed; 10 input rows are new for model" in logs[1], logs[1]
    assert f"-> run {base}.2" in logs[1]


def _worker_busy(cluster: RayCluster) -> bool:
    """Whether a model actor (Predictor) is alive on the worker node."""
    from ray.util.state import list_actors

    actors = list_actors(address=cluster.dashboard_url, filters=[("state", "=", "ALIVE")],
                         raise_on_missing_output=False)
    return any(a.node_id in cluster.worker_node_ids and "MapWorker" in (a.class_name or "") for a in actors)


@pytest.fixture
def gated_images():
    """600 images over HTTP: 40 at once, the rest held until the test releases them (at most 120 s)."""
    images = GatedImages(600, free=40, hold=120)
    yield images
    images.close()


def test_nightly_job_survives_worker_loss(cluster, s3, tmp_path, gated_images):
    images = gated_images
    n = len(images.images)
    urls = images.urls()
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"image_uri": urls, "gbifID": [str(5000 + i) for i in range(n)]}), buf)
    s3.pipe(f"{BUCKET}/nj/manifest.parquet", buf.getvalue().to_pybytes())
    model = _model(s3, tmp_path, "nj-model")
    table = f"s3://{BUCKET}/nj-table"
    command = (f"python jobs/nightly.py --model {model} --input s3://{BUCKET}/nj/manifest.parquet --table {table} "
               "--run-id night1 --batch-size 4 --decode-batch-size 4 --stale-hours 0 "
               # Held fetches must not time out before the gate opens (it holds each at most 120 s).
               "--http-timeout 180 "
               # Two actors of 2 CPUs each: no 3-CPU node holds both, so one works on the worker node.
               "--num-actors 2 --threads-per-actor 4")
    client, job_id = _submit(cluster, command)
    # Mid-run: the model actor on the worker node is up, and the gate holds the rest of the images.
    deadline = time.monotonic() + 300
    while not _worker_busy(cluster):
        assert time.monotonic() < deadline, client.get_job_logs(job_id)
        assert not client.get_job_status(job_id).is_terminal(), client.get_job_logs(job_id)
        time.sleep(0.1)
    deadline = time.monotonic() + 60
    while not images.held():  # the run is waiting for images: it cannot have finished
        assert time.monotonic() < deadline, client.get_job_logs(job_id)
        time.sleep(0.1)
    assert not client.get_job_status(job_id).is_terminal(), "the job ended before the fault could be injected"
    cluster.kill_worker(0)
    images.release()
    # The same submission completes: Ray Data re-runs the lost node's tasks and restarts its model actor.
    status = wait_for_job(client, job_id)
    assert status == JobStatus.SUCCEEDED, f"{client.get_job_logs(job_id)}\n{cluster.logs()}"
    # The committed table, read by delta-rs itself (nothing of plantray's reading code).
    rows = deltalake.DeltaTable(table, storage_options=_delta_options()).to_pyarrow_table()
    assert set(rows.column("run_id").to_pylist()) == {"night1"}
    keys = list(zip(rows.column("gbifID").to_pylist(), rows.column("image_uri").to_pylist()))
    assert len(keys) == len(set(keys)) == n  # none missing, none duplicated
    assert set(keys) == {(str(5000 + i), url) for i, url in enumerate(urls)}
    assert rows.column("error").null_count == n
