"""URL filter, before any HTML is parsed (FineWeb's URL filter; datatrove's word lists, UT1 domain lists).

Rules, cheapest first:
- the host or any parent domain is on a blocklist (UT1 format: one domain per line);
- a banned word is one of the URL's words (split on non-alphanumerics);
- at least `min_soft_banned_words` soft-banned words are among them (FineWeb: 2);
- a banned sub-word occurs anywhere in the URL with non-alphanumerics removed ("freeporn" in "free-porn.com").

Lists are loaded by the pipeline (`pipeline/resources.py`) and passed in as `resources`: no file I/O here.
"""
from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class UrlConfig:
    min_soft_banned_words: int = 2     # FineWeb / datatrove URLFilter soft_word_threshold
    banned_words: str = "filters/datatrove_url_words/banned_words.txt"          # relative: to the shared data
    banned_subwords: str = "filters/datatrove_url_words/banned_subwords.txt"
    soft_banned_words: str = "filters/datatrove_url_words/soft_banned_words.txt"
    blocklists: tuple[str, ...] = ()   # UT1 `domains` files, or tar.gz archives holding them ('' parts: none)

    def __post_init__(self):
        if self.min_soft_banned_words < 1:
            raise ValueError(f"min_soft_banned_words must be >= 1, got {self.min_soft_banned_words}")


class Reason(str, enum.Enum):
    BLOCKED_DOMAIN = "url_blocked_domain"
    BLOCKED_PARENT_DOMAIN = "url_blocked_parent_domain"
    BANNED_WORD = "url_banned_word"
    SOFT_BANNED_WORDS = "url_soft_banned_words"
    BANNED_SUBWORD = "url_banned_subword"


def normalize_words(words: Iterable[str]) -> frozenset[str]:
    """List entries as they are compared: lower-case, non-alphanumerics removed; `#` lines are comments."""
    return frozenset(w for w in (_NON_ALNUM.sub("", line.strip().lower()) for line in words
                                 if line.strip() and not line.startswith("#")) if w)


def _domain_hash(domain: str) -> int:
    return int.from_bytes(hashlib.blake2b(domain.encode("utf-8", "replace"), digest_size=8).digest(), "little")


class DomainSet:
    """A set of domains as a sorted array of 64-bit hashes: 8 bytes a domain instead of ~90 in a Python set.

    Collisions: with 5 M domains the chance that a given host collides with any of them is ~3e-13.
    """

    def __init__(self, domains: Iterable[str]):
        hashes = np.fromiter((_domain_hash(d.strip().lower().rstrip(".")) for d in domains if d.strip()),
                             dtype=np.uint64)
        self._hashes = np.unique(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def nbytes(self) -> int:
        return self._hashes.nbytes

    def __contains__(self, domain: str) -> bool:
        return self.first_listed([domain]) == 0

    def first_listed(self, domains: list[str]) -> int:
        """Index of the first of `domains` in the set (one vectorised lookup for all), or -1."""
        if not len(self._hashes) or not domains:
            return -1
        wanted = np.fromiter(map(_domain_hash, domains), dtype=np.uint64, count=len(domains))
        at = np.minimum(np.searchsorted(self._hashes, wanted), len(self._hashes) - 1)
        found = np.flatnonzero(self._hashes[at] == wanted)
        return int(found[0]) if len(found) else -1


@dataclass(frozen=True)
class UrlLists:
    banned_words: frozenset[str] = frozenset()
    soft_banned_words: frozenset[str] = frozenset()
    banned_subwords: frozenset[str] = frozenset()
    blocked_domains: DomainSet | frozenset[str] = frozenset()

    def __post_init__(self):
        pattern = "|".join(sorted(map(re.escape, self.banned_subwords), key=len, reverse=True))
        object.__setattr__(self, "_subword", re.compile(pattern) if pattern else None)


def host_of(url: str) -> str:
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def check_url(url: str, cfg: UrlConfig = UrlConfig(), *, language: str | None = None,
              resources: UrlLists | None = None) -> Reason | None:
    """Why `url` is filtered out, or None if it passes. `resources`: the lists (`UrlLists`); none: no rule applies."""
    if resources is None:
        return None
    lists = resources
    host = host_of(url)
    if host and lists.blocked_domains:
        parts = host.split(".")
        candidates = [".".join(parts[i:]) for i in range(max(1, len(parts) - 1))]   # host, then its parents
        blocked = lists.blocked_domains
        first = blocked.first_listed(candidates) if isinstance(blocked, DomainSet) else \
            next((i for i, c in enumerate(candidates) if c in blocked), -1)
        if first == 0:
            return Reason.BLOCKED_DOMAIN
        if first > 0:
            return Reason.BLOCKED_PARENT_DOMAIN
    lowered = url.lower()
    words = set(_NON_ALNUM.split(lowered))
    if words & lists.banned_words:
        return Reason.BANNED_WORD
    if len(words & lists.soft_banned_words) >= cfg.min_soft_banned_words:
        return Reason.SOFT_BANNED_WORDS
    if lists._subword is not None and lists._subword.search(_NON_ALNUM.sub("", lowered)):
        return Reason.BANNED_SUBWORD
    return None
