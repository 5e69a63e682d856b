"""``plantray train`` on real Ray Train (2 CPU workers, gloo DDP) with synthetic plants.

Proves: the network learns (loss falls, held-out top-1 through ``plantray classify`` far above chance),
the artifact is complete, an unreadable training image is skipped and counted, a worker failure is
recovered from the last checkpoint, a finished run is not redone, and bad input exits 2 early.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from plantray.cli import main
from plantray.commands.synth import SynthConfig, synthesize
from plantray.commands.train import TrainConfig, train
from plantray.training.loop import build_optimizer, load_checkpoint, save_checkpoint
from plantray.training.run import FAIL_AFTER_EPOCH_ENV
from tests.helpers import add_broken_image

SPECIES = 4
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 species x 24 train / 8 test tiny images, plus one non-image file among the training images."""
    root = tmp_path_factory.mktemp("synth")
    synthesize(SynthConfig(str(root), species=SPECIES, images_per_species=24, test_per_species=8,
                           unseen_per_species=1, min_pixels=3000, max_pixels=8000, seed=3))
    add_broken_image(root)
    return root


def tiny(root, output, **kw) -> TrainConfig:
    """A small, fast configuration: plantray's tinyresnet from scratch at 32 px on 2 workers."""
    base = dict(data=str(root / "train_plus.parquet"), output=str(output), arch="tinyresnet", init="random",
                epochs=8, num_workers=2, image_size=32, batch_size=16, lr=2e-3, seed=1,
                data_license="CC-BY 4.0 (synthetic)", data_citation="plantray synth")
    return TrainConfig(**{**base, **kw})


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_workers_that_cannot_be_placed_fail_in_bounded_time_naming_the_ask(data, tmp_path, ray_session):
    # The session's Ray has 2 CPUs: 3 workers of 1 CPU never fit. The run fails after --resource-timeout
    # (not Ray Train's endless retries), naming what it asked for and what the cluster has.
    from plantray.training.resources import ResourcesUnavailable

    cfg = tiny(data, tmp_path / "m", num_workers=3, cpus_per_worker=1.0, epochs=1, resource_timeout=3)
    with pytest.raises(ResourcesUnavailable) as e:
        train(cfg)
    message = str(e.value)
    assert "--resource-timeout 3 s" in message and "3 worker(s) of CPU 1 each" in message
    assert "the cluster has CPU 2 in total" in message and "on 1 node(s)" in message
    assert not (tmp_path / "m" / "model_card.json").exists()


def test_workers_holding_every_cpu_of_a_local_ray_are_refused_before_any_work(data, tmp_path, ray_session):
    # The session's Ray (2 CPUs, started by this process) cannot grow: 3 workers of half a CPU would leave
    # half a CPU, less than a read task takes, and the run would wait for its first batch for ever.
    from plantray.config import ConfigError

    with pytest.raises(ConfigError) as e:
        train(tiny(data, tmp_path / "m", num_workers=3, epochs=1))
    assert "would leave this local Ray's 2 CPUs less than the 1 CPU" in str(e.value)
    assert "use --num-workers 2" in str(e.value)
    assert not (tmp_path / "m").exists()


def _assert_thread_budget(history: list[dict], workers: int) -> None:
    """Torch threads chosen inside each worker: together the workers of a node never ask for more threads than
    the node has CPUs (the cores this machine lets us run on, at most the CPUs its Ray node counts), and each
    has at least one. The session's Ray is one node, so every worker is on it."""
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 1
    node_cpus = min(len(os.sched_getaffinity(0)), int(nodes[0]["Resources"]["CPU"]))
    for m in history:
        assert m["workers"] == workers and 1 <= m["threads"] and m["threads"] * m["workers"] <= node_cpus, m


