"""Adult-content filter with the LDNOOBW word lists per language ("List of Dirty, Naughty, Obscene, and
Otherwise Bad Words"), by density: C4 dropped a page for a single listed word, which removes medical, legal
and news pages; we drop when listed words are frequent.

A document is checked against its language's list and the English list (spam mixes languages). Entries may
be phrases; in languages written without spaces (`unspaced=True`) entries are matched as substrings.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Mapping

from filters.text import base_language, split_words


@dataclass(frozen=True)
class NsfwConfig:
    min_bad_words: int = 3               # at least this many listed words or phrases ...
    min_bad_word_fraction: float = 0.005  # ... and at least this fraction of the words (1 in 200)
    lists_dir: str = "filters/ldnoobw"   # relative: to the shared data


class Reason(str, enum.Enum):
    BAD_WORDS = "nsfw_bad_words"


_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class BadWords:
    """One language's list: single words looked up per token, phrases searched only when their first word
    occurs, and (for unspaced languages) every entry counted as a substring."""
    entries: tuple[str, ...]
    unspaced: bool = False

    @classmethod
    def from_lines(cls, lines, unspaced: bool = False) -> "BadWords":
        return cls(tuple(sorted({line.strip().lower() for line in lines if line.strip()})), unspaced)

    def __post_init__(self):
        single = frozenset(e for e in self.entries if _TOKEN.fullmatch(e))
        phrases = {}
        for entry in self.entries:
            if entry not in single:
                words = _TOKEN.findall(entry)
                if words:
                    # literal first, so the regex engine can skip ahead to it; the left boundary is checked below
                    pattern = r"\W+".join(map(re.escape, words)) + r"(?!\w)"
                    phrases.setdefault(words[0], []).append(re.compile(pattern))
        object.__setattr__(self, "_single", single)
        object.__setattr__(self, "_phrases", phrases)

    def count(self, lowered_text: str) -> int:
        """Occurrences of listed entries in `lowered_text`."""
        if self.unspaced:
            return sum(lowered_text.count(e) for e in self.entries)
        tokens = _TOKEN.findall(lowered_text)
        found = sum(map(self._single.__contains__, tokens))
        for first in self._phrases.keys() & set(tokens):
            for pattern in self._phrases[first]:
                found += sum(1 for m in pattern.finditer(lowered_text)
                             if m.start() == 0 or not lowered_text[m.start() - 1].isalnum())
        return found


def check_nsfw(text: str, cfg: NsfwConfig = NsfwConfig(), *, language: str | None = None,
               resources: Mapping[str, BadWords] | None = None) -> Reason | None:
    """Why `text` is dropped as adult content, or None. `resources` maps language code → BadWords."""
    words = split_words(text, language)
    if not words or not resources:
        return None
    lowered = text.lower()
    found = sum(resources[code].count(lowered) for code in {base_language(language), "en"} if code in resources)
    if found >= cfg.min_bad_words and found / len(words) >= cfg.min_bad_word_fraction:
        return Reason.BAD_WORDS
    return None
