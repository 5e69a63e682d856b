"""The multi-node harness itself: a real two-node Ray cluster (separate processes on 127.0.0.1) runs jobs
submitted through the Jobs API, spreads tasks over both nodes and survives losing its worker node. That its
teardown ends every process it started is checked by the shared cluster's fixture (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.multinode import RayCluster, is_alive, wait_for_job

pytestmark = pytest.mark.slow

SPREAD_JOB = """
import json, time
import ray

ray.init()

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def where(i):
    time.sleep(0.5)
    return i, ray.get_runtime_context().get_node_id()

print("RESULT " + json.dumps(ray.get([where.remote(i) for i in range(4)])), flush=True)
"""

# Each attempt leaves <index>-<node>-<attempt>.start and, after its second of work, .done in a directory on
# this (shared) host, so the test can see which task is running where and how often each one ran. On the node
# named in argv[2] (the worker) a task then waits for the file "release" (at most 120 s) before it is done, so
# the worker still runs tasks when the test kills it, however fast the rest of the job goes.
FAULT_JOB = """
import json, os, sys, time, uuid
import ray

marks, held_node = sys.argv[1], sys.argv[2]
ray.init()

@ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")
def work(i):
    node = ray.get_runtime_context().get_node_id()
    stem = os.path.join(marks, f"{i}-{node}-{uuid.uuid4().hex}")
    open(stem + ".start", "w").close()
    time.sleep(1)
    deadline = time.monotonic() + 120
    while node == held_node and not os.path.exists(os.path.join(marks, "release")) and time.monotonic() < deadline:
        time.sleep(0.1)
    open(stem + ".done", "w").close()
    return i, node

print("RESULT " + json.dumps(ray.get([work.remote(i) for i in range(20)], timeout=150)), flush=True)
"""


def _submit(cluster: RayCluster, workdir: Path, script: str, entrypoint: str) -> tuple[JobSubmissionClient, str]:
    workdir.mkdir()
    (workdir / "job.py").write_text(script)
    client = JobSubmissionClient(cluster.dashboard_url)
    return client, client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": str(workdir)})


def _wait_job(client: JobSubmissionClient, job_id: str, cluster: RayCluster, timeout: float = 150) -> str:
    """Wait for a terminal status; fail with the job's and the nodes' logs."""
    status = wait_for_job(client, job_id, timeout)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"{status}\n{logs}\n{cluster.logs()}"
    return logs


def _result(logs: str) -> list[tuple[int, str]]:
    line = next(ln for ln in logs.splitlines() if ln.startswith("RESULT "))
    return [(i, node) for i, node in json.loads(line[len("RESULT "):])]


def test_job_runs_tasks_on_both_nodes(two_nodes, tmp_path):
    client, job_id = _submit(two_nodes, tmp_path / "job", SPREAD_JOB, "python job.py")
    results = _result(_wait_job(client, job_id, two_nodes))

    assert sorted(i for i, _ in results) == [0, 1, 2, 3]
    assert {node for _, node in results} == {two_nodes.head_node_id, *two_nodes.worker_node_ids}
    assert len(two_nodes.worker_node_ids) == 1 and two_nodes.head_node_id not in two_nodes.worker_node_ids


def test_job_survives_worker_loss(two_nodes, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    cluster = two_nodes
    head, worker = cluster.head_node_id, cluster.worker_node_ids[0]
    client, job_id = _submit(cluster, tmp_path / "job", FAULT_JOB, f"python job.py {marks} {worker}")

    # Crash the worker node once a few tasks are done and one of its tasks started: held there, it is running.
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"no task started on the worker\n{client.get_job_logs(job_id)}"
        assert not client.get_job_status(job_id).is_terminal(), client.get_job_logs(job_id)
        done = {p.stem for p in marks.glob("*.done")}
        running = [p for p in marks.glob(f"*-{worker}-*.start") if p.stem not in done]
        if len(done) >= 3 and running:
            break
        time.sleep(0.05)
    killed = cluster.kill_worker(0)
    assert killed and not any(is_alive(p) for p in killed)
    (marks / "release").touch()  # nothing is left to hold; a retry elsewhere never waits anyway

    results = _result(_wait_job(client, job_id, cluster))
    assert cluster.alive_node_ids() == {head}

    # Every task's result exactly once; the tasks cut short on the worker (started there, never done:
    # known only after the kill, so no race with a task finishing as the node dies) re-ran on the head.
    assert sorted(i for i, _ in results) == list(range(20))
    done = {p.stem for p in marks.glob("*.done")}
    starts = [p.stem.split("-") for p in marks.glob("*.start")]
    cut = {int(n) for n, node, tag in starts if node == worker and f"{n}-{node}-{tag}" not in done}
    assert cut, "no task was running on the worker when it was killed"
    for victim in cut:
        assert dict(results)[victim] == head
        assert (str(victim), head) in {(n, node) for n, node, _ in starts}