@pytest.mark.slow
def test_trains_and_classifies_held_out_images(trained, tmp_path):
    """The session's shared training run (tests/integration/conftest.py: 1 worker, --val) is complete and learnt."""
    from plantray.commands.classify import ClassifyConfig, classify

    data, out, summary, config = trained["data"], trained["model"], trained["summary"], trained["config"]
    # Data: one unreadable image skipped and counted, not fatal.
    assert summary["skipped_unreadable"] == 1
    card = json.loads((out / "model_card.json").read_text())
    assert card["data"]["skipped_unreadable"] == 1
    assert card["data"]["license"] == config["license"] and card["data"]["citation"] == config["citation"]
    assert card["training"]["config"]["epochs"] == config["epochs"]
    assert card["hardware"]["workers"] == config["workers"]
    _assert_thread_budget(read_jsonl(out / "metrics.jsonl"), config["workers"])
    assert card["input"]["crop_size"] == 64 and card["arch"] == "resnet18"
    # Per-class counts in labels.csv match the manifest (the broken row is a row of the first species).
    manifest = pq.read_table(data / "train_plus.parquet").column("scientificName").to_pylist()
    expected = collections.Counter(manifest)
    rows = (out / "labels.csv").read_text().splitlines()
    header = rows[0].split(",")  # the per-class training counts, by column name (taxon columns follow them)
    got = {r.split(",")[0]: int(r.split(",")[header.index("train_images")]) for r in rows[1:]}
    assert got == dict(expected) and rows[0].startswith("scientificName")
    # Loss falls; one metrics row per epoch; a real PNG curve.
    history = read_jsonl(out / "metrics.jsonl")
    assert [m["epoch"] for m in history] == list(range(1, config["epochs"] + 1))
    assert min(m["loss"] for m in history[-3:]) < history[0]["loss"] * 0.7
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy")
    # The model directory holds the model; its checkpoints live beside it, where the card says.
    assert card["checkpoints"] == f"{out}-checkpoints/run" and os.path.isdir(card["checkpoints"])
    assert not [p for p in out.iterdir() if p.is_dir() and p.name != "calibration"]
    # The trained model through classify on 40 held-out images per species: far above chance (1/6). (Its
    # Top-1 on all 1,800 has been 0.77-0.85; 240 images put 0.6 over six standard errors below 0.77.)
    test = pq.read_table(data / "test.parquet", columns=["image_uri", "scientificName"]).to_pylist()
    per_species: dict = collections.defaultdict(list)
    for r in test:
        per_species[r["scientificName"]].append(r)
    held = [r for rs in per_species.values() for r in rs[:40]]
    manifest_uri = tmp_path / "held.parquet"
    pq.write_table(pa.table({"image_uri": [str(data / r["image_uri"]) for r in held]}), manifest_uri)
    pred_dir = tmp_path / "pred"
    classify(ClassifyConfig(model=str(out), input=str(manifest_uri), output=str(pred_dir)))
    got = pads.dataset(pred_dir, format="parquet").to_table(columns=["image_uri", "scientificName"]).to_pylist()
    truth = {str(data / r["image_uri"]): r["scientificName"] for r in held}
    assert len(got) == len(truth) == config["species"] * 40
    top1 = sum(r["scientificName"] == truth[r["image_uri"]] for r in got) / len(got)
    assert top1 >= 0.6, top1


@pytest.mark.slow
def test_worker_failure_resumes_from_checkpoint_and_rerun_does_nothing(data, tmp_path, ray_session, s3, monkeypatch,
                                                                        capsys):
    out = tmp_path / "model"
    storage = f"s3://plantray-test/runs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")  # worker 0 fails once after epoch 1
    cfg = tiny(data, out, data=str(data / "train"), epochs=3, max_failures=1,
               storage=storage, name="resumable", val=str(data / "test.parquet"))
    summary = train(cfg)
    _no_train_actors_left()
    history = read_jsonl(out / "metrics.jsonl")
    # Same number of epochs as an uninterrupted run, each exactly once.
    assert summary["epochs"] == 3 and [m["epoch"] for m in history] == [1, 2, 3]
    # Epoch 1 ran from scratch; epoch 2 started from the epoch-1 checkpoint after the injected failure.
    assert history[0]["restored_epoch"] == 0
    assert history[1]["restored_epoch"] == 1 and history[2]["restored_epoch"] == 1
    assert s3.exists(f"{storage.removeprefix('s3://')}/resumable/_fault_injected")
    assert summary["skipped_unreadable"] == 1  # the broken.jpg inside the tree
    assert all(m["val_images"] == SPECIES * 8 and 0 <= m["val_accuracy"] <= 1 for m in history)
    # Two DDP workers on the session's one node, within its CPUs.
    card = json.loads((out / "model_card.json").read_text())
    assert card["hardware"]["workers"] == 2
    _assert_thread_budget(history, 2)
    sha = card["weights"]["sha256"]
    # Same --name again after completion: nothing is retrained (Ray Train is not even started: the last epoch's
    # checkpoint is there), the same weights are written.
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    capsys.readouterr()
    again = train(TrainConfig(**cfg.__dict__))
    assert "already trained all 3 epochs" in capsys.readouterr().out
    assert again["epochs_run_now"] == 0 and again["epochs"] == 3
    assert read_jsonl(out / "metrics.jsonl") == history
    assert json.loads((out / "model_card.json").read_text())["weights"]["sha256"] == sha


