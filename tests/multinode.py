"""A real multi-node Ray cluster on this machine, for tests: one head and N worker nodes, each a separate
``ray start --block`` process with its own process group, temp dir and ports on 127.0.0.1.

Talk to it only over HTTP (Jobs API, state API) at ``cluster.dashboard_url``; never ``ray.init`` it from
the test process, which may already hold the session's in-process Ray (``ray_session``). The harness never
runs ``ray stop`` and never touches ``/tmp/ray``: it ends only the processes it started, by pid.

Usage::

    from multinode import RayCluster, cluster_fixture

    two_nodes = cluster_fixture(scope="module")          # a pytest fixture in your test module

    def test_x(two_nodes):
        client = JobSubmissionClient(two_nodes.dashboard_url)
        ...

    with RayCluster(num_workers=1) as cluster:            # or by hand
        cluster.kill_worker(0)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Fast node-death detection (GCS health checks), so work on a killed node is retried within seconds
# instead of ~15 s (defaults: 3 s period × 5 failures). Only these clusters' processes see it.
FAST_FAILURE_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "4",
}
# The dashboard (the Jobs API) gives each of its modules 30 s to start and itself 60 s: on a busy 2-core
# machine that fails and `ray start --head` exits. Give them the time instead of retrying the start.
PATIENT_DASHBOARD_ENV = {
    "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "180",
    "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "240",
}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children first, then theirs), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces, so split after ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        nxt = [c for p in frontier for c in children.get(p, [])]
        found.extend(nxt)
        frontier = nxt
    return found


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if is_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_alive(p)]
    return alive


class _Node:
    """One ``ray start --block`` process and what it spawned."""

    def __init__(self, name: str, proc: subprocess.Popen, log_path: Path):
        self.name, self.proc, self.log_path = name, proc, log_path
        self.known_pids: set[int] = {proc.pid}

    def tree(self) -> list[int]:
        """The ``ray start`` pid and its live descendants (remembered for teardown)."""
        pids = [self.proc.pid, *descendants(self.proc.pid)] if self.proc.poll() is None else []
        self.known_pids.update(pids)
        return pids

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self, timeout: float = 20.0) -> list[int]:
        """SIGKILL the raylet first (a node crash), then everything else of this node. Returns the pids."""
        pids = self.tree()
        raylets = [p for p in pids if os.path.basename(_cmdline(p)[0]) == "raylet"]
        _kill(raylets)
        _kill([p for p in pids if p not in raylets])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        left = _wait_gone(sorted(self.known_pids), timeout)
        if left:
            raise RuntimeError(f"{self.name}: processes still alive after SIGKILL: {left}")
        return pids

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM ``ray start`` (it shuts its node down), then SIGKILL whatever it left."""
        self.tree()
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        _kill([p for p in self.known_pids if is_alive(p)])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        _wait_gone(sorted(self.known_pids), grace)


