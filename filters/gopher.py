"""Gopher repetition and quality rules (Rae et al. 2021, "Scaling Language Models", App. A, Table A1), as
FineWeb and DCLM use them, with words split per language (filters/text.py).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from filters.text import (
    ALNUM,
    LETTER,
    UNSPACED_LANGUAGES,
    base_language,
    distinct_stop_words,
    lines,
    paragraphs,
    spaced,
    split_words,
    token_counts,
)

# The paper's English stop words ("at least two of the, be, to, of, and, that, have, with").
UNSPACED_NGRAM_SCALE = 2
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


# ---------------------------------------------------------------------------------------------- repetition

@dataclass(frozen=True)
class GopherRepetitionConfig:
    max_duplicate_line_fraction: float = 0.30            # Table A1
    max_duplicate_paragraph_fraction: float = 0.30       # Table A1
    max_duplicate_line_char_fraction: float = 0.20       # Table A1
    max_duplicate_paragraph_char_fraction: float = 0.20  # Table A1
    # (n, max fraction of characters in the most frequent n-gram), Table A1
    max_top_ngram_char_fraction: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # (n, max fraction of characters in n-grams that occur more than once), Table A1
    max_duplicate_ngram_char_fraction: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


class RepetitionReason(str, enum.Enum):
    EMPTY = "gopher_empty"
    DUPLICATE_LINES = "gopher_duplicate_lines"
    DUPLICATE_PARAGRAPHS = "gopher_duplicate_paragraphs"
    DUPLICATE_LINE_CHARS = "gopher_duplicate_line_chars"
    DUPLICATE_PARAGRAPH_CHARS = "gopher_duplicate_paragraph_chars"
    TOP_NGRAM = "gopher_top_ngram"
    DUPLICATE_NGRAMS = "gopher_duplicate_ngrams"


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items seen before, their characters)."""
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every n-gram of word ids (polynomial, wrapping): one vectorised pass per n."""
    hashes = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * np.uint64(1_000_003) + ids[k:len(ids) - n + 1 + k]
    return hashes


def _top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters in all occurrences of the most frequent n-gram (the first to occur among ties), if repeated."""
    if len(ids) < n:
        return 0
    hashes = _ngram_hashes(ids, n)
    ordered = np.sort(hashes)
    bounds = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, [len(ordered)]))
    counts = np.diff(bounds)
    top = counts.max()
    if top < 2:
        return 0
    tops = ordered[bounds[:-1][counts == top]]
    first = hashes == tops[0] if len(tops) == 1 else np.isin(hashes, tops)     # where a top n-gram occurs
    start = int(first.argmax())
    return int(lengths[start:start + n].sum()) * int(top)


def _duplicate_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int) -> int:
    """Characters of words covered by n-grams that occurred earlier in the text; each word counted once."""
    if len(ids) < n:
        return 0
    hashes = _ngram_hashes(ids, n)
    order = np.argsort(hashes, kind="stable")          # equal n-grams in the order they occur
    again = order[1:][hashes[order[1:]] == hashes[order[:-1]]]
    if not len(again):
        return 0
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[again] = True
    covered = np.convolve(repeated.astype(np.int32), np.ones(n, dtype=np.int32))[:len(ids)] > 0
    return int(lengths[covered].sum())


def check_gopher_repetition(text: str, cfg: GopherRepetitionConfig = GopherRepetitionConfig(), *,
                            language: str | None = None, resources=None) -> RepetitionReason | None:
    """Why `text` is too repetitive by the Gopher rules, or None if it passes."""
    if not text.strip():
        return RepetitionReason.EMPTY
    text_lines, text_paragraphs = lines(text), paragraphs(text)
    chars = len(text)
    line_dups, line_dup_chars = _duplicates(text_lines)
    paragraph_dups, paragraph_dup_chars = _duplicates(text_paragraphs)
    if paragraph_dups / len(text_paragraphs) > cfg.max_duplicate_paragraph_fraction:
        return RepetitionReason.DUPLICATE_PARAGRAPHS
    if paragraph_dup_chars / chars > cfg.max_duplicate_paragraph_char_fraction:
        return RepetitionReason.DUPLICATE_PARAGRAPH_CHARS
    if line_dups / len(text_lines) > cfg.max_duplicate_line_fraction:
        return RepetitionReason.DUPLICATE_LINES
    if line_dup_chars / chars > cfg.max_duplicate_line_char_fraction:
        return RepetitionReason.DUPLICATE_LINE_CHARS
    words = split_words(text, language)
    # word ids: Python's string hash (cached on each str, and only compared within this call)
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    word_chars = int(lengths.sum()) or 1
    # In unspaced languages a "word" is one character; a word there averages about two, so n-grams of
    # 2n characters stand in for the paper's n-grams of words.
    scale = UNSPACED_NGRAM_SCALE if base_language(language) in UNSPACED_LANGUAGES else 1
    for n, limit in cfg.max_top_ngram_char_fraction:
        if _top_ngram_chars(ids, lengths, n * scale) / word_chars > limit:
            return RepetitionReason.TOP_NGRAM
    # Words covered by repeated n-grams are a subset of those covered by repeated m-grams for m < n, so once
    # the fraction for the smallest n is under every remaining limit, the larger n cannot fail.
    by_n = sorted(cfg.max_duplicate_ngram_char_fraction)
    for i, (n, limit) in enumerate(by_n):
        fraction = _duplicate_ngram_chars(ids, lengths, n * scale) / word_chars
        if fraction > limit:
            return RepetitionReason.DUPLICATE_NGRAMS
        if all(fraction <= later for _, later in by_n[i + 1:]):
            break
    return None


