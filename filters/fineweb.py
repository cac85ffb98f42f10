"""FineWeb's own quality rules (Penedo et al. 2024, §3.4; datatrove FineWebQualityFilter defaults)."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from filters.text import lines, split_words

TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "…", "。", "！", "？", "」", ";", ":")


@dataclass(frozen=True)
class FineWebConfig:
    min_punctuated_line_fraction: float = 0.12   # lines ending in terminal punctuation
    max_short_line_fraction: float = 0.67        # lines of at most `short_line_chars`
    short_line_chars: int = 30
    max_duplicate_line_char_fraction: float = 0.01   # characters in lines seen before / all non-newline chars
    max_newlines_per_word: float = 0.3           # list-like pages


class Reason(str, enum.Enum):
    EMPTY = "fineweb_empty"
    FEW_PUNCTUATED_LINES = "fineweb_few_punctuated_lines"
    SHORT_LINES = "fineweb_too_many_short_lines"
    DUPLICATE_LINES = "fineweb_duplicate_line_chars"
    LIST_LIKE = "fineweb_too_many_newlines"


def check_fineweb(text: str, cfg: FineWebConfig = FineWebConfig(), *, language: str | None = None,
                  resources=None) -> Reason | None:
    """Why `text` fails FineWeb's rules, or None if it passes."""
    text_lines = lines(text)
    if not text_lines:
        return Reason.EMPTY
    if sum(line.endswith(TERMINAL_PUNCTUATION) for line in text_lines) / len(text_lines) \
            < cfg.min_punctuated_line_fraction:
        return Reason.FEW_PUNCTUATED_LINES
    if sum(len(line) <= cfg.short_line_chars for line in text_lines) / len(text_lines) > cfg.max_short_line_fraction:
        return Reason.SHORT_LINES
    seen, duplicate_chars = set(), 0
    for line in text_lines:
        if line in seen:
            duplicate_chars += len(line)
        seen.add(line)
    if duplicate_chars / max(1, len(text.replace("\n", ""))) > cfg.max_duplicate_line_char_fraction:
        return Reason.DUPLICATE_LINES
    words = split_words(text, language)
    if text.count("\n") / max(1, len(words)) > cfg.max_newlines_per_word:
        return Reason.LIST_LIKE
    return None
