"""Command-line options made from one frozen dataclass, so a verb's options and its flags cannot drift apart.

A field declared with `option(...)` becomes a flag: `--name-with-dashes` (or `flag=`), its help and metavar from
the declaration; a bool that defaults to True becomes `--no-name`, one that defaults to False `--name`; a tuple
is either repeatable (`repeat=True`: `--input A --input B`) or a comma-separated list (`--tasks a,b`);
`positional=` makes it an argument without a flag. `from_args` builds the dataclass back from what argparse
parsed; `__post_init__` validation in the dataclass then says what was expected.
"""
from __future__ import annotations

import dataclasses
import typing


def option(default, help: str, *, flag: str | None = None, metavar: str | None = None, repeat: bool = False,
           positional: str | None = None):
    """A dataclass field that is also a command-line option (see the module docstring)."""
    meta = {"help": help, "flag": flag, "metavar": metavar, "repeat": repeat, "positional": positional}
    if isinstance(default, (list, dict, set)):
        raise TypeError("option defaults must be immutable (use a tuple)")
    return dataclasses.field(default=default, metadata={"option": meta})


def _item_type(annotation):
    args = typing.get_args(annotation)
    return args[0] if args else str


def add_options(parser, cls) -> None:
    """One argparse argument per `option` field of the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        kind, default = hints[f.name], f.default
        help_text = meta["help"]
        if meta["positional"]:
            parser.add_argument(f.name, nargs=meta["positional"], metavar=meta["metavar"] or f.name.upper(),
                                default=default if meta["positional"] == "?" else None, help=help_text)
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        if kind is bool:
            if default:
                parser.add_argument(meta["flag"] or "--no-" + f.name.replace("_", "-"), dest=f.name,
                                    action="store_false", help=help_text)
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
        elif typing.get_origin(kind) is tuple:
            item = _item_type(kind)
            if meta["repeat"]:
                parser.add_argument(flag, dest=f.name, action="append", default=None, type=item,
                                    metavar=meta["metavar"], help=help_text)
            else:
                parser.add_argument(flag, dest=f.name, default=None, metavar=meta["metavar"] or "LIST",
                                    help=f"{help_text} (default {','.join(map(str, default)) or 'none'})")
        else:
            shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else default
            parser.add_argument(flag, dest=f.name, type=kind, default=default, metavar=meta["metavar"],
                                help=f"{help_text} (default {shown})" if default not in ("", None) else help_text)


def from_args(cls, args, **extra):
    """The dataclass `cls` from parsed `args` (and `extra` fields not on the command line)."""
    hints = typing.get_type_hints(cls)
    values = dict(extra)
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        kind = hints[f.name]
        if typing.get_origin(kind) is tuple:
            if value is None:
                value = f.default
            elif isinstance(value, str):
                item = _item_type(kind)
                try:
                    value = tuple(item(part.strip()) for part in value.split(",") if part.strip())
                except ValueError:
                    raise ValueError(f"--{f.name.replace('_', '-')}: expected a comma-separated list of "
                                     f"{item.__name__}, got {value!r}") from None
            else:
                value = tuple(value)
        values[f.name] = value
    return cls(**values)
