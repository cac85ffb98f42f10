"""Deduplication in Beam: same URL, same text, then near-duplicates by MinHash LSH; optionally C4's line dedup.

```
UrlDedup      same normalised URL: the latest capture stays
ExactDedup    same normalised text: the smallest id stays
MinHashDedup  band keys → buckets → edges → connected components → checked against sketches → verdicts
LineDedup     (off by default) a line in ≥ 3 documents stays in one of them
```
Each is a stage of its own (`url_dedup`, `exact_dedup`, `minhash_dedup`, `line_dedup`). The first three
decide from keys, never from documents: `pipeline/staging.py` writes each chunk's items once with its keys
(node id, URL hash and date, text hash, MinHash band keys and sketch, `KeySpec`), and `DecideByKeys` runs the
stages over the keys of the documents still alive at each, in the recipe's order; only keys, node ids, chunk
ids and verdicts cross a shuffle. `ApplyVerdictsDoFn` then reads each chunk's items back and decides about
each document through every stage's ledger (`pipeline/stage.py`), so the writer still accounts for each
record. Survivors carry `duplicates_removed`: how many documents the exact and near-duplicate steps removed
in their favour. Keys, reasons and the config are in `filters/dedup.py`; signatures and components in
`filters/minhash.py` and `filters/components.py`.

The survivor of a group or component is decided by node ids (a hash of the WARC file's name and record id)
and dates, so the outcome depends neither on worker count and arrival order nor on where the crawl is read
from.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from filters import components, minhash
from filters.dedup import DedupConfig, Reason, line_key, normalize_url, text_key
from pipeline import doc as items
from pipeline.stage import NAMESPACE, DocDoFn, Ledger, Measured, OnLiveDocs, Stage
from pipeline.staging import read_items, read_keys

DROP, REMOVED = "drop", "removed"      # a verdict: (stage, node, DROP, survivor) or (stage, node, REMOVED, n)


def _node(doc: dict) -> int:
    return minhash.node_id(doc["id"], doc["warc_file"])


class Dedup(Stage):
    """A dedup stage: it compares every document with every other, so reruns read complete inputs again."""
    needs_every_input = True


# ---------------------------------------------------------------------------------------------- keys

@dataclass(frozen=True)
class KeySpec:
    """The key columns the active dedup stages decide by, computed from a chunk's live documents when it is
    staged: `node` always; `url` (16-byte hash of the normalised URL) and `date`; `text` (16-byte hash of the
    normalised text); `bands`, `sketch`, `signed` (MinHash band keys and 16-bit sketch; `signed` is false for
    a text without shingles)."""
    url: bool = False
    text: bool = False
    minhash: DedupConfig | None = None

    def __call__(self, docs: list[dict]) -> dict[str, np.ndarray]:
        columns = {"node": np.array([_node(d) for d in docs], dtype=np.uint64)}
        if self.url:
            columns["url"] = _bytes16([url_key(d) for d in docs])
            columns["date"] = np.array([d["crawl_date"] for d in docs], dtype=str)
        cfg = self.minhash
        if cfg is not None:
            bands, rows = cfg.bands_rows()
            band_keys = np.zeros((len(docs), bands), dtype=np.uint64)
            sketches = np.zeros((len(docs), bands * rows), dtype=np.uint16)
            signed = np.zeros(len(docs), dtype=bool)
        text_keys = []
        for i, doc in enumerate(docs):        # one document at a time: both keys split its words once
            if self.text:
                text_keys.append(text_key(doc["text"]))
            if cfg is None:
                continue
            shingles = minhash.shingle_hashes(doc["text"], cfg.ngram, doc.get("language"))
            if len(shingles):     # an empty text has no shingles, so no near-duplicates
                sig = minhash.signature(shingles, bands * rows, cfg.seed)
                band_keys[i] = minhash.band_keys(sig, bands, rows)
                sketches[i] = np.frombuffer(minhash.sketch(sig), dtype="<u2")
                signed[i] = True
        if self.text:
            columns["text"] = _bytes16(text_keys)
        if cfg is not None:
            columns.update(bands=band_keys, sketch=sketches, signed=signed)
        return columns


def url_key(doc: dict) -> bytes:
    """16-byte hash of the normalised URL (a document without one is its own key)."""
    url = normalize_url(doc["url"]) or f"\0{doc['id']}"
    return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _bytes16(keys: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16)


def key_spec(stages: list[Stage]) -> KeySpec:
    """What the stages in `stages` need staged."""
    names = {stage.name: stage for stage in stages}
    near = names.get(MinHashDedup.name)
    return KeySpec(url=UrlDedup.name in names, text=ExactDedup.name in names,
                   minhash=near.cfg if near is not None else None)


class _AliveKeysDoFn(beam.DoFn):
    """(chunk id, {'ref': staged names, 'out': nodes dropped by earlier stages}) → `emit(keys, i, chunk id)`
    for each document of the chunk still alive."""

    def __init__(self, work: str, emit):
        self.work, self.emit = work, emit

    def process(self, element):
        chunk, grouped = element
        out = set(grouped["out"])
        for name in grouped["ref"]:
            keys = read_keys(self.work, name)
            for i, node in enumerate(keys["node"].tolist()):
                if node not in out:
                    yield from self.emit(keys, i, chunk)


class KeyDedup(Dedup):
    """A dedup stage that decides from staged keys: chunks (with the nodes earlier stages dropped) → verdicts
    `(chunk id, (stage, node, DROP, survivor))` and `(chunk id, (stage, node, REMOVED, n))`."""
    reason: Reason
    counts_removed = True          # survivors add how many this stage removed in their favour

    def __init__(self):
        super().__init__()
        self.work = ""

    def reading(self, work: str) -> "KeyDedup":
        self.work = work
        return self


# ---------------------------------------------------------------------------------------------- URL and exact

def _url_entries(keys, i, chunk):
    yield keys["url"][i].tobytes(), (str(keys["date"][i]), int(keys["node"][i]), chunk)


def _text_entries(keys, i, chunk):
    yield keys["text"][i].tobytes(), (int(keys["node"][i]), chunk)


def _keep_latest(element):
    """A URL's captures (date, node, chunk) → a drop for each but the latest (ties: the smallest id)."""
    _, captures = element
    captures = list(captures)
    winner = max(captures, key=lambda c: (c[0], -c[1]))
    for date, node, chunk in captures:
        if (date, node, chunk) != winner:
            yield chunk, (UrlDedup.name, node, DROP, winner[1])


