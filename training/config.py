"""Frozen config dataclasses from YAML, with `key.sub=value` overrides from the command line.

Shared by curation (pipeline/config.py) and training: each section of a YAML file fills the dataclass of the
same name; keys left out keep their defaults; unknown keys and values of the wrong type are errors that name the
key and what was expected, before any work starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


def _convert(value, annotation, where: str, default=None):
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where, base=default if dataclasses.is_dataclass(default) else None)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:      # tuple[X, ...]
            args = (args[0],) * len(value)
        elif len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
        return tuple(_convert(v, inner, f"{where}[{i}]") for i, (v, inner) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = typing.get_args(annotation)
        return {_convert(k, key_type, f"{where} key"): _convert(v, value_type, f"{where}.{k}")
                for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        if any(isinstance(value, option) and (option is bool or not isinstance(value, bool)) for option in options
               if isinstance(option, type)):
            return value                 # already one of the types the field takes (run.compile: "auto" or false)
        return _convert(value, options[0], where)
    if annotation is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:            # YAML 1.1 reads 3e-4 (no dot) as a string
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
        if not math.isfinite(number):       # a learning rate of inf or nan trains a model of NaNs
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if annotation in (int, float, str, bool) and not isinstance(value, annotation) or \
            (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls, data, where: str = "config", base=None):
    """An instance of the dataclass `cls` from a mapping, checking keys and types. Keys left out keep `base`'s
    values if given, else the defaults of `cls` — and a section given in part keeps the rest of its parent's
    default (SFT's `run` section with only `steps` keeps SFT's batch size, not RunConfig's)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected one of {', '.join(names)}")
    defaults = {f.name: getattr(base, f.name) if base is not None else _default(f) for f in fields}
    values = {name: _convert(data[name], hints[name], f"{where}.{name}", defaults[name]) for name in names
              if name in data}
    if base is not None:
        values = {**{f.name: getattr(base, f.name) for f in fields if f.init}, **values}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def to_dict(cfg) -> dict:
    """Plain data (for stats.json and dataset cards)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data or {}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`data` with each `a.b.c=value` set (the value read as YAML: 3e-4, true, [1, 2], {x: 1})."""
    data = _copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.sub=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: value is not valid YAML: {e}") from e
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {part} is not a section")
        node[last] = value
    return data


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def load_config(cls, path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None):
    """The dataclass `cls` from YAML at `path` (or `base`, e.g. a run's saved config.json) with `--set
    section.key=value` overrides: the one way every verb with a config reads it."""
    data = read_yaml(path) if path is not None else dict(base or {})
    return from_dict(cls, apply_overrides(data, list(overrides)), where=str(path or "config"))


def at_least(cfg, minimum, *names: str) -> None:
    """A ValueError naming the first of `names` whose value in `cfg` is below `minimum`."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


MAX_CONTEXT = 1 << 20      # tokens per row or window: a million already takes 512 MB of RoPE tables (head size 64)


def at_most(cfg, maximum, *names: str) -> None:
    """A ValueError naming the first of `names` whose value in `cfg` is above `maximum` (a typo's extra zeros would
    otherwise end in a failed allocation of terabytes)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value > maximum:
            raise ValueError(f"{name} must be <= {maximum:,}, got {value:,}")


def within(cfg, low, high, *names: str, low_open: bool = False, high_open: bool = False) -> None:
    """A ValueError naming the first of `names` outside [low, high] (ends open as told)."""
    for name in names:
        value = getattr(cfg, name)
        if value < low or (low_open and value == low) or value > high or (high_open and value == high):
            raise ValueError(f"{name} must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}, "
                             f"got {value}")