class RayCluster:
    """A head plus ``num_workers`` worker nodes, each ``ray start --block`` in its own process group.

    Args:
        num_workers: worker nodes besides the head.
        num_cpus: logical CPUs per node (head included).
        object_store_memory: bytes of object store per node (Ray's minimum is 75 MiB).
        env: extra environment for every node (e.g. ``AWS_ENDPOINT_URL`` of a local S3); the test
            process's environment is passed through as well.
        fast_failure: shorten GCS health checks so a killed node is declared dead in ~2 s.
        timeout: seconds to wait for the cluster to come up.

    Attributes (after ``start()``): ``gcs_address`` ("127.0.0.1:port"), ``dashboard_url``
    ("http://127.0.0.1:port"), ``head_node_id``, ``worker_node_ids`` (list, by worker index).
    """

    def __init__(self, num_workers: int = 1, num_cpus: int = 1, object_store_memory: int = 100 * 1024**2,
                 env: dict[str, str] | None = None, fast_failure: bool = True, timeout: float = 120.0):
        self.num_workers, self.num_cpus, self.object_store_memory = num_workers, num_cpus, object_store_memory
        self.timeout = timeout
        # Pass the environment through (AWS_* of a local S3 server, ...), minus what an in-process Ray driver
        # sets for itself and would point these nodes at the wrong cluster or debugger.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_CLIENT_MODE", "RAY_JOB_CONFIG_JSON_ENV_VAR")
                    and not (k == "PYTHONBREAKPOINT" and v.startswith("ray."))}
        self.env.update({"RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **PATIENT_DASHBOARD_ENV})
        # `python` in a job's entrypoint must be this interpreter (the venv's), as on a real node image.
        bin_dir = os.path.dirname(sys.executable)
        self.env["PATH"] = os.pathsep.join([bin_dir, *(p for p in self.env.get("PATH", "").split(os.pathsep)
                                                      if p and p != bin_dir)])
        if fast_failure:
            self.env.update(FAST_FAILURE_ENV)
        self.env.update(env or {})
        self.head: _Node | None = None
        self.workers: list[_Node] = []
        self.lost: list[_Node] = []  # worker nodes killed and replaced (their pids are still checked at stop)
        self.replaced_at = float("-inf")  # time.monotonic() when a replacement node last came up
        self.root: Path | None = None
        self.gcs_address = self.dashboard_url = self.head_node_id = None
        self.worker_node_ids: list[str] = []

    # Lifecycle

    def start(self) -> RayCluster:
        """Start the head, then the workers; return once every node is ALIVE and the Jobs API answers."""
        # Short root: Ray's Unix socket paths (<temp>/session_<date>_<pid>/sockets/...) must stay < 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rmn", dir="/tmp"))
        deadline = time.monotonic() + self.timeout
        try:
            self._start_head(deadline)
            for i in range(self.num_workers):
                self.workers.append(self._launch(f"worker-{i}", [f"--address={self.gcs_address}"]))
            self._wait_nodes(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_head(self, deadline: float) -> None:
        """Starts the head and waits for its Jobs API."""
        port, dash = free_port(), free_port()
        self.gcs_address, self.dashboard_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        self.head = self._launch("head", [
            "--head", f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
        ])
        self._wait_jobs_api(deadline)

    def replace_lost_workers(self) -> None:
        """Starts a fresh worker node in place of each one that was killed or died (a cluster shared by
        several tests gets its shape back), and waits until the new ones are ALIVE."""
        lost = [w for w in self.workers if w.proc.poll() is not None]
        if not lost:
            return
        for node in lost:
            node.stop()
            self.lost.append(node)
        self.workers = [w for w in self.workers if w not in lost]
        for _ in lost:
            name = f"worker-{len(self.workers) + len(self.lost)}"
            self.workers.append(self._launch(name, [f"--address={self.gcs_address}"]))
        self._wait_nodes(time.monotonic() + self.timeout)
        self.replaced_at = time.monotonic()

    def stop(self) -> None:
        """End every process this cluster started (workers first) and remove its temp dir."""
        for node in [*self.workers, *self.lost, *([self.head] if self.head else [])]:
            node.stop()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Inspection and faults

    def pids(self) -> set[int]:
        """Every pid this cluster has started or seen spawned (live or not)."""
        nodes = [*self.workers, *self.lost, *([self.head] if self.head else [])]
        for node in nodes:
            node.tree()
        return set().union(*(n.known_pids for n in nodes)) if nodes else set()

    def alive_pids(self) -> set[int]:
        """The subset of ``pids()`` still running."""
        return {p for p in self.pids() if is_alive(p)}

    def kill_worker(self, index: int = 0) -> list[int]:
        """Crash worker node ``index``: SIGKILL its raylet, then the rest of its process tree.

        Returns:
            The pids killed. The head declares the node DEAD within seconds (see ``fast_failure``).
        """
        return self.workers[index].kill()

    def alive_node_ids(self) -> set[str]:
        """Node ids the GCS reports ALIVE (state API over the dashboard)."""
        from ray.util.state import list_nodes

        nodes = list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")],
                           raise_on_missing_output=False)
        return {n.node_id for n in nodes}

    def logs(self) -> str:
        """The ``ray start`` output of every node, for failure messages."""
        nodes = [*([self.head] if self.head else []), *self.workers]
        return "\n".join(f"--- {n.name} ---\n{n.log_tail()}" for n in nodes)

    # Internals

    def _launch(self, name: str, args: list[str]) -> _Node:
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin)] if ray_bin.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
        temp_dir = self.root / name
        temp_dir.mkdir()
        cmd += ["start", "--block", *args, "--node-ip-address=127.0.0.1", f"--node-name={name}",
                f"--num-cpus={self.num_cpus}", "--num-gpus=0", f"--object-store-memory={self.object_store_memory}",
                f"--temp-dir={temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
                # Workers' gRPC ports: OS-chosen, so two raylets on one host (and the session's own Ray)
                # never hand out the same port from the default 10002-19999 range.
                "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats"]
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=self.env, cwd=self.root, start_new_session=True)
        return _Node(name, proc, log_path)

    def _check_running(self) -> None:
        for node in [*([self.head] if self.head else []), *self.workers]:
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}:\n{self.logs()}")

    def _wait_jobs_api(self, deadline: float) -> None:
        from ray.job_submission import JobSubmissionClient

        while True:
            self._check_running()
            try:
                JobSubmissionClient(self.dashboard_url).list_jobs()
                return
            except Exception as e:  # dashboard not up yet: ConnectionError and friends
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Jobs API at {self.dashboard_url} not up: {e}\n{self.logs()}") from e
            time.sleep(0.5)

    def _wait_nodes(self, deadline: float) -> None:
        """Waits until the head and every worker node are ALIVE; records their node ids."""
        from ray.util.state import list_nodes

        want = {"head", *(w.name for w in self.workers)}
        while True:
            self._check_running()
            try:
                nodes = list_nodes(address=self.dashboard_url, filters=[("state", "=", "ALIVE")],
                                   raise_on_missing_output=False)
            except Exception:  # state API still warming up
                nodes = []
            by_name = {n.node_name: n.node_id for n in nodes}
            if want <= set(by_name):
                self.head_node_id = by_name["head"]
                self.worker_node_ids = [by_name[w.name] for w in self.workers]
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes alive: {sorted(by_name)}, wanted {sorted(want)}\n{self.logs()}")
            time.sleep(0.5)


def cluster_fixture(scope: str = "module", **kwargs):
    """A pytest fixture yielding a started :class:`RayCluster` (``kwargs`` go to it), torn down after.

    Assign it to a name in a test module: ``two_nodes = cluster_fixture(num_workers=1)``.
    """

    @pytest.fixture(scope=scope)
    def _cluster():
        with RayCluster(**kwargs) as cluster:
            yield cluster

    return _cluster


def wait_for_job(client, job_id: str, timeout: float = 150):
    """Polls a Jobs API job until it ends; stops it and fails the test with its logs after ``timeout`` s.

    Returns:
        The terminal ``JobStatus``.
    """
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {timeout}s\n{client.get_job_logs(job_id)}")
        time.sleep(0.5)
    return status
