"""MinHash signatures and LSH band keys, one vectorised numpy pass per document.

A document's text is lower-cased and cut into words by the Unicode class of each character (letters, digits
and combining marks make words; punctuation, symbols, space and `_` separate them; each CJK character is a word,
and Thai-family runs are cut every 4 letters, as `filters.text.split_words`). The text goes to numpy as code
points once: word hashes are polynomials of the code points (mod 2^64) summed per word with `reduceat`, an
n-gram's hash (5 words by default, as FineWeb) is a polynomial of its word hashes, and each goes through the
splitmix64 finaliser, so there is no Python loop over words or shingles. The i-th of the `bands × rows`
permutations maps a shingle hash h to `a_i·h + b_i mod 2^64` (a_i odd, so it is a bijection; the finaliser has
already spread h over 64 bits) and the signature keeps the minimum of each. A band key is the band's rows folded
into 64 bits the same way.

The probability that two documents of Jaccard similarity s share at least one band key is the S-curve
`1 - (1 - s^rows)^bands` (Leskovec, Rajaraman, Ullman, *Mining of Massive Datasets*, §3.4).
"""
from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache
from typing import Iterator

import numpy as np

from filters.text import THAI_CHARS_PER_WORD

_PRIME = np.uint64(0x9E3779B97F4A7C15)            # odd multiplier of the polynomials (golden ratio)
_LENGTH_SALT = np.uint64(0xD6E8FEB86659FD93)
_BLOCK_SHINGLES = 512                               # shingles per block of the (permutations × shingles) matrix
_MAX_POWER = 1 << 12                                # characters of a word that weigh in its hash with their own power
SEPARATOR, WORD, CHARACTER_WORD, UNSPACED = 0, 1, 2, 3


@lru_cache(maxsize=1)
def _char_classes() -> np.ndarray:
    """The class of each BMP code point: SEPARATOR (punctuation, symbols, space, `_`), WORD (letters, digits,
    combining marks), CHARACTER_WORD (CJK ideographs, kana: a word each) or UNSPACED (Thai, Lao, Khmer,
    Burmese: runs cut in pieces of `THAI_CHARS_PER_WORD`, as `filters.text.split_words`)."""
    classes = np.zeros(0x10000, dtype=np.uint8)
    for cp in range(0x10000):
        if unicodedata.category(chr(cp))[0] in "LNM":
            classes[cp] = WORD
    for lo, hi in ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F)):
        classes[lo:hi + 1] = CHARACTER_WORD
    for lo, hi in ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF)):
        classes[lo:hi + 1] = np.where(classes[lo:hi + 1] == WORD, UNSPACED, SEPARATOR)
    return classes


def _classify(codepoints: np.ndarray) -> np.ndarray:
    classes = _char_classes()[np.minimum(codepoints, 0xFFFF)]
    high = codepoints > 0xFFFF
    if high.any():    # beyond the BMP: CJK extensions are words by themselves, emoji and symbols separate
        cp = codepoints[high]
        classes[high] = np.where((cp >= 0x20000) & (cp <= 0x3FFFF), CHARACTER_WORD,
                                 np.where((cp >= 0x1F000) & (cp <= 0x1FFFF), SEPARATOR, WORD))
    return classes


