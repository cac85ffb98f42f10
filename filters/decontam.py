"""Benchmark decontamination: documents that share a 13-gram with an evaluation set are dropped or cut.

The evaluation items (MMLU, and the multiple-choice / cloze sets under `mc/`) are indexed as 64-bit n-gram
hashes, with the benchmark each came from (the pipeline reads the files, `pipeline/resources.py`, and builds
the index once per worker). Words are split and hashed exactly as for MinHash (`filters.minhash`: lower case,
punctuation folded, CJK per character), so "normalised" means the same thing in both stages. An item shorter
than 13 words is indexed as its whole word sequence when it has at least `min_words` (8) words, as GPT-3's
decontamination did for short examples (Brown et al. 2020, App. C); shorter items are too generic to match on.

`action: drop` drops a contaminated document with reason `benchmark_<name>` (the funnel counts each benchmark);
`action: cut` removes the matched spans and keeps the rest, listing the benchmarks in `decontaminated`.
"""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

import numpy as np

from filters import minhash
from filters.verdict import Verdict

ACTIONS = ("drop", "cut")


@dataclass(frozen=True)
class DecontamConfig:
    ngram: int = 13                  # GPT-3's 13-grams
    min_words: int = 8               # shorter items are indexed whole from this many words; below, not at all
    action: str = "drop"             # drop the document, or cut the matched spans out of it
    benchmarks: tuple[str, ...] = ("mmlu", "mc")    # folders (or files) under the shared data; relative or absolute

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"decontam.action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.ngram < 1 or not 1 <= self.min_words <= self.ngram:
            raise ValueError(f"decontam needs ngram >= 1 and 1 <= min_words <= ngram, got {self.ngram}, "
                             f"{self.min_words}")


class Reason(str, enum.Enum):
    """The benchmark a dropped document shared n-grams with (the one with the most matches)."""
    MMLU = "benchmark_mmlu"
    ARC_CHALLENGE = "benchmark_arc_challenge"
    ARC_EASY = "benchmark_arc_easy"
    BOOLQ = "benchmark_boolq"
    COMMONSENSE_QA = "benchmark_commonsense_qa"
    COPA = "benchmark_copa"
    HELLASWAG = "benchmark_hellaswag"
    LAMBADA = "benchmark_lambada_openai"
    OPENBOOK_QA = "benchmark_openbook_qa"
    PIQA = "benchmark_piqa"
    SIQA = "benchmark_siqa"
    WINOGRAD_WSC = "benchmark_winograd_wsc"
    WINOGRANDE = "benchmark_winogrande"
    OTHER = "benchmark_other"        # a benchmark file of the user's own; `decontaminated` and notes name it

    @classmethod
    def of(cls, benchmark: str) -> "Reason":
        return cls._value2member_map_.get(f"benchmark_{benchmark}", cls.OTHER)


_SEPARATOR = " qqqitemseparatorqqq "      # one word no benchmark contains, between items


def _item_ngrams(texts: list[str], ngram: int, min_words: int, counts: Counter, name: str) -> dict[int, np.ndarray]:
    """Length → hashes: every `ngram`-gram inside one item, and whole items of min_words..ngram-1 words.

    All items are hashed in one pass over their concatenation; n-grams that would span a separator are left out."""
    if not texts:
        return {}
    hashes = minhash.word_hashes(_SEPARATOR + _SEPARATOR.join(texts) + _SEPARATOR)
    sentinel = minhash.word_hashes(_SEPARATOR)[0]
    is_separator = hashes == sentinel
    bounds = np.flatnonzero(is_separator)
    starts, lengths = bounds[:-1] + 1, np.diff(bounds) - 1          # each item's first word and word count
    crossing = np.concatenate(([0], np.cumsum(is_separator)))
    result = {}
    grams = minhash.ngram_hashes(hashes, ngram)
    inside = crossing[ngram:ngram + len(grams)] - crossing[:len(grams)] == 0   # no separator in the window
    result[ngram] = grams[inside]
    counts[name] += int((lengths >= ngram).sum())
    for n in range(min_words, ngram):
        whole = starts[lengths == n]
        if len(whole):
            result[n] = minhash.ngram_hashes(hashes, n)[whole]
            counts[name] += len(whole)
    return result


