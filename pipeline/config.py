"""The curation run config: one frozen dataclass per stage, read from YAML.

Each section of the YAML file fills the dataclass of the same name; keys left out keep their defaults (each
default says where it comes from, next to its field). Unknown sections or keys and values of the wrong type are
errors that name the key and what was expected, before any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from filters.c4 import C4Config
from filters.fineweb import FineWebConfig
from filters.gopher import GopherQualityConfig, GopherRepetitionConfig
from filters.language import LanguageConfig
from filters.nsfw import NsfwConfig
from filters.pii import PiiConfig
from filters.quality import QualityConfig
from filters.url import UrlConfig
from pipeline.decontam import DecontamConfig
from pipeline.dedup import DedupConfig
from pipeline.extract import ExtractConfig
from pipeline.mix import MixConfig
from pipeline.warc import ReadConfig


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OutputConfig:
    write_rejected: bool = False     # also write dropped documents, with their reason, under rejected/<stage>/
    write_errors: bool = True        # errors/<file>.jsonl: file, offset, reason and detail of each error


@dataclass(frozen=True)
class StagesConfig:
    """Which optional stages run (reading, extraction and writing always do)."""
    url: bool = True
    language: bool = True
    gopher_repetition: bool = True
    gopher_quality: bool = True
    c4: bool = True
    fineweb: bool = True
    nsfw: bool = True
    pii: bool = True
    url_dedup: bool = True           # same normalised URL: keep the latest capture
    exact_dedup: bool = True         # same normalised text: keep the smallest id
    minhash_dedup: bool = True       # near-duplicates (MinHash LSH): one survivor per cluster
    line_dedup: bool = False         # C4's line dedup: off by default, it edits texts (FineWeb does not use it)
    decontam: bool = True            # drop (or cut) documents sharing a 13-gram with the evaluation benchmarks
    quality: bool = False            # fastText quality score (needs a model: `refinery quality train`)
    mix: bool = True                 # `domain` label; with mix.weights, sampling to target token shares


@dataclass(frozen=True)
class CurateConfig:
    stages: StagesConfig = field(default_factory=StagesConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    url: UrlConfig = field(default_factory=UrlConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    nsfw: NsfwConfig = field(default_factory=NsfwConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def _convert(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
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
        return _convert(value, options[0], where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation) or \
            (annotation is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls, data, where: str = "config"):
    """An instance of the dataclass `cls` from a mapping, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; expected one of {', '.join(names)}")
    values = {name: _convert(data[name], hints[name], f"{where}.{name}") for name in names if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def to_dict(cfg) -> dict:
    """Plain data (for stats.json and dataset cards)."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path | None) -> CurateConfig:
    """The config in `path` (YAML), or the defaults when `path` is None."""
    if path is None:
        return CurateConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return from_dict(CurateConfig, data, where=str(path))