def _keep_smallest(element):
    """A text's documents (node, chunk) → a drop for each but the smallest id, and the survivor's count."""
    _, docs = element
    docs = list(docs)
    winner = min(docs)
    for node, chunk in docs:
        if (node, chunk) != winner:
            yield chunk, (ExactDedup.name, node, DROP, winner[0])
    if len(docs) > 1:
        yield winner[1], (ExactDedup.name, winner[0], REMOVED, len(docs) - 1)


class UrlDedup(KeyDedup):
    """Documents with the same normalised URL → the latest capture stays (ties: smallest id)."""
    name = "url_dedup"
    reason = Reason.URL_DUPLICATE
    counts_removed = False

    def expand(self, chunks):
        return (chunks
                | "UrlKeys" >> beam.ParDo(_AliveKeysDoFn(self.work, _url_entries))
                | Measured("url_dedup/by_url")
                | "GroupByUrl" >> beam.GroupByKey()
                | "KeepLatest" >> beam.FlatMap(_keep_latest))


class ExactDedup(KeyDedup):
    """Documents with the same normalised text → the one with the smallest id stays."""
    name = "exact_dedup"
    reason = Reason.EXACT_DUPLICATE

    def expand(self, chunks):
        return (chunks
                | "TextKeys" >> beam.ParDo(_AliveKeysDoFn(self.work, _text_entries))
                | Measured("exact_dedup/by_text")
                | "GroupByText" >> beam.GroupByKey()
                | "KeepSmallestId" >> beam.FlatMap(_keep_smallest))


