"""One source of defaults: a dataclass per job, with CLI flags generated from its fields.

Each job module (``classify``, ``train``, ...) declares a ``@dataclass`` whose fields carry
``metadata={"help": ..., "flag": ..., "positional": ...}``.  :func:`add_dataclass_args` turns the
fields into ``argparse`` options and :func:`from_args` builds the config back, so a flag can never
drift from the default the library uses.  Every job writes its final config next to its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
# One byte cap for local, object-store and HTTP reads (--max-bytes); here so every layer shares one default.
DEFAULT_MAX_BYTES = 64 * 1024**2


class ConfigError(ValueError):
    """Bad configuration: raised before any work starts, printed without a traceback by the CLI."""


class JobConfig:
    """Base of every command's config dataclass: fields marked ``required`` are enforced here, once.

    Subclasses that define ``__post_init__`` call ``super().__post_init__()``.
    """

    def __post_init__(self) -> None:
        check_required(self)


def check_required(cfg: Any) -> None:
    """Refuses a config whose ``required`` fields are empty, naming the flag.

    Raises:
        ConfigError: e.g. ``--model is required``.
    """
    for f in dataclasses.fields(cfg):
        if f.metadata.get("required") and getattr(cfg, f.name) in (None, "", [], ()):
            name = f.name.upper() if f.metadata.get("positional") else f.metadata.get("flag") or _flag(f.name)
            raise ConfigError(f"{name} is required (see --help)")


def check(conditions: list[tuple[bool, str]]) -> None:
    """Raises ConfigError with the message of the first condition that does not hold.

    Args:
        conditions: (holds, message naming the flag, its value and what is allowed) pairs.
    """
    for holds, message in conditions:
        if not holds:
            raise ConfigError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
          positional: bool = False, choices: list | None = None, required: bool = False, hidden: bool = False,
          **kwargs: Any) -> Any:
    """A dataclass field carrying its CLI help, optional flag name, choices, and whether the flag is required.

    ``hidden`` keeps a flag working but out of ``--help`` (test hooks).
    """
    meta = {"help": help, "flag": flag, "positional": positional, "choices": choices, "required": required,
            "hidden": hidden}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Returns (inner type, is_list) for ``X``, ``X | None`` and ``list[X]`` annotations."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one argparse option per field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp, is_list = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        kwargs: dict[str, Any] = {"help": meta.get("help", ""), "dest": f.name}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("positional"):
            kwargs.pop("dest")
            parser.add_argument(f.name, type=tp, metavar=f.name.upper(), **kwargs)
            continue
        if meta.get("required"):
            kwargs["required"] = True
        flag = meta.get("flag") or _flag(f.name)
        if meta.get("hidden"):
            kwargs["help"] = argparse.SUPPRESS
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kwargs)
        elif is_list:
            parser.add_argument(flag, type=tp, action="append", default=None, **kwargs)
        else:
            if kwargs["help"] is not argparse.SUPPRESS and default not in (None, ""):
                kwargs["help"] += f" (default: {default})"
            parser.add_argument(flag, type=tp, default=default, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Builds dataclass ``cls`` from parsed args, keeping dataclass defaults for unset list flags."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is None and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING):
            continue
        values[f.name] = value
    return cls(**values)


def to_json(cfg: Any) -> str:
    """Serialises a config dataclass (written beside every job's output)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True, default=str)
