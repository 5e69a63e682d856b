"""README's walk-through, run as written: its ``walkthrough`` code blocks are read from README.md itself, so the
README and this test cannot drift. The blocks start where ``make quickstart`` leaves off (``quickstart/``)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex

import pytest

from plantray.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOCK = re.compile(r"^```(bash|python) walkthrough\n(.*?)^```", re.S | re.M)


def walkthrough() -> list[tuple[str, str]]:
    """README's walk-through blocks in order: (language, text)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return BLOCK.findall(f.read())


def commands(text: str) -> list[list[str]]:
    """The ``plantray`` commands of a bash block (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line)[1:] for line in joined.splitlines() if line.strip().startswith("plantray ")]


def test_the_readme_has_a_walkthrough():
    kinds = [kind for kind, _ in walkthrough()]
    assert kinds.count("bash") >= 1 and kinds.count("python") >= 3  # classify, then pyarrow, DuckDB, pandas


@pytest.mark.slow
def test_the_readme_walkthrough_runs(quickstart_run, monkeypatch):
    # What `make quickstart` leaves in ./quickstart, at a smaller scale (tests/e2e/conftest.py).
    monkeypatch.chdir(quickstart_run[0])
    unseen = [f for _, _, files in os.walk("quickstart/data/unseen") for f in files if f.endswith(".jpg")]
    printed = io.StringIO()
    for kind, text in walkthrough():
        if kind == "bash":
            for argv in commands(text):
                assert main(argv) == 0, argv
        else:
            with contextlib.redirect_stdout(printed):
                exec(compile(text, "README.md", "exec"), {})  # noqa: S102 (the README's own snippet)
    out = printed.getvalue()
    assert f"{len(unseen)} images; {len(unseen)} classified" in out, out  # pyarrow's line: every image read
    assert "scientificName" in out and "mean_confidence" in out  # DuckDB's table
