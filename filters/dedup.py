"""Deduplication keys and reasons: what makes two documents the same URL, the same text or the same line.

The Beam side (`pipeline/dedup.py`) groups by these keys and decides; the MinHash signatures and the
connected-components steps it runs are in `filters/minhash.py` and `filters/components.py`.
"""
from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from filters import minhash


@dataclass(frozen=True)
class DedupConfig:
    ngram: int = 5                   # word 5-grams (FineWeb's MinHash stage)
    bands: int = 14                  # 14 × 8 = 112 permutations (FineWeb): P(candidate) = 0.5 at J ≈ 0.685
    rows: int = 8
    threshold: float | None = None   # if set: bands × rows ≤ num_perm chosen for it (datasketch's routine)
    num_perm: int = 112              # the permutation budget `threshold` chooses within
    seed: int = 1                    # of the permutations: signatures from different seeds do not compare
    rounds: int = 4                  # large-star/small-star rounds before the union-find fallback
    line_min_docs: int = 3           # line dedup: a line in this many documents stays in one of them (C4)
    verify_threshold: float = 0.65   # a removal stands only if the Jaccard estimated from the signatures of the
                                     # document and its survivor reaches this (0: off, as FineWeb): cuts the
                                     # S-curve's tail below J ≈ 0.6 and chains A~B~C that merged unlike A and C

    def __post_init__(self):
        for name in ("ngram", "bands", "rows", "num_perm", "line_min_docs"):
            if getattr(self, name) < 1:
                raise ValueError(f"dedup.{name} must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ValueError(f"dedup.rounds must be >= 0, got {self.rounds}")
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.verify_threshold <= 1.0:
            raise ValueError(f"dedup.verify_threshold must be in [0, 1], got {self.verify_threshold}")

    def bands_rows(self) -> tuple[int, int]:
        if self.threshold is None:
            return self.bands, self.rows
        return minhash.choose_bands_rows(self.threshold, self.num_perm)


class Reason(str, enum.Enum):
    URL_DUPLICATE = "url_duplicate"              # same normalised URL as a later capture
    EXACT_DUPLICATE = "exact_duplicate"          # same normalised text as a document with a smaller id
    NEAR_DUPLICATE = "near_duplicate"            # MinHash LSH: in a cluster whose survivor is another document
    ONLY_DUPLICATE_LINES = "only_duplicate_lines"    # line dedup left no line with a word in it


def normalize_url(url: str) -> str:
    """The URL as a dedup key: scheme and `www.` dropped, host lower-cased, default port, fragment and a
    trailing slash removed; path and query kept as they are (they are case-sensitive)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").removeprefix("www.")
        port = parts.port
    except ValueError:
        return url.strip()
    netloc = host if port in (None, 80, 443) else f"{host}:{port}"
    path = parts.path.rstrip("/") or ""
    return f"{netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def text_key(text: str) -> bytes:
    """128-bit hash of the normalised text (case, punctuation and whitespace folded)."""
    return hashlib.blake2b(minhash.normalize(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def line_key(line: str) -> int | None:
    """64-bit hash of a normalised line; None for a line with no word in it (blank, rules, bullets)."""
    words = minhash.normalize(line)
    if not words:
        return None
    return int.from_bytes(hashlib.blake2b(words.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
