"""Fixtures of the end-to-end tests: one real two-node Ray cluster shared by every test that needs two nodes;
one small quickstart run shared by the quickstart and README walk-through tests; headless Chromium for the
review page (one browser per test module)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from tests.multinode import RayCluster, is_alive
from tests.review_data import CHROMIUM, CHROMIUM_ARGS

ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # a default local Ray's address: the harness never touches it


@pytest.fixture(scope="package")
def _shared_two_nodes(s3_server):
    """Head + one worker node, 3 CPUs each, started once for the end-to-end tests and stopped after the last
    of them (after the S3 server, so every node inherits its ``AWS_*`` variables).

    Teardown is itself checked: stopping the cluster ends every process it started (killed and replaced
    worker nodes included) and leaves a default local Ray's address file as it was.
    """
    before = ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None
    cluster = RayCluster(num_workers=1, num_cpus=3, object_store_memory=150 * 1024**2, timeout=300).start()
    try:
        yield cluster
    finally:
        pids = cluster.pids()
        cluster.stop()
    left = [p for p in pids if is_alive(p)]
    assert pids and not left, f"processes of the shared cluster still alive after its teardown: {left}"
    assert (ADDRESS_FILE.read_text() if ADDRESS_FILE.exists() else None) == before


@pytest.fixture
def two_nodes(_shared_two_nodes) -> RayCluster:
    """The shared two-node cluster with both nodes up: a worker node a test killed is replaced right after
    that test (so the cluster has long known the new node when the next test starts), and before each test
    in case one died on its own."""
    _shared_two_nodes.replace_lost_workers()
    assert len(_shared_two_nodes.worker_node_ids) == 1
    yield _shared_two_nodes
    _shared_two_nodes.replace_lost_workers()


@pytest.fixture(scope="module")
def playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium chromium-driver)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture(scope="session")
def quickstart_run(ray_session, tmp_path_factory) -> tuple[Path, str]:
    """``plantray quickstart --out quickstart`` at a tiny scale (3 species, 2 epochs at 32 px), run once in a
    directory of its own as a user runs it from the checkout; returns (that directory, what it printed)."""
    from plantray.cli import main

    root = tmp_path_factory.mktemp("checkout")
    printed = io.StringIO()
    with contextlib.chdir(root), contextlib.redirect_stdout(printed):
        code = main(["quickstart", "--out", "quickstart", "--species", "3", "--images-per-species", "14",
                     "--epochs", "2", "--image-size", "32", "--num-workers", "1"])
    assert code == 0, printed.getvalue()
    return root, printed.getvalue()
