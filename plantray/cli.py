"""The ``plantray`` command: one subcommand per module of :mod:`plantray.commands`.

Each command module holds its config dataclass (the flags are generated from it), ``run(cfg)`` and
``format_summary(summary)``. Command modules import torch and Ray only inside ``run``, so
``plantray --help``, ``plantray <command> --help`` and every refusal answer at once.

What the user sees (:mod:`plantray.console`): plantray's own lines and progress, then the summary; a
mistake of theirs (bad flag, bad input, a storage problem) is one line and exit status 2; a bug in plantray
is its traceback, a request to report it and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import traceback

from plantray import __version__, console
from plantray.config import ConfigError, add_dataclass_args, from_args

log = logging.getLogger(__name__)
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
GROUPS = {"model": "model directories: create", "export": "export predictions: dwca (Darwin Core Archive)",
          "labels": "a model's labels: match (taxon identifiers from a checklist)",
          "review": "a person's review of predictions: build (a review site), serve (it, saving decisions), "
                    "apply (the decisions, back into the predictions)"}
DESCRIPTION = "plantray: identify plants in photographs at archive scale, on a laptop or a Ray cluster."
EPILOG = ("Run 'plantray COMMAND --help' for a command's options; README.md walks from a first run to your "
          "own photos. -v and -q work before or after the command.")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the line that is wrong and where to read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def command_module(name: str):
    """The module of subcommand ``name`` (e.g. ``"model create"`` -> :mod:`plantray.commands.model_create`)."""
    return importlib.import_module(f"plantray.commands.{COMMANDS[name][0]}")


def _verbosity_flags() -> argparse.ArgumentParser:
    """``-v``/``-q``, accepted before and after the subcommand (SUPPRESS: a later parser keeps an earlier value)."""
    flags = argparse.ArgumentParser(add_help=False)
    group = flags.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=console.VERBOSE,
                       default=argparse.SUPPRESS, help="also show log records (plantray's and Ray's) and tracebacks")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=console.QUIET,
                       default=argparse.SUPPRESS, help="print only errors and the closing summary")
    return flags


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    flags = _verbosity_flags()
    parser = Parser(prog="plantray", description=DESCRIPTION, epilog=EPILOG, parents=[flags])
    parser.add_argument("--version", action="version", version=f"plantray {__version__}")
    top = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (_, help_text) in COMMANDS.items():
        *group, leaf = name.split()
        target = top
        if group:
            if group[0] not in groups:
                sub = top.add_parser(group[0], help=GROUPS[group[0]], description=GROUPS[group[0]], parents=[flags])
                groups[group[0]] = sub.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
            target = groups[group[0]]
        sub = target.add_parser(leaf, help=help_text, description=help_text, parents=[flags])
        add_dataclass_args(sub, command_module(name).CONFIG)
        sub.set_defaults(_job=name)
    return parser


def run(name: str, args: argparse.Namespace):
    """Runs subcommand ``name`` with parsed ``args`` and prints its summary; returns the summary."""
    module = command_module(name)
    result = module.run(from_args(module.CONFIG, args))
    formatter = getattr(module, "format_summary", None)
    if formatter and isinstance(result, dict):
        console.summary(formatter(result))
    elif result is not None:
        console.summary(json.dumps(result, indent=2, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plantray`` console script; returns the exit status.

    0: done. 2: refused (a bad flag, input or output, or a storage problem), one line on stderr, nothing done
    that looks complete. 1: a bug in plantray, with its traceback. 130: interrupted.
    """
    args = build_parser().parse_args(argv)
    verbosity = getattr(args, "verbosity", console.NORMAL)
    console.start(verbosity, args._job)
    status = 1
    try:
        run(args._job, args)
        status = 0
    except KeyboardInterrupt:
        console.error(f"plantray {args._job}: interrupted")
        status = 130
    except Exception as e:  # sorted below into the user's mistakes and plantray's bugs
        status = _failed(args._job, e, verbosity)
    finally:
        kept = console.close(keep_log=status not in (0, 2))
        if kept:
            console.error(f"plantray {args._job}: the log is {kept}")
    return status


def _failed(job: str, e: Exception, verbosity: str) -> int:
    """Says what went wrong: one line for the user's mistakes (exit 2), the traceback for a bug (exit 1)."""
    from plantray.storage import MissingFilesystem, explain

    problem = e if isinstance(e, (ConfigError, MissingFilesystem)) else explain(e)
    if problem is not None:
        log.info("refused", exc_info=e)
        if verbosity == console.VERBOSE:
            console.error("".join(traceback.format_exception(e)).rstrip())
        console.error(f"plantray {job}: error: {problem}")
        return 2
    log.error("internal error", exc_info=e)
    console.error("".join(traceback.format_exception(e)).rstrip())
    console.error(f"plantray {job}: internal error ({type(e).__name__}): this is a bug in plantray; please report it "
                  "with the command line, the traceback above and the log named below")
    return 1