# ---------------------------------------------------------------------------------------------- MinHash LSH

SKETCHES = "sketches"


def _signature_entries(keys, i, chunk):
    """A staged signature → ((band, band key), node) per band, and (node, (chunk id, sketch)) on `sketches`."""
    if not keys["signed"][i]:
        return
    node = int(keys["node"][i])
    for band, key in enumerate(keys["bands"][i].tolist()):
        yield (band, key), node
    yield beam.pvalue.TaggedOutput(SKETCHES, (node, (chunk, keys["sketch"][i].tobytes())))


class BucketEdgesDoFn(beam.DoFn):
    """A bucket's members → an edge from each to the smallest member seen before it.

    One pass with a running minimum: O(1) memory however big the bucket (a boilerplate text shared by
    millions of pages), and the edges connect the whole bucket, which is all the components need.
    """

    def setup(self):
        self.sizes = Metrics.distribution(NAMESPACE, "minhash_dedup/bucket_size")
        self.ledger = Ledger("minhash_dedup")

    def process(self, element):
        _, nodes = element
        smallest, size = None, 0
        for node in nodes:
            size += 1
            if smallest is None:
                smallest = node
            elif node != smallest:
                yield (node, smallest) if node > smallest else (smallest, node)
                smallest = min(smallest, node)
        self.sizes.update(size)
        if size > 1:
            self.ledger.note("buckets_shared")


class _StarDoFn(beam.DoFn):
    def __init__(self, step: str, round_index: int):
        self.step, self.round_index = step, round_index

    def setup(self):
        self.ledger = Ledger("minhash_dedup")

    def process(self, element):
        u, neighbours = element
        run = components.large_star if self.step == "large_star" else components.small_star
        changed = 0
        for v, m, c in run(u, neighbours):
            changed += c
            yield v, m
        self.ledger.note(f"round{self.round_index}_{self.step}_changed", changed)


class StarRound(beam.PTransform):
    """One large-star and one small-star step over all edges (v, m), v > m."""

    def __init__(self, round_index: int):
        super().__init__()
        self.round_index = round_index

    def expand(self, edges):
        return (edges
                | "BothWays" >> beam.FlatMap(lambda e: (e, (e[1], e[0])))
                | "GroupNeighbours" >> beam.GroupByKey()
                | "LargeStar" >> beam.ParDo(_StarDoFn("large_star", self.round_index))
                | "GroupSmaller" >> beam.GroupByKey()      # key: the larger end; values: its smaller neighbours
                | "SmallStar" >> beam.ParDo(_StarDoFn("small_star", self.round_index)))


@beam.typehints.with_output_types(beam.typehints.Tuple[int, beam.typehints.Any])
class _SummariseDoFn(beam.DoFn):
    """node, neighbours → (parent, ('leaf', node)) for a leaf, (node, ('root', is_root)) for every node,
    and the node's edges to smaller neighbours on `rest` when it is not a leaf."""
    REST = "rest"

    def process(self, element):
        x, neighbours = element
        is_root, parent = components.node_summary(x, neighbours)
        yield x, ("root", is_root)
        if parent is not None:
            yield parent, ("leaf", x)
        else:
            for y in neighbours:
                if y < x:
                    yield beam.pvalue.TaggedOutput(self.REST, (x, y))


def _settle(element):
    """parent, [('root', flag), ('leaf', x)...] → settled (leaf, parent) or, under a non-root, a rest edge."""
    parent, entries = element
    is_root, leaves = False, []
    for what, value in entries:
        if what == "root":
            is_root = value
        else:
            leaves.append(value)
    for leaf in leaves:
        yield beam.pvalue.TaggedOutput("settled" if is_root else "rest", (leaf, parent))


