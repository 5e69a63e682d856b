"""The decisions file: RFC 4180 CSV read strictly, each refusal naming the line where the bad record starts."""

from __future__ import annotations

import pytest

from plantray.review.decisions import DecisionsError, parse_decisions, valid_date

HEADER = "identificationID,decision,scientificName,identifiedBy,dateIdentified,identificationRemarks"


def test_quoted_fields_bom_crlf_and_blank_lines():
    text = ("\ufeff" + HEADER + "\r\n"
            'a,accepted,Rosa canina,"Doe, Jane",2026-05-01,"says ""rose"",\r\nsee leaf"\r\n'
            "\r\n"
            "b,not a plant,,Ana,2026-05-01T14:03:22.5+02:00,\r\n"
            "c,corrected,Mentha x piperita,Ana,2026-05,\r\n")
    a, b, c = parse_decisions(text, "d.csv")
    assert (a.line, a.identified_by, a.remarks) == (2, "Doe, Jane", 'says "rose",\nsee leaf')  # CRLF read as LF
    assert (b.line, b.decision, b.scientific_name, b.remarks) == (5, "not a plant", None, None)
    assert (c.line, c.scientific_name, c.date_identified) == (6, "Mentha x piperita", "2026-05")


@pytest.mark.parametrize("date, ok", [
    ("2026-05-01", True), ("2026", True), ("2026-05", True), ("2026-05-01T14:03Z", True),
    ("2026-05-01T14:03:22Z", True), ("2026-05-01T14:03:22.123456-05:00", True), ("2026-05-01T14:03:22+0200", True),
    ("2026-02-30", False), ("2026-13", False), ("01/05/2026", False), ("2026-05-01 14:03", False),
    ("2026-05-01T25:00Z", False), ("yesterday", False), ("", False)])
def test_dates(date, ok):
    assert valid_date(date) is ok


@pytest.mark.parametrize("body, line, words", [
    ('x,accepted,Rosa canina,Ana,2026-05-01,"multi\nline"\ny,accepted,,Ana,2026-05-01,\n', 4, "needs"),
    ("x,ACCEPTED,Rosa canina,Ana,2026-05-01,\n", 2, "unknown decision"),
    ("x,unsure,Rosa canina,Ana,2026-05-01,\n", 2, "takes no scientificName"),
    ("x,unsure,,Ana,2026-05-01\n", 2, "5 fields.*end the row with a comma"),
    ("x,unsure,,Ana,2026-05-01,a,b\n", 2, "7 fields.*quote a value"),
    (",unsure,,Ana,2026-05-01,\n", 2, "empty identificationID"),
    ("x,unsure,,Ana,2026-05-01,\nx,rejected,,Ana,2026-05-01,\n", 3, "first on line 2"),
    ('x,unsure,,Ana,2026-05-01,"open\n', 2, "unclosed quote"),
])
def test_refusals_name_the_line(body, line, words):
    with pytest.raises(DecisionsError, match=rf"line {line}: .*{words}"):
        parse_decisions(HEADER + "\n" + body, "d.csv")


def test_header_must_be_exact_and_rows_present():
    with pytest.raises(DecisionsError, match="line 1"):
        parse_decisions(HEADER.replace("decision", "Decision") + "\n", "d.csv")
    with pytest.raises(DecisionsError, match="line 1"):
        parse_decisions(HEADER + ",extra\n", "d.csv")
    with pytest.raises(DecisionsError, match="no decisions"):
        parse_decisions(HEADER + "\n", "d.csv")
