"""The console's progress line without a terminal: plain lines at a bounded rate, nothing with -q."""

from __future__ import annotations

import re

from plantray import console


def test_plain_lines_at_a_bounded_rate_then_a_closing_line(capsys, monkeypatch):
    monkeypatch.setenv(console.PLAIN_INTERVAL_ENV, "3600")  # no line between start and close
    with console.Progress("classifying", total=1000) as line:
        for done in range(0, 1001, 100):
            line.update(done, failed=done // 500)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1  # the closing line only: updates within the interval print nothing
    assert re.fullmatch(r"  classifying: 1,000/1,000 images \(100%\), [\d.]+ images/s, 2 failed, \d+ s", out[0])


def test_a_line_says_done_total_rate_failures_and_time_left(monkeypatch):
    line = console.Progress("classifying", total=1000)
    monkeypatch.setattr(console.time, "monotonic", lambda: line.started + 10.0)  # 10 s after the start
    line.done, line.failed = 250, 3
    assert line.line() == "  classifying: 250/1,000 images (25%), 25.0 images/s, 3 failed, about 30 s left"
    line.total = None
    assert line.line() == "  classifying: 250 images, 25.0 images/s, 3 failed"
    line._shown = False


def test_quiet_shows_no_progress(capsys, monkeypatch):
    monkeypatch.setattr(console._state, "level", console.QUIET)
    with console.Progress("training", total=10) as line:
        line.update(10)
    console.say("a stage line")
    console.summary("the summary")
    assert capsys.readouterr().out == "the summary\n"


def test_format_seconds():
    assert [console.format_seconds(s) for s in (42, 185, 7620)] == ["42 s", "3 min 05 s", "2 h 07 min"]
