"""Shared fixtures: one local Ray per session, a real S3 server (moto) on 127.0.0.1, tiny data."""

from __future__ import annotations

import os
import socket

import pytest

# Quiet, deterministic Ray for tests: no progress bars, no usage stats, small object store.
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
# What plantray gives an embedded Ray (plantray.cluster.ensure_ray), given here to every Ray the tests start
# (the session Ray, the two-node cluster, the fake autoscalers) and the CLIs they run: Ray Train's controller
# polls its workers every 0.5 s, not 2 s, so the tests' short epochs do not each wait ~2 s for a poll.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


# Kinds of test, marked from what a test uses (README, Tests): `make test` runs them all, `make test-fast`
# only those that need no Ray, no server or child process and no training run.
KIND_BY_FIXTURE = {"ray_session": "ray", "s3_server": "subprocess", "two_nodes": "cluster"}


def pytest_collection_modifyitems(config, items):
    """Marks each test ``ray``/``subprocess``/``cluster`` by the fixtures it uses (directly or not), and every
    end-to-end test ``subprocess`` (they run the CLI or a cluster as a user does)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, kind in KIND_BY_FIXTURE.items():
            if fixture in used:
                item.add_marker(kind)
        if "/tests/e2e/" in str(item.path):
            item.add_marker("subprocess")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(s3_server):
    """One local Ray instance for the whole test session (2 CPUs, 512 MiB object store).

    Starts after the S3 server so that Ray's workers inherit the ``AWS_*`` variables pointing at it.
    """
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    # Left running for the session's other tests; pytest exit ends it.


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session Ray's GCS address: a CLI subprocess given ``RAY_ADDRESS`` submits to it, as a user submits
    to a running cluster, instead of starting an embedded Ray of its own (10-20 s on 2 cores)."""
    return ray_session.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto's server) on 127.0.0.1; AWS_* variables point every client at it.

    The server runs in its own process: delta-rs (the nightly table) holds the GIL during some of its
    calls, so a server thread inside the test process would not answer them until they time out.
    Yields the endpoint URL.
    """
    import subprocess
    import sys
    import time

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:  # bounded wait until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"moto's S3 server did not start on 127.0.0.1:{port}") from None
            time.sleep(0.2)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    server.terminate()
    server.wait(timeout=30)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3(s3_server, ray_session):
    """An s3fs filesystem on the local S3 server with a bucket ``plantray-test``."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, key="testing", secret="testing")
    if not fs.exists("plantray-test"):
        fs.mkdir("plantray-test")
    return fs