# ---------------------------------------------------------------------------------------------- quality

@dataclass(frozen=True)
class GopherQualityConfig:
    min_words: int = 50                    # App. A: 50 to 100,000 words
    max_words: int = 100_000
    min_mean_word_chars: float = 3.0       # App. A: mean word length 3 to 10 characters
    max_mean_word_chars: float = 10.0
    max_symbol_word_ratio: float = 0.1     # App. A: "#" and ellipses per word
    max_bullet_line_fraction: float = 0.9  # App. A
    max_ellipsis_line_fraction: float = 0.3  # App. A
    min_alpha_word_fraction: float = 0.8   # App. A: 80 % of words contain a letter
    min_stop_words: int = 2                # App. A: at least two of the stop words


class QualityReason(str, enum.Enum):
    TOO_FEW_WORDS = "gopher_too_few_words"
    TOO_MANY_WORDS = "gopher_too_many_words"
    SHORT_WORDS = "gopher_mean_word_too_short"
    LONG_WORDS = "gopher_mean_word_too_long"
    SYMBOLS = "gopher_too_many_symbols"
    BULLET_LINES = "gopher_too_many_bullet_lines"
    ELLIPSIS_LINES = "gopher_too_many_ellipsis_lines"
    FEW_ALPHA_WORDS = "gopher_too_few_alphabetic_words"
    FEW_STOP_WORDS = "gopher_too_few_stop_words"


_ALNUM_SEARCH, _LETTER_SEARCH = ALNUM.search, LETTER.search    # used through map(): no Python call per word
_BULLETS = ("•", "-", "*", "·", "‣", "◦", "–")
_ELLIPSES = ("...", "…")


def check_gopher_quality(text: str, cfg: GopherQualityConfig = GopherQualityConfig(), *, language: str | None = None,
                         resources: Mapping[str, frozenset[str]] | None = None) -> QualityReason | None:
    """Why `text` fails the Gopher quality rules, or None if it passes.

    `resources`: language code → stop words (stopwords-iso, with Gopher's eight words for English); a language
    missing from it has no stop words, so its pages fail the stop-word rule. Without resources the paper's
    English list applies. In languages written without spaces the mean-word-length rule does not apply (a
    "word" is a character).
    """
    words = split_words(text, language)
    if spaced(text):    # one vectorised pass over the characters instead of a test per word
        counts = token_counts(text)
        n = len(words) - counts.symbols
        content_chars = counts.chars - counts.symbol_chars
        letterless = counts.letterless
    else:
        content = [w for w, alnum in zip(words, map(_ALNUM_SEARCH, words)) if alnum]
        n, content_chars = len(content), sum(map(len, content))
        letterless = len(words) - sum(map(bool, map(_LETTER_SEARCH, words)))
    if n < cfg.min_words:
        return QualityReason.TOO_FEW_WORDS
    if n > cfg.max_words:
        return QualityReason.TOO_MANY_WORDS
    if base_language(language) not in UNSPACED_LANGUAGES:
        mean_chars = content_chars / n
        if mean_chars < cfg.min_mean_word_chars:
            return QualityReason.SHORT_WORDS
        if mean_chars > cfg.max_mean_word_chars:
            return QualityReason.LONG_WORDS
    symbols = text.count("#") + text.count("...") + text.count("…")
    if symbols / len(words) > cfg.max_symbol_word_ratio:
        return QualityReason.SYMBOLS
    text_lines = lines(text)
    if sum(line.startswith(_BULLETS) for line in text_lines) / len(text_lines) > cfg.max_bullet_line_fraction:
        return QualityReason.BULLET_LINES
    if sum(line.endswith(_ELLIPSES) for line in text_lines) / len(text_lines) > cfg.max_ellipsis_line_fraction:
        return QualityReason.ELLIPSIS_LINES
    if 1 - letterless / len(words) < cfg.min_alpha_word_fraction:
        return QualityReason.FEW_ALPHA_WORDS
    stop_words = GOPHER_STOP_WORDS if resources is None else resources.get(base_language(language), frozenset())
    if distinct_stop_words(text, stop_words, language, enough=cfg.min_stop_words) < cfg.min_stop_words:
        return QualityReason.FEW_STOP_WORDS
    return None
