"""Deployment files: the cluster launcher config passes Ray's own validation, the Kubernetes manifests and the
crontab have the shape their consumers expect and all run a real plantray job with a valid schedule."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
JOB_NAMES = {"train", "classify", "evaluate", "nightly"}
JOB_RE = re.compile(r"\bjobs/(\w+)\.py\b")


def _ray_pin() -> str:
    return re.search(r'"ray\[[^\]]*\]==([\w.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def _cron_field_ok(field: str, lo: int, hi: int) -> bool:
    """One crontab time field: '*', 'a', 'a-b', each optionally '/step', comma-separated, within [lo, hi]."""
    for part in field.split(","):
        m = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not m:
            return False
        a = int(m.group(2)) if m.group(2) else lo
        b = int(m.group(3)) if m.group(3) else (hi if m.group(1) == "*" else a)
        if not (lo <= a <= b <= hi) or (m.group(4) is not None and int(m.group(4)) < 1):
            return False
    return True


def _valid_schedule(schedule: str) -> bool:
    fields = schedule.split()
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    return len(fields) == 5 and all(_cron_field_ok(f, lo, hi) for f, (lo, hi) in zip(fields, ranges))


def test_cron_schedule_checker():
    assert _valid_schedule("30 2 * * *") and _valid_schedule("*/15 0-6,22 1 1-12/2 0")
    for bad in ["30 2 * *", "60 2 * * *", "0 24 * * *", "0 0 0 * *", "0 0 * 13 *", "0 0 * * 8", "a b c d e"]:
        assert not _valid_schedule(bad), bad


# Cluster launcher (AWS)


@pytest.fixture(scope="module")
def cluster_config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


@pytest.fixture(scope="module")
def prepared(cluster_config):
    """The config as `ray up` sees it before touching AWS: defaults filled in, setup commands merged."""
    return prepare_config(copy.deepcopy(cluster_config))


def test_cluster_yaml_passes_ray_launcher_validation(prepared):
    validate_config(prepared)  # ray-schema.json plus the launcher's own checks; raises on any problem


def test_validation_is_not_vacuous(prepared):
    bad = copy.deepcopy(prepared)
    bad["available_node_types"]["gpu_worker"]["InstanceType"] = "g5.xlarge"  # belongs in node_config
    with pytest.raises(jsonschema.ValidationError):
        validate_config(bad)
    bad = copy.deepcopy(prepared)
    bad["available_node_types"]["cpu_worker"]["min_workers"] = bad["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(bad)


def test_head_only_coordinates_and_workers_split_gpu_and_cpu(cluster_config):
    types = cluster_config["available_node_types"]
    head = types[cluster_config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    workers = {name: t for name, t in types.items() if name != cluster_config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU", 0) > 0]
    assert gpu and cpu
    assert all(re.match(r"(g5|g6|p4d|p5)\.", t["node_config"]["InstanceType"]) for t in gpu)
    assert all(t["node_config"]["InstanceType"].startswith("c7i.") for t in cpu)
    assert all(t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in cpu)
    assert all(t.get("min_workers", 0) <= t["max_workers"] for t in workers.values())
    # Every node gets S3 access from an instance profile, never from keys in the file.
    assert all("IamInstanceProfile" in t["node_config"] for t in types.values())
    assert "AWS_SECRET_ACCESS_KEY" not in (ROOT / "cluster.yaml").read_text()


def test_images_match_the_ray_pin(cluster_config):
    pin = _ray_pin()
    assert pin == ray.__version__
    images = [cluster_config["docker"]["image"]] + [
        t["docker"]["worker_image"] for t in cluster_config["available_node_types"].values() if "docker" in t]
    assert images and all(img.startswith(f"rayproject/ray:{pin}-") for img in images)


def test_setup_commands_install_plantray_on_every_node(cluster_config, prepared):
    # The project is mounted from the repository root (where `ray up` runs) ...
    (remote,) = [r for r, local in cluster_config["file_mounts"].items() if Path(ROOT, local).resolve() == ROOT]
    assert re.search(r'^name = "plantray"$', (ROOT / "pyproject.toml").read_text(), re.M)
    # ... and pip-installed from there by the common setup commands, which `ray up` runs on head and workers.
    installs = [shlex.split(c) for c in prepared["setup_commands"] if "pip" in c]
    assert any(c[:2] == ["pip", "install"] and remote in c for c in installs), prepared["setup_commands"]
    assert set(prepared["setup_commands"]) <= set(prepared["head_setup_commands"])


# Kubernetes (KubeRay) and cron


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _job_names(command: str) -> list[str]:
    return JOB_RE.findall(command)


@pytest.mark.parametrize("name, api, kind", [
    ("rayjob-classify.yaml", "ray.io/v1", "RayJob"),
    ("raycronjob-nightly.yaml", "ray.io/v1", "RayCronJob"),
    ("cronjob-nightly.yaml", "batch/v1", "CronJob"),
])
def test_manifest_kinds(name, api, kind):
    (doc,) = _docs(name)
    assert (doc["apiVersion"], doc["kind"]) == (api, kind)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def _check_rayjob_spec(spec: dict, job: str, out_flag: str) -> None:
    assert _job_names(spec["entrypoint"]) == [job] and job in JOB_NAMES
    assert re.search(rf"--model s3://\S+ --input s3://\S+ {out_flag} s3://\S+", spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _ray_pin()
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups
                  if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
    assert gpu_groups
    for group in [cluster["headGroupSpec"], *groups]:
        # KubeRay's rayStartParams is map[string]string: a bare number would be rejected.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        for c in group["template"]["spec"]["containers"]:
            assert re.search(r":[\w.-]+$", c["image"]) and not c["image"].endswith(":latest")  # pinned tag
    for g in groups:
        assert g.get("minReplicas", 0) <= g["replicas"] <= g["maxReplicas"]


def test_rayjob_classify():
    (doc,) = _docs("rayjob-classify.yaml")
    _check_rayjob_spec(doc["spec"], "classify", "--output")


def test_raycronjob_nightly():
    (doc,) = _docs("raycronjob-nightly.yaml")
    spec = doc["spec"]
    # Only fields the alpha CRD (KubeRay 1.6) knows; anything else would be pruned silently.
    assert set(spec) <= {"schedule", "jobTemplate", "suspend"}
    assert _valid_schedule(spec["schedule"])
    _check_rayjob_spec(spec["jobTemplate"], "nightly", "--table")
    assert "RayCronJob=true" in (K8S / "raycronjob-nightly.yaml").read_text()  # the feature gate, stated


def test_cronjob_nightly_submits_to_a_long_running_cluster():
    (doc,) = _docs("cronjob-nightly.yaml")
    spec = doc["spec"]
    assert _valid_schedule(spec["schedule"]) and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    command = " ".join(container.get("command", []) + container.get("args", []))
    assert re.search(r"ray job submit --address http://[a-z0-9.-]+-head-svc[a-z0-9.-]*:8265 ", command)
    assert "--working-dir" in command and " -- python jobs/" in command
    assert _job_names(command) == ["nightly"]
    assert re.search(r"--model s3://\S+ --input s3://\S+ --table s3://\S+", command)


def test_crontab_line():
    lines = [ln for ln in (ROOT / "deploy" / "crontab").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#") and not re.match(r"^[A-Z_]+=", ln)]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert _valid_schedule(" ".join(fields[:5]))
    command = fields[5]
    assert re.search(r"\bflock -n \S+", command) and "ray job submit" in command and "cluster.yaml" in command
    assert _job_names(command) == ["nightly"]
    # cron turns a bare % into a newline: every % in the command must be escaped.
    assert not re.search(r"(?<!\\)%", command)
