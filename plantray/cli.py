"""The ``plantray`` command: one subcommand per job, flags generated from each job's config dataclass."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from plantray import __version__
from plantray.config import ConfigError, add_dataclass_args, from_args

# subcommand -> (module, config class, run function, optional summary formatter, help)
COMMANDS = {
    "synth": ("plantray.synth", "SynthConfig", "synthesize", None,
              "write a PlantNet-like synthetic dataset (JPEGs, manifests, labels.csv)"),
    "model create": ("plantray.create", "ModelCreateConfig", "create_model", None,
                     "create a model directory from labels and initial weights"),
    "classify": ("plantray.classify", "ClassifyConfig", "classify", "format_summary",
                 "classify images (manifest, archive or tree) into Parquet"),
    "train": ("plantray.train", "TrainConfig", "train", "format_summary",
              "fine-tune a network on Ray Train (the paper's recipe)"),
    "evaluate": ("plantray.evaluate", "EvaluateConfig", "evaluate", "format_summary",
                 "the paper's external-test protocol: ten-crop Top-1/Top-5 per test set (Table 1)"),
    "nightly": ("plantray.nightly", "NightlyConfig", "nightly", "format_summary",
                "incremental re-classification into a predictions table, committed atomically"),
    "export dwca": ("plantray.export", "ExportConfig", "export_dwca", None,
                    "export predictions as a Darwin Core Archive (Identification History)"),
    "quickstart": ("plantray.quickstart", "QuickstartConfig", "quickstart", "format_summary",
                   "synthesise, train, evaluate and classify end to end on embedded defaults"),
}


def _available(module: str) -> bool:
    try:
        importlib.util.find_spec(module)
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="plantray", description=__doc__)
    parser.add_argument("--version", action="version", version=f"plantray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module, cls_name, _, _, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        words = name.split()
        target = top
        if len(words) == 2:
            if words[0] not in groups:
                groups[words[0]] = top.add_parser(words[0]).add_subparsers(dest="subcommand", required=True)
            target = groups[words[0]]
        sub = target.add_parser(words[-1], help=help_text, description=help_text)
        add_dataclass_args(sub, getattr(importlib.import_module(module), cls_name))
        sub.set_defaults(_job=name)
    return parser


def run(name: str, args: argparse.Namespace):
    """Runs subcommand ``name`` and prints its summary."""
    module_name, cls_name, fn_name, fmt_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    cfg = from_args(getattr(module, cls_name), args)
    result = getattr(module, fn_name)(cfg)
    if fmt_name and isinstance(result, dict):
        print(getattr(module, fmt_name)(result))
    elif result is not None:
        print(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plantray`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args._job, args)
    except ConfigError as e:
        print(f"plantray {args._job}: error: {e}", file=sys.stderr)
        return 2
    return 0
