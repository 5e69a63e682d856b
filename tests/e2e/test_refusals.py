"""Refusals as a user meets them: the real command against the real condition, exit status 2, one line on
stderr, and nothing written or deleted. None of these needs Ray: each is refused before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plantray(*args: str, env: dict | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m plantray ARGS`` in a fresh interpreter, as a user would."""
    environ = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", "plantray", *args], capture_output=True, text=True, timeout=300,
                          env=environ, cwd=cwd)


def tree(root) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes): what a refusal must leave as it was."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2 and exactly one line on stderr naming ``words``; returns that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in done.stderr
    return lines[0]


def test_quickstart_refuses_a_directory_it_did_not_make(tmp_path):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "photos" / "holiday.jpg").write_bytes(b"not plantray's")
    (home / "notes.txt").write_text("mine")
    before = tree(home)
    done = plantray("quickstart", "--out", str(home))
    assert_refused(done, str(home), "not made by plantray quickstart")
    assert tree(home) == before


def test_quickstart_refuses_the_current_directory(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    done = plantray("quickstart", "--out", ".", cwd=str(tmp_path))
    assert_refused(done, "'.'")
    assert tree(tmp_path) == {"thesis.tex": b"years of work"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny model directory (built in this process; the commands under test only read it)."""
    from tests.helpers import tiny_model

    uri = str(tmp_path_factory.mktemp("model") / "m")
    tiny_model(uri)
    return uri


@pytest.fixture
def manifest(tmp_path):
    """A one-image manifest beside its image."""
    from tests.helpers import jpeg_bytes

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes())
    path = tmp_path / "in.csv"
    path.write_text("image_uri,scientificName\na.jpg,Quercus robur\n")
    return str(path)


def users_directory(root) -> dict[str, bytes]:
    """A directory of the user's own files; returns its contents."""
    root.mkdir(parents=True)
    (root / "field-notes.csv").write_text("site,date\nA,2024-05-01\n")
    return tree(root)


def test_classify_overwrite_never_deletes_files_plantray_did_not_write(tmp_path, model, manifest):
    mine = tmp_path / "mine"
    before = users_directory(mine)
    done = plantray("classify", "--model", model, "--input", manifest, "--output", str(mine), "--overwrite")
    assert_refused(done, "--output", str(mine), "plantray did not write")
    assert tree(mine) == before


def test_evaluate_overwrite_never_deletes_files_plantray_did_not_write(tmp_path, model, manifest):
    mine = tmp_path / "mine"
    before = users_directory(mine)
    done = plantray("evaluate", "--model", model, "--test", f"t={manifest}", "--min-train-images", "0",
                    "--output", str(mine), "--overwrite")
    assert_refused(done, "--output", "plantray did not write")
    assert tree(mine) == before


def test_export_overwrite_never_replaces_an_archive_plantray_did_not_write(tmp_path):
    import zipfile

    preds = tmp_path / "preds"
    preds.mkdir()
    theirs = tmp_path / "publisher.zip"
    with zipfile.ZipFile(theirs, "w") as zf:
        zf.writestr("occurrence.txt", "id\n1\n")
    before = theirs.read_bytes()
    done = plantray("export", "dwca", str(preds), str(theirs), "--overwrite")
    assert_refused(done, "OUT", "plantray did not write")
    assert theirs.read_bytes() == before


# --- storage problems: the real condition, one line, exit 2, nothing written -----------------------------------

NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
                  # no file and no instance metadata service to find credentials in either: a laptop's setting
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_EC2_METADATA_DISABLED": "true"}


def without(env: dict) -> dict:
    """``os.environ`` with the keys of ``env`` removed where their value is empty (unset, not blank)."""
    return {k: v for k, v in env.items() if v}


def plantray_env(*args: str, unset: dict | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """:func:`plantray` with some variables unset (credentials) and others set."""
    environ = {k: v for k, v in os.environ.items() if k not in (unset or {})}
    environ.update({"PYTHONPATH": ROOT, **without(unset or {}), **(env or {})})
    return subprocess.run([sys.executable, "-m", "plantray", *args], capture_output=True, text=True, timeout=300,
                          env=environ)


def bucket_exists(endpoint: str, bucket: str) -> bool:
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing").exists(bucket)


def test_an_input_bucket_that_does_not_exist(s3_server, tmp_path, model):
    out = tmp_path / "out"
    done = plantray("classify", "--model", model, "--input", "s3://no-such-bucket/flora/in.csv", "--output", str(out))
    assert_refused(done, "--input 's3://no-such-bucket/flora/in.csv'", "bucket 'no-such-bucket' does not exist")
    assert not out.exists()


def test_an_output_bucket_that_does_not_exist_is_not_created(s3_server, tmp_path, model, manifest):
    done = plantray("classify", "--model", model, "--input", manifest, "--output", "s3://missing-out-bucket/preds")
    assert_refused(done, "--output 's3://missing-out-bucket/preds'", "bucket 'missing-out-bucket' does not exist")
    assert not bucket_exists(s3_server, "missing-out-bucket")


def test_an_endpoint_nobody_listens_on(tmp_path, model):
    from tests.conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    done = plantray_env("classify", "--model", model, "--input", "s3://flora/in.csv", "--output", str(tmp_path / "o"),
                        env={"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                             "AWS_MAX_ATTEMPTS": "1"})
    assert_refused(done, "--input 's3://flora/in.csv'", f"cannot reach the object store at {endpoint}",
                   "AWS_ENDPOINT_URL")
    assert not (tmp_path / "o").exists()


def test_no_credentials(s3_server, tmp_path, model):
    done = plantray_env("classify", "--model", model, "--input", "s3://plantray-test/in.csv",
                        "--output", str(tmp_path / "o"), unset=NO_CREDENTIALS)
    assert_refused(done, "--input 's3://plantray-test/in.csv'", "no credentials", "AWS_ACCESS_KEY_ID")
    assert not (tmp_path / "o").exists()


def test_no_credentials_for_the_output(s3_server, tmp_path, model, manifest):
    done = plantray_env("evaluate", "--model", model, "--test", f"t={manifest}", "--min-train-images", "0",
                        "--output", "s3://plantray-test/report", unset=NO_CREDENTIALS)
    assert_refused(done, "--output 's3://plantray-test/report'", "no credentials")


def test_a_header_only_csv_is_refused_before_any_work(tmp_path, model):
    empty = tmp_path / "empty.csv"
    empty.write_text("image_uri,scientificName\n")
    out = tmp_path / "out"
    done = plantray("classify", "--model", model, "--input", str(empty), "--output", str(out))
    assert_refused(done, str(empty), "header and no rows")
    assert not out.exists()


def test_a_directory_this_user_may_not_write(tmp_path):
    """Run as the unprivileged user ``nobody`` (root may write anywhere): permission denied, in one line."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as another user")
    shared = tempfile.mkdtemp(prefix="plantray-perm-")
    try:
        os.chmod(shared, 0o755)  # readable by everyone, writable by root only
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*as_nobody, sys.executable, "-c", "import plantray"], capture_output=True,
                               env={**os.environ, "PYTHONPATH": ROOT})
        if probe.returncode != 0:
            pytest.skip("user nobody cannot run this checkout")
        done = subprocess.run([*as_nobody, sys.executable, "-m", "plantray", "synth", f"{shared}/data"],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
        assert_refused(done, f"{shared}/data", "permission denied")
        assert os.listdir(shared) == []
    finally:
        os.rmdir(shared)


def test_a_full_disk_while_writing(tmp_path):
    """A 64 KiB file system fills up during the first images: one line, exit 2, no run record (not complete)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        done = plantray("synth", str(disk / "data"), "--species", "2", "--images-per-species", "4")
        assert_refused(done, "no space left")
        assert not (disk / "data" / "_plantray_run.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# --- usage errors, bugs, the console's flags --------------------------------------------------------------------

def test_a_usage_error_is_the_wrong_line_and_where_to_read_more():
    done = plantray("classify", "--input", "x.csv")
    line = assert_refused(done, "--model", "--output", "plantray classify --help")
    assert "usage:" not in done.stderr and line.startswith("plantray classify: error:")


def test_verbose_and_quiet_work_before_or_after_the_command(tmp_path):
    for argv in (["-q", "classify"], ["classify", "-q"], ["-v", "classify"], ["classify", "--verbose"]):
        done = plantray(*argv, "--model", str(tmp_path / "none"), "--input", "x.csv", "--output", "o")
        assert done.returncode == 2, (argv, done.stderr)
        assert "is not a plantray model" in done.stderr.strip().splitlines()[-1]
        assert ("Traceback" in done.stderr) == ("-v" in argv or "--verbose" in argv), argv


def test_the_test_hook_is_hidden_from_train_help():
    done = plantray("train", "--help")
    assert done.returncode == 0 and "--fail-after-epoch" not in done.stdout and "--epochs" in done.stdout


def test_top_level_help_describes_every_command():
    done = plantray("--help")
    assert done.returncode == 0
    for name in ("synth", "model", "classify", "train", "evaluate", "calibrate", "nightly", "table", "export",
                 "labels", "quickstart"):
        line = next((x for x in done.stdout.splitlines() if x.strip().startswith(name + " ")), "")
        assert len(line.split()) > 2, (name, done.stdout)  # the name and words describing it


def test_a_bug_prints_its_traceback_and_asks_to_be_reported(monkeypatch, capsys):
    from plantray import cli
    from plantray.commands import synth

    def broken(cfg):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(synth, "run", broken)
    assert cli.main(["synth", "somewhere"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert "this is a bug in plantray; please report it" in err


# --- refusals never import torch or Ray -------------------------------------------------------------------------

HEAVY = ("torch", "torchvision", "ray")
PROBE = ("import sys\nfrom plantray.cli import main\nstatus = main(sys.argv[1:])\n"
         f"heavy = {{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}\n"
         "print('STATUS', status, 'HEAVY', ','.join(sorted(heavy)))")


def refusals(tmp_path, model, manifest) -> list[list[str]]:
    """A bad argument, a missing path, a bad manifest and a bad archive for each command that runs on Ray."""
    (tmp_path / "noimg.csv").write_text("path,scientificName\na.jpg,Quercus robur\n")
    (tmp_path / "empty.csv").write_text("image_uri,scientificName\n")
    (tmp_path / "bad.zip").write_bytes(b"PK but not a zip")
    missing, out = str(tmp_path / "missing.csv"), str(tmp_path / "out")
    return [
        ["classify", "--model", str(tmp_path / "no-model"), "--input", manifest, "--output", out],
        ["classify", "--model", model, "--input", missing, "--output", out],
        ["classify", "--model", model, "--input", str(tmp_path / "noimg.csv"), "--output", out],
        ["classify", "--model", model, "--input", str(tmp_path / "empty.csv"), "--output", out],
        ["classify", "--model", model, "--input", str(tmp_path / "bad.zip"), "--output", out],
        ["classify", "--model", model, "--input", manifest, "--output", out, "--top-k", "0"],
        ["evaluate", "--model", model, "--test", "no-equals-sign", "--output", out],
        ["evaluate", "--model", model, "--test", f"t={missing}", "--output", out],
        ["calibrate", "--model", model, "--data", missing],
        ["train", "--data", missing, "--output", out],
        ["train", "--data", manifest, "--output", out, "--epochs", "0"],
        ["nightly", "--model", model, "--input", str(tmp_path / "bad.zip"), "--table", out],
        ["quickstart", "--out", str(tmp_path), "--epochs", "1"],
    ]


def test_refusals_import_neither_torch_nor_ray(tmp_path, model, manifest):
    for argv in refusals(tmp_path, model, manifest):
        done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": ROOT})
        last = done.stdout.strip().splitlines()[-1]
        assert last.split() == ["STATUS", "2", "HEAVY"], (argv, last, done.stderr[-2000:])
        assert not os.path.exists(tmp_path / "out"), argv
