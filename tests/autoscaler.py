"""A cold autoscaling Ray cluster on this machine, for tests: Ray's fake multi-node autoscaler.

The head is ``RAY_FAKE_CLUSTER=1 ray start --head --block --num-cpus=0 --autoscaling-config=FILE`` with
provider ``fake_multinode``: it has no CPUs, every worker type starts at ``min_workers: 0``, and the
autoscaler (the head's ``monitor.py``) launches a worker node as a set of local Ray processes when a task or
actor asks for resources no live node has, and ends it after ``idle_timeout_minutes``. ``gcs_address`` in the
provider config points those nodes at the head's 127.0.0.1 address (without it they dial the machine's
external address).

Every process of the cluster (head, monitor, the fake worker nodes it launches and their workers) stays in
the session of the ``ray start`` process this harness starts with ``start_new_session=True`` (Ray does not
call setsid for its children). Teardown SIGTERMs, then SIGKILLs, exactly that session: never ``ray stop``,
never ``ray.cluster_utils.AutoscalingCluster.start()`` (both end every Ray on the machine).

Usage::

    from tests.autoscaler import FakeAutoscalingCluster, autoscaling_fixture

    cold = autoscaling_fixture(worker_types={"cpu2": {"CPU": 2}})      # a pytest fixture: yields the cluster

    def test_x(cold):
        subprocess.run([...], env={**os.environ, "RAY_ADDRESS": cold.address})
        assert cold.launched_nodes()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.multinode import FAST_FAILURE_ENV, free_port, is_alive


def session_pids(sid: int) -> list[int]:
    """Live pids whose session id (field 6 of /proc/<pid>/stat) is ``sid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def fake_config(worker_types: dict[str, dict], gcs_address: str, max_workers: int = 4,
                idle_timeout_minutes: float = 0.1) -> dict:
    """An autoscaling config for the ``fake_multinode`` provider (the shape of Ray's fake example.yaml).

    Args:
        worker_types: node type name -> resources (``{"CPU": 2}``); each gets ``min_workers: 0`` and
            ``max_workers: 2`` unless the dict carries ``min_workers``/``max_workers`` keys.
        gcs_address: the head's ``127.0.0.1:port``, where the fake nodes connect.
        max_workers: worker nodes of all types together.
        idle_timeout_minutes: how long an idle worker node lives.
    """
    types = {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}
    for name, spec in worker_types.items():
        spec = dict(spec)
        limits = {"min_workers": spec.pop("min_workers", 0), "max_workers": spec.pop("max_workers", 2)}
        types[name] = {"resources": spec, "node_config": {}, **limits}
    empty: dict = {}
    return {
        "cluster_name": "plantray-fake", "max_workers": max_workers, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": types, "head_node_type": "ray.head.default",
        "auth": empty, "docker": empty, "file_mounts": empty, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


class FakeAutoscalingCluster:
    """A head with no CPUs plus Ray's fake autoscaler, which adds worker nodes of ``worker_types``.

    Args:
        worker_types: node type name -> resources, see :func:`fake_config`.
        max_workers: worker nodes of all types together.
        env: extra environment for the head (and so for every node it launches).
        timeout: seconds to wait for the head.

    Attributes (after ``start()``): ``address`` (the GCS, "127.0.0.1:port", for ``RAY_ADDRESS``),
    ``root`` (temp dir: config, head log, Ray's session dirs).
    """

    def __init__(self, worker_types: dict[str, dict], max_workers: int = 4, env: dict | None = None,
                 timeout: float = 120.0):
        self.worker_types, self.max_workers, self.timeout = worker_types, max_workers, timeout
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_CLIENT_MODE", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
        bin_dir = os.path.dirname(sys.executable)
        self.env["PATH"] = os.pathsep.join([bin_dir, self.env.get("PATH", "")])
        self.env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                         "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **FAST_FAILURE_ENV})
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.root: Path | None = None
        self.address = None

    def start(self) -> FakeAutoscalingCluster:
        """Start the head (with the autoscaler); return once the GCS answers and the head node is ALIVE."""
        # Short root: Ray's Unix socket paths must stay < 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rfa", dir="/tmp"))
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        config = self.root / "autoscaling.json"
        config.write_text(json.dumps(fake_config(self.worker_types, self.address, self.max_workers)))
        ray_bin = Path(sys.executable).with_name("ray")
        cmd = [str(ray_bin), "start", "--head", "--block", "--num-cpus=0", "--num-gpus=0", f"--port={port}",
               "--node-ip-address=127.0.0.1", f"--autoscaling-config={config}",
               # No dashboard: its modules' 30 s start-up limit fails on a loaded 2-core machine, and the GCS
               # answers everything the tests ask (node states).
               "--include-dashboard=false", f"--temp-dir={self.root / 'ray'}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0",
               "--disable-usage-stats"]
        with open(self.root / "head.log", "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.root, start_new_session=True)
        try:
            self._wait_head(time.monotonic() + self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 3.0) -> None:
        """End every process of this cluster's session (SIGTERM, then SIGKILL), then remove its temp dir.

        A short grace: some of the session's processes outlive a SIGTERM, and waiting 10 s for them cost each
        cluster's teardown 10 s; what is left after ``grace`` is SIGKILLed (the test's own cluster, no data)."""
        if self.proc is None:
            return
        sid = self.proc.pid  # start_new_session: the session id is the `ray start` pid
        pids = session_pids(sid)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while (pids := session_pids(sid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pids:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeAutoscalingCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Inspection

    def monitor_logs(self) -> str:
        """The autoscaler's own logs (``<session>/logs/monitor.*``) of this cluster's session."""
        files = sorted((self.root / "ray").glob("session_*/logs/monitor.log"))
        return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())

    def launched_nodes(self) -> list[str]:
        """Node types the autoscaler launched, one entry per node, read from its log (``monitor.log``)."""
        # "NodeLauncher0: Launching 1 nodes, type cpu2." (Ray 2.58's autoscaler v1 wording)
        found = re.findall(r"Launching (\d+) nodes?, type (\S+?)\.$", self.monitor_logs(), re.MULTILINE)
        return [t for n, t in found for _ in range(int(n))]

    def alive_nodes(self) -> list:
        """GCS node infos of the ALIVE nodes, head included."""
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        nodes = GcsClient(address=self.address).get_all_node_info(timeout=10).values()
        return [n for n in nodes if n.state == GcsNodeInfo.ALIVE]

    def worker_nodes(self) -> int:
        """Worker nodes ALIVE now (the head excluded)."""
        return sum(1 for n in self.alive_nodes() if not n.is_head_node)

    def wait_cold(self, timeout: float = 180.0) -> None:
        """Wait until the autoscaler has ended every idle worker node (``idle_timeout_minutes``)."""
        deadline = time.monotonic() + timeout
        while self.worker_nodes():
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker nodes still up after {timeout} s\n{self.logs()}")
            time.sleep(1)

    def pids(self) -> list[int]:
        """Live pids of this cluster's session."""
        return session_pids(self.proc.pid) if self.proc else []

    def logs(self) -> str:
        """The head's ``ray start`` output and the tail of the autoscaler's log, for failure messages."""
        head = (self.root / "head.log").read_text(errors="replace") if self.root else ""
        return f"--- head ---\n{head[-3000:]}\n--- monitor ---\n{self.monitor_logs()[-6000:]}"

    def _wait_head(self, deadline: float) -> None:
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"head exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.alive_nodes():
                    return
            except Exception as e:  # GCS still starting
                if time.monotonic() > deadline:
                    raise TimeoutError(f"head at {self.address} not up: {e}\n{self.logs()}") from e
            if time.monotonic() > deadline:
                raise TimeoutError(f"head at {self.address} not up\n{self.logs()}")
            time.sleep(0.5)


def autoscaling_fixture(scope: str = "module", **kwargs):
    """A pytest fixture yielding a started :class:`FakeAutoscalingCluster` (``kwargs`` go to it)."""

    @pytest.fixture(scope=scope)
    def _cluster():
        with FakeAutoscalingCluster(**kwargs) as cluster:
            yield cluster

    return _cluster


__all__ = ["FakeAutoscalingCluster", "autoscaling_fixture", "fake_config", "is_alive", "session_pids"]
