"""Which run a nightly invocation is (plantray.commands.nightly_runs): run records are plain local files here."""

from __future__ import annotations

import datetime as dt
import json
import os

from plantray.commands.nightly_runs import choose, default_run_id, later_run_id

NOON = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone.utc)


def _record(table, run_id: str, commit_seq: int | None = 1) -> None:
    os.makedirs(table / "_runs" / run_id)
    (table / "_runs" / run_id / "_plantray_run.json").write_text(json.dumps({"summary": {"commit_seq": commit_seq}}))


def test_default_ids_are_utc_days_and_their_later_runs():
    late_evening_in_chile = dt.datetime(2026, 12, 6, 22, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    assert default_run_id(late_evening_in_chile) == "nightly-2026-12-07"
    assert [later_run_id("nightly-2026-12-06", n) for n in (1, 2, 3)] == [
        "nightly-2026-12-06", "nightly-2026-12-06.2", "nightly-2026-12-06.3"]


def test_first_run_of_the_day(tmp_path):
    choice = choose(str(tmp_path), None, lambda r: False, NOON)
    assert choice.run_id == "nightly-2026-12-06"
    assert not (choice.explicit or choice.later or choice.resuming)


def test_a_crashed_first_run_is_resumed(tmp_path):
    choice = choose(str(tmp_path), None, lambda r: r == "nightly-2026-12-06", NOON)
    assert (choice.run_id, choice.later, choice.resuming) == ("nightly-2026-12-06", False, True)


def test_completed_days_lead_to_the_next_run(tmp_path):
    _record(tmp_path, "nightly-2026-12-06", 3)
    _record(tmp_path, "nightly-2026-12-06.2", 5)
    _record(tmp_path, "nightly-2026-12-05", 1)  # another day: no bearing
    choice = choose(str(tmp_path), None, lambda r: False, NOON)
    assert choice.run_id == "nightly-2026-12-06.3" and choice.later and not choice.resuming
    assert choice.previous == {"run_id": "nightly-2026-12-06.2", "commit_seq": 5}


def test_explicit_run_ids_are_never_renamed(tmp_path):
    _record(tmp_path, "r1", 7)
    choice = choose(str(tmp_path), "r1", lambda r: True, NOON)
    assert (choice.run_id, choice.explicit, choice.later) == ("r1", True, False)
    assert choice.completed == {"commit_seq": 7}
    assert choose(str(tmp_path), "r2", lambda r: False, NOON).completed is None