class _UnionFindDoFn(beam.DoFn):
    """All edges not settled by the star rounds → (node, label), on one worker."""

    def setup(self):
        self.ledger = Ledger("minhash_dedup")

    def process(self, element):
        _, edges = element
        uf, n = components.UnionFind(), 0
        for v, m in edges:
            uf.union(v, m)
            n += 1
        self.ledger.note("union_find_edges", n)
        yield from uf.labels().items()


def _leaf_labels(element):
    """root, {'settled': leaves, 'label': [its union-find label]} → (leaf, label) and (root, label)."""
    root, grouped = element
    labels = list(grouped["label"])
    label = labels[0] if labels else root
    for leaf in grouped["settled"]:
        yield leaf, label
    if not labels:
        yield root, root


class ConnectedComponents(beam.PTransform):
    """Edges (v, m) → (node, label): each node on an edge and the smallest node of its component."""

    def __init__(self, rounds: int):
        super().__init__()
        self.rounds = rounds

    def expand(self, edges):
        for i in range(self.rounds):
            edges = edges | f"Round{i}" >> StarRound(i)
        summary = (edges
                   | "BothWays" >> beam.FlatMap(lambda e: (e, (e[1], e[0])))
                   | "GroupNeighbours" >> beam.GroupByKey()
                   | "Summarise" >> beam.ParDo(_SummariseDoFn()).with_outputs(_SummariseDoFn.REST, main="main"))
        settled = (summary.main
                   | "GroupByParent" >> beam.GroupByKey()
                   | "Settle" >> beam.FlatMap(_settle).with_outputs("settled", "rest"))
        uf_labels = ((summary[_SummariseDoFn.REST], settled.rest)
                     | "AllRest" >> beam.Flatten()
                     | "OneKey" >> beam.Map(lambda e: (None, e))
                     | "GatherRest" >> beam.GroupByKey()
                     | "UnionFind" >> beam.ParDo(_UnionFindDoFn()))
        leaf_labels = ({"settled": settled.settled | "ByRoot" >> beam.Map(lambda e: (e[1], e[0])),
                        "label": uf_labels}
                       | "JoinRootLabels" >> beam.CoGroupByKey()
                       | "LeafLabels" >> beam.FlatMap(_leaf_labels))
        return (uf_labels, leaf_labels) | "AllLabels" >> beam.Flatten()     # each node once


def _route_sketch(element):
    """node, {'label': [its label], 'sketch': [(chunk, sketch)], 'survivor': [n]} → the sketch to its label's
    group, as a member (if the node was moved) or as the survivor (if others were moved to it)."""
    node, grouped = element
    sketches = list(grouped["sketch"])
    if not sketches:
        return
    for label in grouped["label"]:
        for chunk, sketch in sketches:        # two documents share a node only if their ids collide
            yield label, (False, node, chunk, sketch)
    if list(grouped["survivor"]):
        for chunk, sketch in sketches:
            yield node, (True, node, chunk, sketch)


