"""The decisions file a review produces: read strictly, refused with the line at fault.

The format (issue 20; the review page writes it, a person may write it by hand): UTF-8 CSV (RFC 4180: quoted
fields may hold commas, quotes and line breaks), the header exactly
``identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks``, one row per
decided prediction:

- ``identificationID``: the prediction's (the row's ``identificationID``);
- ``decision``: ``accepted``, ``corrected``, ``rejected``, ``not a plant`` or ``unsure``;
- ``scientificName``: the accepted name for ``accepted``, the reviewer's name for ``corrected``, empty otherwise;
- ``identifiedBy``: the reviewer;
- ``dateIdentified``: ISO 8601, a date (``2026-05-01``, or ``2026-05``, ``2026``) or a date-time
  (``2026-05-01T14:03:22Z``, ``2026-05-01T14:03:22.5+02:00``);
- ``identificationRemarks``: free text, may be empty (line breaks in it are read as LF, whatever the file's).

Blank lines are skipped. The file is small (one row per decision) and is read whole.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass

from plantray import columns as col
from plantray.config import ConfigError

HEADER = ("identificationID", "decision", "scientificName", "identifiedBy", "dateIdentified",
          "identificationRemarks")
NAMED = (col.ACCEPTED, col.CORRECTED)  # decisions that carry a name
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")


class DecisionsError(ConfigError):
    """A decisions file that cannot be applied: the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Decision:
    """One row of a decisions file, as written (``line``: where its record starts, header = line 1)."""

    line: int
    identification_id: str
    decision: str
    scientific_name: str | None
    identified_by: str
    date_identified: str
    remarks: str | None

    def same_as(self, other: Decision) -> bool:
        """Whether two rows say the same thing (a decision on an occurrence is written once per image)."""
        return (self.decision, self.scientific_name, self.identified_by, self.date_identified, self.remarks) == (
            other.decision, other.scientific_name, other.identified_by, other.date_identified, other.remarks)


def valid_date(text: str) -> bool:
    """Whether ``text`` is an ISO 8601 date (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``) or date-time with real values."""
    if _DATE.match(text):
        parts = [int(p) for p in text.split("-")] + [1, 1]
        try:
            dt.date(*parts[:3])
        except ValueError:
            return False
        return True
    if not _DATE_TIME.match(text):
        return False
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _problem(row: list[str]) -> str | None:
    """What is wrong with one data row (the fix included), None when it is fine."""
    if len(row) < len(HEADER):
        return (f"{len(row)} fields where the header has {len(HEADER)} (end the row with a comma when its "
                "identificationRemarks is empty)")
    if len(row) > len(HEADER):
        return f"{len(row)} fields where the header has {len(HEADER)} (quote a value that holds a comma)"
    ident, decision, name, by, date, _ = (v.strip() for v in row)
    if not ident:
        return "empty identificationID"
    if decision not in col.REVIEW_DECISIONS:
        return f"unknown decision {decision!r}; use one of {', '.join(col.REVIEW_DECISIONS)}"
    if decision in NAMED and not name:
        return f"decision {decision!r} needs the scientificName " + (
            "accepted" if decision == col.ACCEPTED else "the reviewer gave")
    if decision not in NAMED and name:
        return f"decision {decision!r} takes no scientificName (got {name!r}); leave it empty"
    if not by:
        return "empty identifiedBy; name the reviewer"
    if not valid_date(date):
        return f"dateIdentified {date!r} is not an ISO 8601 date or date-time (e.g. 2026-05-01 or 2026-05-01T14:03:22Z)"
    return None


def _lines(text: str) -> str:
    """Line breaks inside a quoted value as ``\\n``: a file saved with CRLF (Windows, the page's export) and one
    saved with LF give the same remarks, so the same output."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_decisions(text: str, source: str) -> list[Decision]:
    """Parses a decisions file.

    Args:
        text: the file's text (decoded).
        source: how messages name the file.
    Returns:
        The decisions, in file order.
    Raises:
        DecisionsError: a wrong header, a malformed row, an unknown decision, a missing or extra name, a bad
            date, or an identificationID decided twice; the message names the first line at fault (and how
            many other problems there are).
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    header = next(reader, None)
    if header is None or tuple(h for h in header) != HEADER:
        raise DecisionsError(f"{source}: line 1: the header must be exactly {','.join(HEADER)} (found "
                             f"{','.join(header or []) or 'nothing'})")
    decisions, problems, seen = [], [], {}
    line = reader.line_num + 1
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not row or not any(v.strip() for v in row):
                continue
            problem = _problem(row)
            if problem is None and row[0].strip() in seen:
                problem = f"identificationID {row[0].strip()!r} is decided again (first on line {seen[row[0].strip()]})"
            if problem:
                problems.append(f"line {start}: {problem}")
                continue
            ident, decision, name, by, date, remarks = (v.strip() for v in row)
            seen[ident] = start
            decisions.append(Decision(start, ident, decision, name or None, by, date, _lines(remarks) or None))
    except csv.Error as e:
        problems.append(f"line {line}: {e} (an unclosed quote?)")
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DecisionsError(f"{source}: {problems[0]}{more}; nothing was written")
    if not decisions:
        raise DecisionsError(f"{source}: no decisions (only the header); nothing to apply")
    return decisions


def read_decisions(uri: str) -> list[Decision]:
    """Reads and parses a decisions file (local or object storage).

    Raises:
        DecisionsError: missing, not UTF-8, or any problem :func:`parse_decisions` finds.
    """
    from plantray import storage

    source = f"--decisions {uri!r}"
    try:
        data = storage.read_bytes(uri)
    except (FileNotFoundError, IsADirectoryError):
        raise DecisionsError(f"{source} does not exist; give the CSV the review page exported") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DecisionsError(f"{source}: line {line} is not UTF-8; save the file as UTF-8 CSV") from None
    return parse_decisions(text, source)