def _no_train_actors_left(timeout: float = 30.0) -> None:
    """A finished train() leaves no Ray Train controller or dataset actors behind in the driver's Ray (Ray Train's
    own Ctrl-C handler used to keep the last run's alive: plantray.training.run._sigint_handler_kept)."""
    import subprocess

    names = ("ray::TrainController", "ray::DatasetManager", "ray::SplitCoordinator")
    deadline = time.monotonic() + timeout
    while True:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout.splitlines()
        left = [line for line in ps if line.startswith(names)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, left


def _manifest(path, rows: dict):
    pq.write_table(pa.table(rows, schema=pa.schema([(k, pa.string()) for k in rows])), path)
    return str(path)


@pytest.mark.parametrize("case", ["epochs", "workers", "val_every", "init", "no_labels", "single_class", "empty"])
def test_bad_input_exits_2_with_the_reason(case, data, tmp_path, capsys, ray_session):
    img = str(data / "test.parquet")
    # Every manifest gets its own file: the table below builds them all.
    args = {"epochs": (img, ["--epochs", "0"], "--epochs 0"),
            "workers": (img, ["--num-workers", "0"], "--num-workers 0"),
            "val_every": (img, ["--val-every", "0"], "--val-every 0 must be >= 1"),
            "init": (img, ["--init", str(tmp_path / "missing.pt")], "does not exist"),
            "no_labels": (_manifest(tmp_path / "a.parquet", {"image_uri": ["a.jpg", "b.jpg"]}), [],
                          "no scientificName"),
            "single_class": (_manifest(tmp_path / "b.parquet", {"image_uri": ["a.jpg", "b.jpg"],
                                                                "scientificName": ["Rosa canina"] * 2}), [],
                             "at least two"),
            "empty": (_manifest(tmp_path / "c.parquet", {"image_uri": [], "scientificName": []}), [],
                      "no rows")}[case]
    data_uri, extra, reason = args
    out = tmp_path / "out"
    # argparse keeps the last occurrence of a flag, so ``extra`` overrides --init random.
    code = main(["train", "--data", data_uri, "--output", str(out), "--arch", "resnet18", "--init", "random", *extra])
    assert code == 2
    assert reason in capsys.readouterr().err
    assert not (out / "model_card.json").exists()


def test_optimizer_groups_schedule_and_checkpoint_round_trip(tmp_path):
    import torch

    from plantray.model.network import build_model

    model, _ = build_model("resnet50", 7, "random")  # the paper's network, with a 7-class head
    optimizer, scheduler = build_optimizer(model, lr=1e-3, backbone_scale=0.1, epochs=10)
    body, head = optimizer.param_groups
    assert head["lr"] == pytest.approx(1e-3) and body["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    # x0.1 at 70% and 90% of 10 epochs
    assert lrs == pytest.approx([1e-3] * 7 + [1e-4] * 2 + [1e-5])
    path = tmp_path / "ckpt.pt"
    save_checkpoint(str(path), model, optimizer, scheduler, 10, [{"epoch": 10}])
    state = load_checkpoint(str(path))
    assert state["epoch"] == 10 and state["history"] == [{"epoch": 10}]
    assert torch.equal(state["model"]["fc.weight"], model.fc.weight)
    _, fresh = build_optimizer(model, 1e-3, 0.1, 10)
    fresh.load_state_dict(state["scheduler"])
    assert fresh.last_epoch == 10 and fresh.get_last_lr()[1] == pytest.approx(1e-5)


class _Driver:
    """``plantray train`` as its own process (own session) submitted to the Ray at ``address``, its output
    lines timestamped; ``pause_at`` names a :mod:`plantray.storage.pause` point to wait at."""

    def __init__(self, args: list[str], address: str, pause_at: str = ""):
        import subprocess
        import sys
        import threading

        env = {**os.environ, "PYTHONPATH": REPO, "RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_ADDRESS": address,
               "PLANTRAY_PAUSE_AT": pause_at}
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "plantray", "train", *args], env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line))

    def seen(self, text: str) -> float | None:
        """When the test read the first line holding ``text`` (None: not yet)."""
        return next((t for t, line in self.lines if text in line), None)

    def wait(self, what: str, check, timeout: float = 300):
        deadline = time.monotonic() + timeout
        while not (got := check()):
            assert self.proc.poll() is None, f"driver exited before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{self.output()}"
            time.sleep(0.1)
        return got

    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def kill_tree(self):
        """SIGKILL the driver and every process it started: a driver crash (the cluster lives on)."""
        import signal

        from tests.multinode import descendants

        pids = [self.proc.pid, *descendants(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.mark.slow
def test_duration_covers_every_invocation_after_sigkill(data, tmp_path, ray_address):
    epochs, killed_after = 4, 2
    out = tmp_path / "model"
    args = ["--data", str(data / "train.parquet"), "--output", str(out), "--arch", "tinyresnet", "--init", "random",
            "--epochs", str(epochs), "--num-workers", "1", "--image-size", "32", "--batch-size", "16",
            "--name", "timed"]
    run_dir = tmp_path / "model-checkpoints" / "timed"
    ledger = run_dir / "_plantray_invocations.json"
    # First invocation: measured from its "training ..." line to the epoch-2 checkpoint, where it waits
    # (plantray.storage.pause) to be SIGKILLed once its time has been recorded past that point (every 2 s).
    first = _Driver(args, ray_address, pause_at=f"epoch:{killed_after}")
    start1 = first.wait("training line", lambda: first.seen("training tinyresnet on"))
    # Ray Train registers a checkpoint (and a restart restores it) once its checkpoint manager's snapshot
    # names it, which may come after the worker's report returned.
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    end1 = first.wait("epoch 2 checkpoint", lambda: snapshot.exists() and "epoch_0002" in snapshot.read_text()
                      and time.monotonic())
    assert (run_dir / f"_paused-epoch-{killed_after}").exists()
    wall_end1 = time.time()
    first.wait("time recorded", lambda: ledger.exists() and ledger.stat().st_mtime > wall_end1 + 0.5)
    first.kill_tree()
    # The epoch the second invocation restores: the last one Ray Train registered before the kill.
    assert max(int(n) for n in re.findall(r"epoch_(\d{4})", snapshot.read_text())) == killed_after
    assert not (out / "model_card.json").exists()
    # Second invocation resumes: measured from its "training ..." line to the final checkpoint.
    second = _Driver(args, ray_address)
    start2 = second.wait("training line", lambda: second.seen("training tinyresnet on"))
    last = run_dir / f"epoch_{epochs:04d}"
    end2 = second.wait(f"epoch {epochs} checkpoint", lambda: last.exists() and time.monotonic())
    assert second.proc.wait(300) == 0, second.output()
    history = read_jsonl(out / "metrics.jsonl")
    assert [m["epoch"] for m in history] == list(range(1, epochs + 1))
    assert [m["restored_epoch"] for m in history] == [0] * killed_after + [killed_after] * (epochs - killed_after)
    card = json.loads((out / "model_card.json").read_text())
    measured = (end1 - start1) + (end2 - start2)
    # A lower bound only: each invocation ran at least as long as the stretch the test saw of it.
    assert card["invocations"] == 2 and card["duration_seconds"] >= measured, (card["duration_seconds"], measured)
    assert json.loads((out / "_plantray_run.json").read_text())["summary"]["seconds"] == card["duration_seconds"]
    assert "over 2 invocations" in second.output()


def test_a_finished_run_is_known_by_its_last_checkpoint_alone(tmp_path):
    """A rerun of a run whose last epoch's checkpoint is written needs no Ray Train; a cut-short file does not count."""
    from plantray.model.network import build_model
    from plantray.training.run import finished_state

    model, _ = build_model("tinyresnet", 3, "random")
    optimizer, scheduler = build_optimizer(model, lr=1e-3, backbone_scale=1.0, epochs=3)
    run = tmp_path / "run"
    assert finished_state(str(run), 3) is None  # nothing written yet
    (run / "epoch_0003").mkdir(parents=True)
    save_checkpoint(str(run / "epoch_0003" / "checkpoint.pt"), model, optimizer, scheduler, 3, [{"epoch": 3}])
    state = finished_state(str(run), 3)
    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3}]
    assert finished_state(str(run), 4) is None  # asked for more epochs than the run has
    data = (run / "epoch_0003" / "checkpoint.pt").read_bytes()
    (run / "epoch_0003" / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # a crash mid-copy
    assert finished_state(str(run), 3) is None