class _VerifyDoFn(beam.DoFn):
    """label, its survivor's and members' sketches → a drop for each member similar enough to its survivor
    (all of them when the threshold is 0), and the survivor's count of them."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def setup(self):
        self.ledger = Ledger("minhash_dedup")
        self.similarity = Metrics.distribution(NAMESPACE, "minhash_dedup/verify_similarity_percent")

    def process(self, element):
        label, entries = element
        members, survivors = [], []
        for is_survivor, node, chunk, sketch in entries:
            (survivors if is_survivor else members).append((node, chunk, sketch))
        survivor_sketch = survivors[0][2]
        removed = 0
        for node, chunk, sketch in members:
            similarity = minhash.sketch_jaccard(sketch, survivor_sketch)
            self.similarity.update(int(similarity * 100))
            if similarity >= self.threshold:
                removed += 1
                yield chunk, (MinHashDedup.name, node, DROP, label)
            else:
                self.ledger.note("verify_rejected")
        if removed:
            for _, chunk, _ in survivors:
                yield chunk, (MinHashDedup.name, label, REMOVED, removed)


class MinHashDedup(KeyDedup):
    """Near-duplicates by MinHash LSH; one survivor (the smallest id) per connected component."""
    name = "minhash_dedup"
    reason = Reason.NEAR_DUPLICATE

    def __init__(self, cfg: DedupConfig = DedupConfig()):
        super().__init__()
        self.cfg = cfg

    def expand(self, chunks):
        keyed = chunks | "Signatures" >> beam.ParDo(_AliveKeysDoFn(self.work, _signature_entries)).with_outputs(
            SKETCHES, main="bands")
        edges = (keyed.bands
                 | Measured("minhash_dedup/buckets")
                 | "GroupBuckets" >> beam.GroupByKey()
                 | "BucketEdges" >> beam.ParDo(BucketEdgesDoFn()))
        labels = edges | "Components" >> ConnectedComponents(self.cfg.rounds)
        moved = labels | "Moved" >> beam.Filter(lambda nl: nl[0] != nl[1])
        survivors = (moved
                     | "Survivors" >> beam.Map(lambda nl: (nl[1], 1))
                     | "CountMoved" >> beam.CombinePerKey(sum))
        return ({"label": moved | Measured("minhash_dedup/labels"),
                 "sketch": keyed[SKETCHES] | Measured("minhash_dedup/sketches"),
                 "survivor": survivors}
                | "JoinSketches" >> beam.CoGroupByKey()
                | "RouteSketches" >> beam.FlatMap(_route_sketch)
                | "GroupByLabel" >> beam.GroupByKey()
                | "Verify" >> beam.ParDo(_VerifyDoFn(self.cfg.verify_threshold)))


# ---------------------------------------------------------------------------------------------- verdicts → documents

class ApplyVerdictsDoFn(beam.DoFn):
    """(chunk id, {'ref': staged names, 'verdict': verdicts}) → the chunk's items read back, each live document
    kept or dropped by every stage in turn, through that stage's ledger."""

    def __init__(self, work: str, stages: list[tuple[str, Reason, bool]], keep_rejected: bool):
        self.work, self.stages, self.keep_rejected = work, stages, keep_rejected

    def setup(self):
        self.ledgers = {name: Ledger(name, self.keep_rejected) for name, _, _ in self.stages}

    def process(self, element):
        _, grouped = element
        drops, removed = {}, Counter()
        for stage, node, what, value in grouped["verdict"]:
            if what == DROP:
                drops[stage, node] = value
            else:
                removed[stage, node] += value
        for name in sorted(grouped["ref"]):
            for item in read_items(self.work, name):
                if item["kind"] == items.DOC:
                    item = self.decide(item, drops, removed)
                yield item

    def decide(self, doc: dict, drops: dict, removed: Counter) -> dict:
        node = _node(doc)
        for stage, reason, counts_removed in self.stages:
            ledger = self.ledgers[stage]
            if (stage, node) in drops:
                return ledger.drop(doc, reason, duplicate_of=drops[stage, node])
            if counts_removed:
                doc["duplicates_removed"] = doc.get("duplicates_removed", 0) + removed[stage, node]
            ledger.keep(doc)
        return doc


