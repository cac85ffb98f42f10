"""Runs of repeated words ("buy now buy now buy now ..."), after Dolma's repetition filter (Soldaini et al. 2024).

Dolma v1.7 drops a document in which some sequence of 1 to 13 tokens repeats more than 32 times in a row
(its `tokenizer_repetitions_v2r2` tagger, GPT-NeoX tokens). Gopher's repetition rules look at fractions of the
whole text, so one long run inside an otherwise fine page passes them; this rule looks at the longest run.
Departure: we count words (`filters.text.split_words`, per language) instead of GPT-NeoX tokens, so no
tokenizer is needed; a run of r repeats of a period of p words is r repeats in either unit.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from filters.text import split_words


@dataclass(frozen=True)
class RepetitionConfig:
    max_period: int = 13          # Dolma: periods of 1 to 13 tokens
    max_repeats: int = 32         # Dolma v1.7: drop when a period repeats more than 32 times in a row

    def __post_init__(self):
        if self.max_period < 1:
            raise ValueError(f"repetition.max_period must be >= 1, got {self.max_period}")
        if self.max_repeats < 2:
            raise ValueError(f"repetition.max_repeats must be >= 2, got {self.max_repeats}")


class Reason(str, enum.Enum):
    REPEATED_RUN = "repetition_long_run"


def longest_run(words: tuple[str, ...] | list[str], max_period: int) -> int:
    """The most times any sequence of 1..max_period words repeats back to back (1 when nothing repeats)."""
    ids = np.fromiter(map(hash, words), dtype=np.int64, count=len(words))
    best = 1
    for period in range(1, min(max_period, len(ids) // 2) + 1):
        same = ids[period:] == ids[:-period]       # word i + period equals word i
        if not same.any():
            continue
        # lengths of the runs of True: a run of k means k + period words with period `period`
        edges = np.flatnonzero(np.diff(np.concatenate(([0], same.view(np.int8), [0]))))
        run = int((edges[1::2] - edges[::2]).max())
        best = max(best, (run + period) // period)
    return best


def check_repetition(text: str, cfg: RepetitionConfig = RepetitionConfig(), *, language: str | None = None,
                     resources=None) -> Reason | None:
    """Why `text` holds too long a run of one repeated word sequence, or None."""
    words = split_words(text, language)
    if len(words) <= cfg.max_repeats:
        return None
    return Reason.REPEATED_RUN if longest_run(words, cfg.max_period) > cfg.max_repeats else None
