"""Words, lines and paragraphs, per language.

Most languages separate words with spaces; Chinese, Japanese and Thai do not. There a "word" is one CJK
ideograph or kana, or one run of Thai letters cut every `THAI_CHARS_PER_WORD` characters (Thai words average
about that length); a dictionary segmenter would be more exact but costs a model per language. Filters that
count words use `split_words`, so a Chinese page of 600 characters has ~600 words, not one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})
THAI_CHARS_PER_WORD = 4

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_THAI = "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f"
# a CJK character alone; a run of Thai/Lao/Khmer/Burmese letters; or a run of anything else but spaces
_WORD = re.compile(rf"[{_CJK}]|[{_THAI}]+|[^\s{_CJK}{_THAI}]+")
_UNSPACED_SCRIPT = re.compile(f"[{_CJK}{_THAI}]")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")

def base_language(language: str | None) -> str:
    """`de-AT` → `de`; None or '' → ''."""
    return (language or "").split("-")[0].split("_")[0].lower()


@lru_cache(maxsize=16)
def split_words(text: str, language: str | None = None) -> tuple[str, ...]:
    """Words of `text`: space-separated tokens, single CJK characters, and ~4-letter pieces of Thai runs.

    Cached: the filters of one document split the same text several times.
    """
    if not _UNSPACED_SCRIPT.search(text):
        return tuple(text.split())
    words = []
    for token in _WORD.findall(text):
        first = token[0]
        if "\u0e00" <= first <= "\u0eff" or "\u1000" <= first <= "\u109f" or "\u1780" <= first <= "\u17ff":
            words.extend(token[i:i + THAI_CHARS_PER_WORD] for i in range(0, len(token), THAI_CHARS_PER_WORD))
        else:
            words.append(token)
    return tuple(words)


ALNUM = re.compile(r"[^\W_]")        # a letter or digit
LETTER = re.compile(r"[^\W\d_]")
_LETTERS = re.compile(r"[^\W\d_]+")


_SPACE, _ALNUM, _LETTER = 1, 2, 4      # per code point: str.isspace(), isalnum(), isalnum() and not isdecimal()


@lru_cache(maxsize=1)
def _char_bits() -> np.ndarray:
    """`_SPACE | _ALNUM | _LETTER` bits of every BMP code point, from the str methods `\\s`, `\\w`, `\\d` follow."""
    return np.array([_bits_of(chr(cp)) for cp in range(0x10000)], dtype=np.uint8)


def _bits_of(ch: str) -> int:
    return (_SPACE * ch.isspace() | _ALNUM * ch.isalnum()
            | _LETTER * (ch.isalnum() and not ch.isdecimal()))


def spaced(text: str) -> bool:
    """Whether `split_words` splits this text on whitespace alone (no CJK or Thai-family script in it)."""
    return _UNSPACED_SCRIPT.search(text) is None


@dataclass(frozen=True)
class TokenCounts:
    """Over the whitespace-separated tokens of a text (`text.split()`): how many, how many hold no letter or
    digit (`symbols`, with their characters in `symbol_chars`), and how many hold no letter (`letterless`);
    `chars`: the characters of all tokens.
    A letter is a character `[^\\W\\d_]` matches; a digit one `\\d` matches; `_` is neither."""
    tokens: int
    chars: int
    symbols: int
    symbol_chars: int
    letterless: int


def token_counts(text: str) -> TokenCounts:
    """`TokenCounts` of `text`, from one table lookup per character: no Python step per token."""
    codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    bits = _char_bits()[np.minimum(codepoints, 0xFFFF)]
    high = np.flatnonzero(codepoints > 0xFFFF)
    if len(high):        # beyond the BMP (emoji, CJK extensions, math letters): asked one by one
        bits[high] = [_bits_of(chr(cp)) for cp in codepoints[high].tolist()]
    chars = np.flatnonzero((bits & _SPACE) == 0)
    if not len(chars):
        return TokenCounts(0, 0, 0, 0, 0)
    starts = np.flatnonzero(np.concatenate(([True], np.diff(chars) != 1)))
    lengths = np.diff(np.append(starts, len(chars)))
    token_bits = np.bitwise_or.reduceat(bits[chars], starts)
    symbol = (token_bits & _ALNUM) == 0
    return TokenCounts(tokens=len(starts), chars=len(chars), symbols=int(symbol.sum()),
                       symbol_chars=int(lengths[symbol].sum()),
                       letterless=int(((token_bits & _LETTER) == 0).sum()))


def is_symbol_word(word: str) -> bool:
    """A token with no letter or digit in it (punctuation, symbols, emoji)."""
    return ALNUM.search(word) is None


def lines(text: str) -> list[str]:
    """Non-empty lines, stripped."""
    return [line.strip() for line in text.split("\n") if line.strip()]


def paragraphs(text: str) -> list[str]:
    return [p for p in _PARAGRAPH_BREAK.split(text.strip()) if p.strip()]


def distinct_stop_words(text: str, stop_words: frozenset[str], language: str | None, enough: int | None = None) -> int:
    """How many different stop words occur: as words, or for unspaced languages as substrings of the text.
    With `enough`, counting stops there (a rule that wants two need not read past the second)."""
    if base_language(language) in UNSPACED_LANGUAGES:
        return sum(1 for w in stop_words if w and w in text)
    if enough is None:
        return len(stop_words.intersection(_LETTERS.findall(text.lower())))
    found = set()
    for word in map(re.Match.group, _LETTERS.finditer(text.lower())):
        if word in stop_words:
            found.add(word)
            if len(found) >= enough:
                break
    return len(found)
