"""The curation run config: one frozen dataclass per stage, read from YAML.

Each section of the YAML file fills the dataclass of the same name; keys left out keep their defaults (each
default says where it comes from, next to its field). Unknown sections or keys and values of the wrong type are
errors that name the key and what was expected, before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
from training.config import ConfigError, from_dict, read_yaml, to_dict  # noqa: F401  (ConfigError, to_dict re-exported)


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


def load_config(path: str | Path | None) -> CurateConfig:
    """The config in `path` (YAML), or the defaults when `path` is None."""
    if path is None:
        return CurateConfig()
    return from_dict(CurateConfig, read_yaml(path), where=str(path))
