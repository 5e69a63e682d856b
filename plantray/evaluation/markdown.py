"""Markdown pieces shared by the report's sections: percentages, tables, and text from the data made safe."""

from __future__ import annotations

import html
import re

DASH = "–"
# Characters that would start Markdown markup (emphasis, code, links, tables, escapes) inside a cell.
_MARKUP = re.compile(r"([\\`*_\[\]|#])")


def pct(value: float | None) -> str:
    """0.4012 -> ``40.1``; None -> a dash."""
    return DASH if value is None else f"{100 * value:.1f}"


def text(value: object) -> str:
    """A string from the data (a species name, a file name) as inert Markdown text on one line: HTML escaped,
    markup characters backslash-escaped, line breaks as spaces (archives' strings are hostile)."""
    one_line = " ".join(str(value).split())
    return _MARKUP.sub(r"\\\1", html.escape(one_line, quote=False))


def row(cells: list) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(header: list, rows: list[list]) -> list[str]:
    """A Markdown table's lines."""
    return [row(header), row(["---"] * len(header)), *(row(r) for r in rows)]
