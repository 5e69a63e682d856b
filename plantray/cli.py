"""The ``plantray`` command: one subcommand per module of :mod:`plantray.commands`.

Each command module holds its config dataclass (the flags are generated from it), ``run(cfg)`` and
``format_summary(summary)``. Command modules import torch and Ray only inside ``run``, so
``plantray --help`` and ``plantray <command> --help`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from plantray import __version__
from plantray.config import ConfigError, add_dataclass_args, from_args

# subcommand -> (module under plantray.commands, one-line help)
COMMANDS = {
    "synth": ("synth", "write a PlantNet-like synthetic dataset (JPEGs, manifests, labels.csv)"),
    "model create": ("model_create", "create a model directory from labels and initial weights"),
    "classify": ("classify", "classify images (manifest, archive or tree) into Parquet"),
    "train": ("train", "fine-tune a network on Ray Train (the paper's recipe)"),
    "evaluate": ("evaluate", "the paper's external-test protocol: ten-crop Top-1/Top-5 per test set (Table 1)"),
    "calibrate": ("calibrate", "fit a temperature on a validation set (calibrated confidences) into the model card"),
    "nightly": ("nightly", "incremental re-classification into a predictions table, committed atomically"),
    "table": ("table", "maintain nightly's Delta table: optimize (compact), vacuum (delete old files), migrate"),
    "review apply": ("review_apply", "apply a review's decisions to predictions (the machine's identification kept)"),
    "export dwca": ("export", "export predictions as a Darwin Core Archive (Identification History)"),
    "labels match": ("labels", "fill labels' taxonID, accepted name, genus and family from a checklist (GBIF "
                     "Backbone Taxon.tsv)"),
    "review build": ("review_build", "a static review site where a person accepts, corrects or rejects predictions"),
    "review serve": ("review_serve", "serve a review site locally, writing the decisions file as the reviewer works"),
    "quickstart": ("quickstart", "synthesise, train, evaluate and classify end to end on embedded defaults"),
}


def command_module(name: str):
    """The module of subcommand ``name`` (e.g. ``"model create"`` -> :mod:`plantray.commands.model_create`)."""
    return importlib.import_module(f"plantray.commands.{COMMANDS[name][0]}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="plantray", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--version", action="version", version=f"plantray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (_, help_text) in COMMANDS.items():
        *group, leaf = name.split()
        target = top
        if group:
            if group[0] not in groups:
                groups[group[0]] = top.add_parser(group[0]).add_subparsers(dest="subcommand", required=True)
            target = groups[group[0]]
        sub = target.add_parser(leaf, help=help_text, description=help_text)
        add_dataclass_args(sub, command_module(name).CONFIG)
        sub.set_defaults(_job=name)
    return parser


def run(name: str, args: argparse.Namespace):
    """Runs subcommand ``name`` with parsed ``args`` and prints its summary; returns the summary."""
    module = command_module(name)
    result = module.run(from_args(module.CONFIG, args))
    formatter = getattr(module, "format_summary", None)
    if formatter and isinstance(result, dict):
        print(formatter(result))
    elif result is not None:
        print(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plantray`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from plantray.storage import MissingFilesystem  # imported only to run: it loads fsspec and pyarrow

    try:
        run(args._job, args)
    except (ConfigError, MissingFilesystem) as e:  # a URI whose filesystem package is missing is configuration
        print(f"plantray {args._job}: error: {e}", file=sys.stderr)
        return 2
    return 0
