"""Benchmark decontamination: documents that share a 13-gram with an evaluation set are dropped or cut.

The evaluation items (MMLU, and the multiple-choice / cloze sets under `mc/`) are read once per worker into an
index of 64-bit n-gram hashes, with the benchmark each came from. Words are split and hashed exactly as for
MinHash (`pipeline.minhash`: lower case, punctuation folded, CJK per character), so "normalised" means the same
thing in both stages. An item shorter than 13 words is indexed as its whole word sequence when it has at least
`min_words` (8) words, as GPT-3's decontamination did for short examples (Brown et al. 2020, App. C); shorter
items are too generic to match on.

`action: drop` drops a contaminated document with reason `benchmark_<name>` (the funnel counts each benchmark);
`action: cut` removes the matched spans and keeps the rest, listing the benchmarks in `decontaminated`.
"""
from __future__ import annotations

import bz2
import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np

from pipeline import doc as items
from pipeline import minhash
from pipeline.stages import _Counters, _DocDoFn

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


# ---------------------------------------------------------------------------------------------- benchmark items

def _strip_prompt(query: str) -> str:
    """An llm-foundry query without its scaffolding ("Question: ", "Choices:" lists, "Answer:")."""
    query = query.split("\nChoices:")[0].split("\nAnswer:")[0]
    for prefix in ("Question: ", "Passage: ", "Context: "):
        query = query.replace(prefix, " ")
    return query.strip()


def benchmark_items(path: Path) -> tuple[str, list[str]]:
    """(benchmark name, item texts) of one file: MMLU CSV, llm-foundry JSONL (MC, schema, LM), HellaSwag text."""
    name = path.name.split(".")[0]
    texts = []
    if path.suffix == ".csv":          # question,choice0..3,answer
        name = "mmlu"
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                choices = " ".join(v for k, v in row.items() if k and k.startswith("choice"))
                texts.append(f"{row['question']} {choices}")
    elif path.name.endswith(".jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if "query" in record:           # MC; letter choices are already written out in the query
                choices = [c for c in record.get("choices", []) if len(c) > 1]
                texts.append(" ".join([_strip_prompt(record["query"]), *choices]))
            elif "context_options" in record:
                texts += [f"{option} {record['continuation']}" for option in record["context_options"]]
            elif "context" in record:
                texts.append(f"{record['context']} {record.get('continuation', '')}")
    elif path.name.endswith(".txt.bz2"):     # HellaSwag: context, gold index, four endings, per item
        lines = bz2.decompress(path.read_bytes()).decode("utf-8").splitlines()
        for i in range(0, len(lines) - 5, 6):
            context, gold, endings = lines[i], lines[i + 1], lines[i + 2:i + 6]
            texts.append(f"{context} {endings[int(gold)] if gold.strip().isdigit() else ''}")
        name = name.replace("_val_full", "")
    return name, texts


def benchmark_files(specs: tuple[str, ...], root: Path) -> list[Path]:
    files = []
    for spec in specs:
        path = Path(spec) if Path(spec).is_absolute() else root / spec
        if not path.exists():
            raise FileNotFoundError(f"decontam benchmark not found: {path}")
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [p for p in files if p.suffix == ".csv" or p.name.endswith((".jsonl", ".txt.bz2"))]


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

    @classmethod
    def load(cls, cfg: DecontamConfig, root: Path) -> "BenchmarkIndex":
        items_by_benchmark: dict[str, list[str]] = {}
        for path in benchmark_files(cfg.benchmarks, root):
            name, texts = benchmark_items(path)
            items_by_benchmark.setdefault(name, []).extend(texts)
        return cls(items_by_benchmark, cfg.ngram, cfg.min_words)

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.tables.values())

    def matches(self, text: str) -> list[tuple[int, int, str]]:
        """(first word, word count, benchmark) of every n-gram of `text` found in the index."""
        hashes = minhash.word_hashes(text)
        found = []
        for n, (keys, owner) in self.tables.items():
            grams = minhash.ngram_hashes(hashes, n)
            if not len(grams):
                continue
            at = np.searchsorted(keys, grams)
            at[at == len(keys)] = 0
            hit = np.flatnonzero(keys[at] == grams)
            found += [(int(i), n, self.names[owner[at[i]]]) for i in hit]
        return found


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


def check_contamination(text: str, index: BenchmarkIndex) -> str | None:
    """The benchmark with the most matched n-grams in `text`, or None."""
    found = Counter(name for _, _, name in index.matches(text))
    return found.most_common(1)[0][0] if found else None


# ---------------------------------------------------------------------------------------------- Beam stage

class DecontaminateDoFn(_DocDoFn):
    def __init__(self, cfg: DecontamConfig, root: str, keep_rejected: bool):
        self.cfg, self.root, self.keep_rejected = cfg, root, keep_rejected

    def setup(self):
        self.index = BenchmarkIndex.load(self.cfg, Path(self.root))
        self.counters = _Counters("decontam")

    def process_doc(self, doc):
        chars = len(doc["text"])
        found = self.index.matches(doc["text"])
        if not found:
            self.counters.inc("kept")
            doc["trace"].append(("decontam", chars, chars))
            yield doc
            return
        benchmark = Counter(name for _, _, name in found).most_common(1)[0][0]
        if self.cfg.action == "cut":
            text = cut_spans(doc["text"], found)
            names = sorted({name for _, _, name in found})
            for name in names:
                self.counters.inc(f"cut/benchmark_{name}")
            if minhash.normalize(text):
                doc["text"], doc["decontaminated"] = text, ",".join(names)
                doc["trace"].append(("decontam", chars, len(text)))
                yield doc
                return
        self.counters.inc(f"benchmark_{benchmark}")
        doc["trace"].append(("decontam", chars, 0))
        yield items.dropped(doc, "decontam", f"benchmark_{benchmark}", self.keep_rejected)


class Decontaminate(beam.PTransform):
    """Drops (or cuts) documents sharing a 13-gram with MMLU or the `mc/` benchmarks."""

    def __init__(self, cfg: DecontamConfig, keep_rejected: bool = False):
        super().__init__()
        from pipeline.shared_data import shared_data_dir
        self.root = str(shared_data_dir())
        benchmark_files(cfg.benchmarks, Path(self.root))      # a missing benchmark fails before the job starts
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def expand(self, pcoll):
        return pcoll | "Check" >> beam.ParDo(DecontaminateDoFn(self.cfg, self.root, self.keep_rejected))
