"""The ``plantray`` command as a user runs it: help answers without the heavy stack, refusals exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from plantray.cli import COMMANDS

HEAVY = ("torch", "torchvision", "ray")


def _imports_after(argv: list[str]) -> set[str]:
    """Top-level modules loaded by ``plantray ARGV`` in a fresh interpreter (help exits 0)."""
    code = ("import sys\nfrom plantray.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.strip().splitlines()[-1].split())  # the last line: after the help text


@pytest.mark.parametrize("argv", [["--help"], *[[*name.split(), "--help"] for name in COMMANDS]],
                         ids=lambda a: " ".join(a))
def test_help_never_imports_torch_or_ray(argv):
    loaded = _imports_after(argv)
    assert "plantray" in loaded and not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_missing_required_flag_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "plantray", "classify", "--input", "x"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--model" in done.stderr and "--output" in done.stderr
