"""Writing benchmark results: one timestamped JSON (and optionally Markdown) file per run."""

from __future__ import annotations

import json
import os
import time


def save_report(out: str, kind: str, report: dict, markdown: str | None = None) -> str:
    """Writes ``<out>/<kind>-<timestamp>.json`` (and ``.md`` when given); returns the JSON path."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    if markdown is not None:
        with open(stem + ".md", "w") as f:
            f.write(markdown)
    return stem + ".json"