class DecideByKeys(beam.PTransform):
    """Staged chunks `(chunk id, name)` → their items, with the verdicts of the key dedup stages `stages` (in
    the recipe's order; each sees the documents the earlier ones kept) applied."""

    def __init__(self, stages: list[KeyDedup], work: str, keep_rejected: bool):
        super().__init__()
        self.stages, self.work, self.keep_rejected = stages, work, keep_rejected

    def expand(self, refs):
        refs = refs | Measured("staged_chunks")
        out = refs.pipeline | "NothingDroppedYet" >> beam.Create([])      # (chunk id, node) dropped so far
        verdicts = []
        for stage in self.stages:
            alive = {"ref": refs, "out": out} | f"{stage.name}Chunks" >> beam.CoGroupByKey()
            decided = alive | stage.name >> stage.reading(self.work)
            verdicts.append(decided | f"{stage.name}Verdicts" >> Measured(f"{stage.name}/verdicts"))
            dropped = decided | f"{stage.name}Dropped" >> beam.FlatMap(
                lambda cv: [(cv[0], cv[1][1])] if cv[1][2] == DROP else [])
            out = (out, dropped) | f"{stage.name}Out" >> beam.Flatten()
        every = (tuple(verdicts) | "Verdicts" >> beam.Flatten()) if verdicts else \
            refs.pipeline | "NoVerdicts" >> beam.Create([])
        stages = [(stage.name, stage.reason, stage.counts_removed) for stage in self.stages]
        return ({"ref": refs, "verdict": every}
                | "ByChunk" >> beam.CoGroupByKey()
                | "Apply" >> beam.ParDo(ApplyVerdictsDoFn(self.work, stages, self.keep_rejected)))


# ---------------------------------------------------------------------------------------------- lines (C4)

class _LineCountFn(beam.CombineFn):
    """(documents holding the line, the smallest of their node ids): combined before the shuffle."""

    def create_accumulator(self):
        return 0, None

    def add_input(self, accumulator, node):
        count, smallest = accumulator
        return count + 1, node if smallest is None else min(smallest, node)

    def merge_accumulators(self, accumulators):
        count, smallest = 0, None
        for c, s in accumulators:
            count += c
            if s is not None:
                smallest = s if smallest is None else min(smallest, s)
        return count, smallest

    def extract_output(self, accumulator):
        return accumulator


def _line_entries(doc: dict):
    node = _node(doc)
    for key in {line_key(line) for line in doc["text"].split("\n")} - {None}:
        yield key, node


class RemoveFrequentLinesDoFn(DocDoFn):
    """Removes each frequent line (line key → the node that keeps it) from every other document."""

    def __init__(self, keep_rejected: bool):
        self.keep_rejected = keep_rejected

    def setup(self):
        self.ledger = Ledger("line_dedup", self.keep_rejected)

    def process_doc(self, doc, frequent):
        node, kept, removed = _node(doc), [], 0
        for line in doc["text"].split("\n"):
            key = line_key(line)
            if key is not None and frequent.get(key, node) != node:
                removed += 1
            else:
                kept.append(line)
        if not removed:
            yield self.ledger.keep(doc)
            return
        self.ledger.note("lines_removed", removed)
        text = "\n".join(kept).strip()
        if not minhash.normalize(text):
            yield self.ledger.drop(doc, Reason.ONLY_DUPLICATE_LINES)
            return
        yield self.ledger.rewrite(doc, text)


class LineDedup(OnLiveDocs, Dedup):
    """C4's line dedup (Raffel et al. 2020, §2.2, on lines here rather than 3-sentence spans): a normalised line
    found in at least `line_min_docs` documents stays in the one with the smallest id and leaves the others.

    Line counts are combined before the shuffle (no group holds a popular line's documents); the frequent lines
    reach the workers as a side input of 16 bytes each, which bounds this step to crawls whose frequent lines
    fit in a worker's memory (tens of millions)."""
    name = "line_dedup"

    def __init__(self, cfg: DedupConfig = DedupConfig()):
        super().__init__()
        self.min_docs = cfg.line_min_docs

    def decide(self, docs):
        min_docs = self.min_docs
        frequent = (docs
                    | "LineKeys" >> beam.FlatMap(_line_entries)
                    | "CountLines" >> beam.CombinePerKey(_LineCountFn())
                    | "Frequent" >> beam.Filter(lambda kv: kv[1][0] >= min_docs)
                    | "Keeper" >> beam.Map(lambda kv: (kv[0], kv[1][1])))
        return docs | "RemoveLines" >> beam.ParDo(RemoveFrequentLinesDoFn(self.keep_rejected),
                                                  beam.pvalue.AsDict(frequent))