@lru_cache(maxsize=2)      # dedup keys split the same text twice (normalize, then its shingles)
def _words(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code points of the lower-cased text, index of each word character, True where a word starts); the
    arrays are read-only, as the cache shares them."""
    codepoints, chars, start = _split_words(text)
    for array in (codepoints, chars, start):
        array.flags.writeable = False
    return codepoints, chars, start


def _split_words(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codepoints = np.frombuffer(text.lower().encode("utf-32-le", "surrogatepass"), dtype="<u4")
    classes = _classify(codepoints)
    chars = np.flatnonzero(classes)
    if not len(chars):
        return codepoints, chars, np.zeros(0, dtype=bool)
    cls = classes[chars]
    start = np.ones(len(chars), dtype=bool)
    # a word goes on while the characters are adjacent and of the same class, CJK excepted
    start[1:] = (np.diff(chars) != 1) | (cls[1:] != cls[:-1]) | (cls[1:] == CHARACTER_WORD)
    unspaced = cls == UNSPACED
    if unspaced.any():                      # Thai-family runs: a new word every THAI_CHARS_PER_WORD letters
        run_start = np.maximum.accumulate(np.where(start, np.arange(len(chars)), 0))
        start |= unspaced & ((np.arange(len(chars)) - run_start) % THAI_CHARS_PER_WORD == 0)
    return codepoints, chars, start


def normalize(text: str) -> str:
    """The text as the shingles see it: lower case, words (letters, digits, marks) separated by one space, each
    CJK character and each 4-letter piece of a Thai-family run a word of its own."""
    codepoints, chars, start = _words(text)
    if not len(chars):
        return ""
    shift = np.cumsum(start) - 1                     # spaces put in before each character
    out = np.empty(len(chars) + shift[-1], dtype="<u4")
    out[np.arange(len(chars)) + shift] = codepoints[chars]
    out[np.flatnonzero(start)[1:] + shift[start][1:] - 1] = ord(" ")
    return out.tobytes().decode("utf-32-le", "surrogatepass")


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014): spreads every input bit over all 64 output bits."""
    x = x ^ (x >> _S30)
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique, without its overhead for small arrays)."""
    x = np.sort(x)
    keep = np.empty(len(x), dtype=bool)
    keep[:1] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


@lru_cache(maxsize=1)
def _powers() -> np.ndarray:
    """P^0, P^1, ... P^(_MAX_POWER-1) mod 2^64."""
    with np.errstate(over="ignore"):
        return np.cumprod(np.concatenate(([np.uint64(1)], np.full(_MAX_POWER - 1, _PRIME, dtype=np.uint64))))


def word_hashes(text: str) -> np.ndarray:
    """uint64 hash per word of `text`, in order: Σ codepoint·P^position over the word, mod 2^64, with its
    length, through splitmix64. All words at once, no Python loop over them."""
    codepoints, chars, start = _words(text)
    if not len(chars):
        return np.empty(0, dtype=np.uint64)
    starts = np.flatnonzero(start)
    position = np.arange(len(chars)) - starts[np.cumsum(start) - 1]       # of each character in its word
    terms = codepoints[chars].astype(np.uint64) * _powers()[position % _MAX_POWER]   # uint64 arithmetic wraps
    sums = np.add.reduceat(terms, starts)
    lengths = np.empty(len(starts), dtype=np.uint64)
    lengths[:-1] = starts[1:] - starts[:-1]
    lengths[-1] = len(chars) - starts[-1]
    return _splitmix64(sums ^ (lengths * _LENGTH_SALT))


def shingle_hashes(text: str, ngram: int = 5, language: str | None = None) -> np.ndarray:
    """Sorted distinct uint64 hashes of the word n-grams of `text` (as `normalize` splits it).

    A text of fewer than `ngram` words (but at least one) is one shingle of all its words, so short texts
    still match their exact copies; an empty text has none. `language` is accepted for symmetry with the
    filters: the split depends on the script of each character, not on a language label.
    """
    hashes = word_hashes(text)
    if not len(hashes):
        return np.empty(0, dtype=np.uint64)
    return _distinct(ngram_hashes(hashes, min(ngram, len(hashes))))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of each run of `n` consecutive word hashes, in order (position i covers words i .. i+n-1)."""
    if n < 1:
        return np.empty(0, dtype=np.uint64)
    return next(ngram_hashes_by_length(hashes, [n]))[1]


