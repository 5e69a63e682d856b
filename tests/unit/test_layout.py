"""The package layout shows the pipeline: no package imports one that stands later in it."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "plantray"
# The pipeline, first to last; base modules (config, columns, reasons, names, cluster, console) may be imported
# by all.
ORDER = ["storage", "sources", "images", "model", "inference", "darwincore", "review", "training", "evaluation",
         "synth", "commands", "cli", "__main__"]
BASE = {"__init__", "config", "columns", "reasons", "names", "cluster", "console"}


def stage(module: str) -> int:
    """Position of ``plantray.<module>`` in the pipeline (-1 for base modules)."""
    top = module.split(".")[0]
    return -1 if top in BASE else ORDER.index(top)


def plantray_imports(path: pathlib.Path) -> set[str]:
    """Every ``plantray.X`` a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("plantray"):
            names = [node.module] if node.module != "plantray" else [f"plantray.{a.name}" for a in node.names]
            found.update(n.removeprefix("plantray.") for n in names)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("plantray.") for a in node.names if a.name.startswith("plantray."))
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_module_belongs_to_a_stage():
    for path in MODULES:
        rel = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        assert rel.split(".")[0] in BASE or rel.split(".")[0] in ORDER, rel


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_import_from_a_later_stage(path):
    own = stage(path.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."))
    later = {m for m in plantray_imports(path) if m.split(".")[0] != "__version__" and stage(m) > own}
    assert not later, f"{path.name} imports later stages: {sorted(later)}"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from plantray.commands.classify import classify\n")
    assert stage(next(iter(plantray_imports(bad)))) > stage("images.loader")
