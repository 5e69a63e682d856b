"""Which directories plantray may replace: only those its marker or run record says it made."""

from __future__ import annotations

import json

import pytest

from plantray.commands.quickstart import claim_out
from plantray.commands.record import made_by, mark_output
from plantray.config import ConfigError


def test_a_marked_directory_is_known_and_an_unmarked_one_is_not(tmp_path):
    assert made_by(str(tmp_path)) is None
    mark_output(str(tmp_path), "classify")
    assert made_by(str(tmp_path)) == "classify"
    assert json.loads((tmp_path / "_plantray_output.json").read_text())["command"] == "classify"


def test_quickstart_takes_a_new_or_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    claim_out(str(tmp_path / "new"))
    claim_out(str(tmp_path / "empty"))
    assert made_by(str(tmp_path / "empty")) == made_by(str(tmp_path / "new")) == "quickstart"


def test_quickstart_replaces_only_its_own_outputs(tmp_path):
    mark_output(str(tmp_path), "quickstart")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.pt").write_bytes(b"old")
    (tmp_path / "my-notes.txt").write_text("keep me")
    claim_out(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_plantray_output.json", "my-notes.txt"]


def test_quickstart_refuses_another_commands_output(tmp_path):
    mark_output(str(tmp_path), "classify")
    with pytest.raises(ConfigError, match="not made by plantray quickstart"):
        claim_out(str(tmp_path))
