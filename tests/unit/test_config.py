"""Flags generated from dataclasses, required fields enforced once, the run record's one shape."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from plantray import __version__
from plantray.commands.record import RUN_RECORD, run_record, write_run_record
from plantray.config import ConfigError, JobConfig, add_dataclass_args, check, field, from_args


@dataclass
class Job(JobConfig):
    src: str = field("", positional=True, required=True, help="input")
    model: str = field("", required=True, help="a model")
    top_k: int = field(5, help="ranked names")
    tags: list[str] = field(["habit"], help="repeatable")
    fast: bool = field(False, help="a switch")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, Job)
    return from_args(Job, parser.parse_args(argv))


def test_flags_come_from_the_fields():
    cfg = parse(["in.parquet", "--model", "m", "--top-k", "3", "--tags", "a", "--tags", "b", "--fast"])
    assert cfg == Job("in.parquet", "m", 3, ["a", "b"], True)
    assert parse(["x", "--model", "m"]).tags == ["habit"]  # unset list flags keep the default


def test_required_fields_are_enforced_once_for_the_cli_and_the_library():
    with pytest.raises(SystemExit):
        parse(["x"])  # argparse: --model is required
    with pytest.raises(ConfigError, match="--model is required"):
        Job(src="x")
    with pytest.raises(ConfigError, match="SRC is required"):
        Job(model="m")


def test_check_reports_the_first_failed_condition():
    check([(True, "fine")])
    with pytest.raises(ConfigError, match="second"):
        check([(True, "first"), (False, "second"), (False, "third")])


def test_run_record_shape(tmp_path):
    cfg = Job("in", "m")
    uri = write_run_record(str(tmp_path / "out"), "classify", cfg, {"images": 3}, "2026-01-01T00:00:00Z")
    record = json.loads((tmp_path / "out" / RUN_RECORD).read_text())
    assert uri.endswith(RUN_RECORD)
    assert set(record) == {"command", "plantray_version", "started", "finished", "config", "summary"}
    assert (record["command"], record["plantray_version"], record["summary"]) == ("classify", __version__,
                                                                                   {"images": 3})
    assert record["config"] == {"src": "in", "model": "m", "top_k": 5, "tags": ["habit"], "fast": False}
    assert json.loads(run_record("x", cfg, {}, "t"))["started"] == "t"