def ngram_hashes_by_length(hashes: np.ndarray, lengths) -> Iterator[tuple[int, np.ndarray]]:
    """(n, ngram_hashes(hashes, n)) for each n ≥ 1 of `lengths`, shortest first, each polynomial extending
    the one before by a word instead of starting again."""
    combined, have = hashes.copy(), 1                # h = ((w0·P + w1)·P + w2)... mod 2^64
    for n in sorted(lengths):
        count = len(hashes) - n + 1
        if count <= 0:
            yield n, np.empty(0, dtype=np.uint64)
            continue
        for i in range(have, n):
            combined = combined[:len(hashes) - i]
            combined *= _PRIME
            combined += hashes[i:]
        have = n
        yield n, _splitmix64(combined)


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each word of `text`, as `word_hashes` counts them; offsets are into
    `text` itself only when lower-casing keeps its length (it nearly always does), else into `text.lower()`."""
    _, chars, start = _words(text)
    if not len(chars):
        return []
    starts = np.flatnonzero(start)
    ends = np.append(starts[1:], len(chars))
    return list(zip(chars[starts].tolist(), (chars[ends - 1] + 1).tolist()))


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): `num_perm` odd multipliers and offsets, the same for a seed on every machine."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2)
    return a, b


def signature(shingles: np.ndarray, num_perm: int = 112, seed: int = 1) -> np.ndarray:
    """The MinHash signature (uint64 × num_perm) of a set of shingle hashes; all-ones for the empty set."""
    a, b = permutations(num_perm, seed)
    result = np.full(num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(shingles), _BLOCK_SHINGLES):      # cache-sized blocks, bounded memory
        block = np.multiply.outer(a, shingles[start:start + _BLOCK_SHINGLES])   # (num_perm, block)
        block += b[:, None]
        np.minimum(result, block.min(axis=1), out=result)
    return result


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    """One 64-bit key per band: the band's `rows` signature values folded together."""
    if len(sig) < bands * rows:
        raise ValueError(f"signature has {len(sig)} values, bands × rows needs {bands * rows}")
    folded = sig[:bands * rows].reshape(bands, rows)
    with np.errstate(over="ignore"):
        key = folded[:, 0].copy()
        for i in range(1, rows):
            key = key * _PRIME + folded[:, i]
        return _splitmix64(key).tolist()


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def sketch(sig: np.ndarray) -> bytes:
    """The low 16 bits of each signature value (b-bit minwise hashing, Li & König 2010): 2 bytes per
    permutation instead of 8, for checking a candidate pair after the shuffle."""
    return sig.astype("<u2").tobytes()


def sketch_jaccard(a: bytes, b: bytes) -> float:
    """Jaccard estimated from two `sketch`es: matches, less the 2^-16 chance that unequal values collide."""
    x, y = np.frombuffer(a, dtype="<u2"), np.frombuffer(b, dtype="<u2")
    if len(x) != len(y) or not len(x):
        raise ValueError(f"sketches of {len(x)} and {len(y)} values do not compare")
    chance = 2.0 ** -16
    return max(0.0, (float(np.mean(x == y)) - chance) / (1 - chance))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sets of shingle hashes (1.0 for two empty sets)."""
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def s_curve(s, bands: int, rows: int):
    """P(two documents of Jaccard `s` share a band) = 1 - (1 - s^rows)^bands."""
    return 1.0 - (1.0 - np.asarray(s, dtype=float) ** rows) ** bands


def choose_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                      false_negative_weight: float = 0.5) -> tuple[int, int]:
    """bands × rows ≤ num_perm minimising the weighted false positive/negative areas around `threshold`
    (datasketch's own routine, so our LSH and datasketch's `MinHashLSH` agree on the parameters)."""
    from datasketch.lsh import _optimal_param  # heavy: only when a threshold is given
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)


def node_id(record_id: str, warc_file: str) -> int:
    """A document's 63-bit node id in the duplicate graph (compact in the shuffle, unlike the record id), from
    the record id and the WARC file's name without its folder: the same crawl read from another place
    (`../shared/data/...` or `/data/...`, a bucket) keeps the same survivors.

    The expected number of pairs of distinct documents sharing one is n²/2^64 (≈ 0.5 for n = 3 B): such a pair
    is treated as one node, so both share the fate of that node; neither is lost from the accounting.
    """
    name = warc_file.rstrip("/").rsplit("/", 1)[-1]
    digest = hashlib.blake2b(f"{name}\0{record_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