class BenchmarkIndex:
    """Sorted n-gram hashes per length, each with the benchmark it came from."""

    def __init__(self, items_by_benchmark: dict[str, list[str]], ngram: int = 13, min_words: int = 8):
        self.ngram, self.names = ngram, sorted(items_by_benchmark)
        self.items = Counter()
        self._filters: dict[int, np.ndarray] = {}          # length -> bit filter, made on first use
        keys, owners = {}, {}
        for b, name in enumerate(self.names):
            for n, grams in _item_ngrams(items_by_benchmark[name], ngram, min_words, self.items, name).items():
                keys.setdefault(n, []).append(grams)
                owners.setdefault(n, []).append(np.full(len(grams), b, dtype=np.int16))
        self.tables = {}
        for n in keys:
            k, o = np.concatenate(keys[n]), np.concatenate(owners[n])
            order = np.argsort(k, kind="stable")
            self.tables[n] = (k[order], o[order])

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.tables.values())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as named arrays (for np.savez); `from_arrays` makes the same index from them."""
        arrays = {"ngram": np.array(self.ngram), "names": np.array(self.names, dtype=str),
                  "item_counts": np.array([self.items[name] for name in self.names], dtype=np.int64),
                  "lengths": np.array(list(self.tables), dtype=np.int64)}      # the tables' order is the matches'
        for n, (keys, owner) in self.tables.items():
            arrays[f"keys_{n}"], arrays[f"owners_{n}"] = keys, owner
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> "BenchmarkIndex":
        index = cls.__new__(cls)
        index.ngram, index.names = int(arrays["ngram"]), [str(name) for name in arrays["names"]]
        index.items = Counter({name: int(n) for name, n in zip(index.names, arrays["item_counts"]) if n})
        index.tables = {int(n): (arrays[f"keys_{n}"], arrays[f"owners_{n}"]) for n in arrays["lengths"]}
        index._filters = {}
        return index

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """(first word, word count, benchmark) of every n-gram of `text` found in the index."""
        hashes = minhash.word_hashes(text)
        found = {}
        for n, grams in minhash.ngram_hashes_by_length(hashes, self.tables):
            if not len(grams):
                continue
            keys, owner = self.tables[n]
            maybe = np.flatnonzero(_in_filter(self._filter(n), grams))     # a few % of the n-grams, or none
            if not len(maybe):
                continue
            at = np.searchsorted(keys, grams[maybe])
            at[at == len(keys)] = 0
            hit = keys[at] == grams[maybe]
            found[n] = [(int(i), n, self.names[o]) for i, o in zip(maybe[hit].tolist(), owner[at[hit]].tolist())]
        return [match for n in self.tables if n in found for match in found[n]]

    def _filter(self, n: int) -> np.ndarray:
        """A bit per slot of 16× as many slots as table n has keys, set where a key's low bits point: an n-gram
        whose slot is clear is not in the table, so only the few that land on a set bit are looked up."""
        if n not in self._filters:
            self._filters[n] = _bit_filter(self.tables[n][0])
        return self._filters[n]


def _bit_filter(keys: np.ndarray) -> np.ndarray:
    bits = max(6, int(16 * len(keys)).bit_length())           # slots: a power of two ≥ 16 per key
    slots = keys & np.uint64((1 << bits) - 1)
    table = np.zeros(1 << (bits - 3), dtype=np.uint8)
    np.bitwise_or.at(table, slots >> np.uint64(3), (np.uint8(1) << (slots & np.uint64(7)).astype(np.uint8)))
    return table


def _in_filter(table: np.ndarray, grams: np.ndarray) -> np.ndarray:
    slots = grams & np.uint64(len(table) * 8 - 1)
    return (table[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)) & np.uint8(1) != 0


def cut_spans(text: str, matches: list[tuple[int, int, str]]) -> str:
    """`text` without the characters the matched words cover (overlapping matches merged)."""
    spans = minhash.word_spans(text)
    if len(text.lower()) != len(text):       # offsets are into text.lower(): cut there, rare enough
        text = text.lower()
    covered = sorted((spans[first][0], spans[first + n - 1][1]) for first, n, _ in matches)
    out, position = [], 0
    for start, end in covered:
        if end <= position:
            continue
        out.append(text[position:max(start, position)])
        position = end
    out.append(text[position:])
    return "".join(out).strip()


def check_contamination(text: str, cfg: DecontamConfig = DecontamConfig(), *, language: str | None = None,
                        resources: BenchmarkIndex | None = None) -> Reason | Verdict | None:
    """None for a clean text; else the benchmark it shares the most n-grams with (`action: drop`), or the text
    with the matched spans cut out and `decontaminated` naming the benchmarks (`action: cut`; a text with
    nothing left is dropped). Notes count each benchmark cut, `cut/benchmark_<name>`."""
    found = resources.matches(text) if resources is not None else []
    if not found:
        return None
    reason = Reason.of(Counter(name for _, _, name in found).most_common(1)[0][0])
    if cfg.action == "drop":
        return reason
    names = sorted({name for _, _, name in found})
    notes = {f"cut/benchmark_{name}": 1 for name in names}
    cut = cut_spans(text, found)
    if not minhash.normalize(cut):
        return Verdict(reason=reason, notes=notes)
    return Verdict(text=cut, fields={"decontaminated": ",".join(names)}, notes=notes)
