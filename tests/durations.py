"""Where the suite's time goes, as the Markdown tables of tests/README.md, from a pytest JUnit XML report.

Usage::

    .venv/bin/python -m pytest -q tests --junitxml=/tmp/suite.xml
    .venv/bin/python tests/durations.py /tmp/suite.xml [--top 30]

A test's time is pytest's: set-up, call and teardown together, so a session fixture (the shared cluster,
the shared training run) counts in the first test that uses it.
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET


def read_report(path: str) -> list[tuple[str, float, str]]:
    """``(test id, seconds, outcome)`` for every test case of a JUnit XML report."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        cases.append((f"{module}.py::{case.get('name')}", float(case.get("time", 0)), outcome))
    return cases


def directory(test_id: str) -> str:
    """The suite's folder a test lives in (``tests/unit``, ``tests/integration``, ``tests/e2e``)."""
    return "/".join(test_id.split("::")[0].split("/")[:2])


def tables(cases: list[tuple[str, float, str]], top: int) -> str:
    """The per-folder totals and the ``top`` slowest tests, as Markdown."""
    per_dir: dict = collections.defaultdict(lambda: [0, 0.0])
    for test_id, seconds, _ in cases:
        per_dir[directory(test_id)][0] += 1
        per_dir[directory(test_id)][1] += seconds
    total = sum(s for _, s, _ in cases)
    lines = ["| folder | tests | seconds | share |", "|---|---:|---:|---:|"]
    for name, (count, seconds) in sorted(per_dir.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| `{name}` | {count} | {seconds:,.0f} | {seconds / total:.0%} |")
    lines.append(f"| all | {len(cases)} | {total:,.0f} | |")
    lines += ["", "| # | test | seconds | outcome |", "|---:|---|---:|---|"]
    slowest = sorted(cases, key=lambda c: -c[1])[:top]
    for rank, (test_id, seconds, outcome) in enumerate(slowest, 1):
        lines.append(f"| {rank} | `{test_id}` | {seconds:,.1f} | {outcome} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="a pytest --junitxml file")
    parser.add_argument("--top", type=int, default=30, help="how many of the slowest tests to list")
    args = parser.parse_args()
    print(tables(read_report(args.report), args.top))


if __name__ == "__main__":
    main()
