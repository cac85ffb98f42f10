"""The curation run config: the list of stages to run, and one frozen dataclass per stage, read from YAML.

`stages` names the stages that run; the code fixes their order (`pipeline.curate.recipe`), so a stage is on
because it is listed and a new stage never runs in a config that does not name it. Each other section of the
YAML file fills the dataclass of the same name; keys left out keep their defaults (each default says where it
comes from, next to its field). Unknown sections, keys or stages and values of the wrong type are errors that
name the key and what was expected, before any work starts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from filters.c4 import C4Config
from filters.decontam import DecontamConfig
from filters.dedup import DedupConfig
from filters.fineweb import FineWebConfig
from filters.gopher import GopherQualityConfig, GopherRepetitionConfig
from filters.language import LanguageConfig
from filters.nsfw import NsfwConfig
from filters.pii import PiiConfig
from filters.quality import QualityConfig
from filters.repetition import RepetitionConfig
from filters.url import UrlConfig
from pipeline.extraction import ExtractConfig
from pipeline.mix import MixConfig
from pipeline.warc import ReadConfig
from training.config import ConfigError, apply_overrides, from_dict, read_yaml, to_dict  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class OutputConfig:
    write_rejected: bool = False     # also write dropped documents, with their reason, under rejected/<stage>/
    write_errors: bool = True        # errors/<file>.jsonl: file, offset, reason and detail of each error


# The stages a config without `stages` runs (configs/sample.yaml lists them): FineWeb's recipe (URL filter,
# language ID, Gopher, C4, FineWeb rules) with NSFW words, PII redaction, URL / exact / MinHash dedup and
# decontamination, and domain labels. Off unless listed: line_dedup (it edits texts; FineWeb does not use it),
# repetition (Dolma's run-length rule), quality (needs a model: `refinery quality train`, --quality-model).
DEFAULT_STAGES = ("url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "nsfw", "pii",
                  "url_dedup", "exact_dedup", "minhash_dedup", "decontam", "mix")


@dataclass(frozen=True)
class CurateConfig:
    stages: tuple[str, ...] = DEFAULT_STAGES     # the stages that run (extraction always does); order is the code's
    read: ReadConfig = field(default_factory=ReadConfig)
    url: UrlConfig = field(default_factory=UrlConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    repetition: RepetitionConfig = field(default_factory=RepetitionConfig)
    nsfw: NsfwConfig = field(default_factory=NsfwConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> CurateConfig:
    """The config in `path` (YAML; the defaults when None), then `--set section.key=value` overrides."""
    data = read_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    data = apply_overrides(data, list(overrides))
    if isinstance(data.get("stages"), dict):
        raise ConfigError(old_stages_message(data["stages"], where))
    cfg = from_dict(CurateConfig, data, where=where)
    check_ranges(cfg, where)
    return cfg


_SHARES = ("fraction", "ratio", "min_score", "confidence", "threshold")     # names of values in [0, 1]
_AT_LEAST_ONE = {"dedup.ngram", "dedup.bands", "dedup.rows", "dedup.num_perm", "dedup.rounds", "decontam.ngram",
                 "repetition.max_period", "repetition.max_repeats", "c4.max_word_chars", "mix.max_repeat"}


def check_ranges(cfg: CurateConfig, where: str = "config") -> None:
    """Every number of every section in its range, whatever the filter's own checks: counts, lengths and limits
    >= 0 (those in _AT_LEAST_ONE >= 1), shares and probabilities in [0, 1], a max_X not below its min_X. A
    ConfigError names the key, what it must be and what it got."""
    for section in dataclasses.fields(cfg):
        values = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(values):
            continue
        for f in dataclasses.fields(values):
            key, value = f"{section.name}.{f.name}", getattr(values, f.name)
            pairs = value if isinstance(value, tuple) and value and isinstance(value[0], tuple) else ()
            for n, share in pairs:                      # Gopher's (n, max fraction) rows
                if not (isinstance(n, int) and n >= 1 and 0 <= share <= 1):
                    raise ConfigError(f"{where}: {key}: each row must be (n >= 1, fraction in [0, 1]), got "
                                      f"{(n, share)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value != value:
                raise ConfigError(f"{where}: {key} must be a number, got {value}")
            low = 1 if key in _AT_LEAST_ONE else 0
            if value < low:
                raise ConfigError(f"{where}: {key} must be >= {low}, got {value}")
            if any(word in f.name for word in _SHARES) and value > 1:
                raise ConfigError(f"{where}: {key} must be in [0, 1], got {value}")
            if f.name.startswith("max_") and hasattr(values, "min_" + f.name[4:]):
                low_value = getattr(values, "min_" + f.name[4:])
                if value < low_value:
                    raise ConfigError(f"{where}: {key} ({value}) is below {section.name}.min_{f.name[4:]} "
                                      f"({low_value})")


def old_stages_message(switches: dict, where: str) -> str:
    """The error for the old `stages: {name: true/false}` form, with the list that means the same."""
    listed = [name for name in DEFAULT_STAGES if switches.get(name, True) is not False]
    listed += [name for name, on in switches.items() if on is True and name not in listed]
    return (f"{where}: `stages` is now the list of stages to run (the code fixes their order; a stage runs only "
            f"if listed), not a mapping of switches. This file's switches mean:\n  stages: [{', '.join(listed)}]")
