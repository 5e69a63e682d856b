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
