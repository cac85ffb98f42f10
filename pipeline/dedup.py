"""Deduplication in Beam: same URL, same text, then near-duplicates by MinHash LSH.

```
items ─► Deduplicate ─┬─ UrlDedup      same normalised URL: the latest capture stays
                      ├─ ExactDedup    same normalised text: the smallest id stays
                      ├─ MinHashDedup  signatures → band buckets → edges → connected components → join back
                      └─ LineDedup     (off by default) a line in ≥ 3 documents stays in one of them
```
Every part takes live documents and returns them with the removed ones turned into `dropped` items (stage
`url_dedup`, `exact_dedup` or `minhash_dedup`), so the writer still accounts for each record. Survivors carry
`duplicates_removed`: how many documents the exact and near-duplicate steps removed in their favour.

MinHashDedup shuffles only integers after the signature step: `((band, band key), node)` into buckets, then
edges `(node, node)` through the connected-components rounds (`pipeline/components.py`), then
`(node, label)` verdicts that are joined back against the documents. The survivor of a component is its
smallest node id, a hash of the WARC file and record id, so the outcome does not depend on worker count or
arrival order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import components, minhash
from pipeline import doc as items
from pipeline.stages import NAMESPACE, _Counters

URL_DUPLICATE, EXACT_DUPLICATE, NEAR_DUPLICATE = "url_duplicate", "exact_duplicate", "near_duplicate"
ONLY_DUPLICATE_LINES = "only_duplicate_lines"


@dataclass(frozen=True)
class DedupConfig:
    ngram: int = 5                   # word 5-grams (FineWeb's MinHash stage)
    bands: int = 14                  # 14 × 8 = 112 permutations (FineWeb): P(candidate) = 0.5 at J ≈ 0.685
    rows: int = 8
    threshold: float | None = None   # if set: bands × rows ≤ num_perm chosen for it (datasketch's routine)
    num_perm: int = 112              # the permutation budget `threshold` chooses within
    seed: int = 1                    # of the permutations: signatures from different seeds do not compare
    rounds: int = 4                  # large-star/small-star rounds before the union-find fallback
    line_min_docs: int = 3           # line dedup (stages.line_dedup): a line in this many documents stays in one (C4)
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


def _node(doc: dict) -> int:
    return minhash.node_id(doc["id"], doc["warc_file"])


def _kept(doc: dict, stage: str) -> dict:
    chars = len(doc["text"])
    doc["trace"].append((stage, chars, chars))
    return doc


def _removed(doc: dict, stage: str, reason: str, keep_text: bool, survivor: int | None) -> dict:
    doc["trace"].append((stage, len(doc["text"]), 0))
    item = items.dropped(doc, stage, reason, keep_text)
    item["duplicate_of"] = survivor      # the node id (`minhash.node_id`) of the document that stayed, if one
    return item


# ---------------------------------------------------------------------------------------------- URL and exact

class _KeepOneDoFn(beam.DoFn):
    """(key, docs sharing it) → the one `pick` chooses stays, the others are dropped with `reason`."""

    def __init__(self, stage: str, reason: str, pick, keep_rejected: bool, count_removed: bool):
        self.stage, self.reason, self.pick, self.keep_rejected = stage, reason, pick, keep_rejected
        self.count_removed = count_removed

    def setup(self):
        self.counters = _Counters(self.stage)

    def process(self, element):
        _, docs = element
        docs = list(docs)          # a group is one URL or one text: small, except for the rare boilerplate page
        winner = self.pick(docs)
        for doc in docs:
            if doc is not winner:
                self.counters.inc(self.reason)
                yield _removed(doc, self.stage, self.reason, self.keep_rejected, _node(winner))
                continue
            if self.count_removed:
                doc["duplicates_removed"] = doc.get("duplicates_removed", 0) + len(docs) - 1
            self.counters.inc("kept")
            yield _kept(doc, self.stage)


def _latest(docs: list[dict]) -> dict:
    return max(docs, key=lambda d: (d["crawl_date"], -_node(d)))     # latest WARC-Date, then smallest id


def _smallest_id(docs: list[dict]) -> dict:
    return min(docs, key=_node)


class UrlDedup(beam.PTransform):
    """Documents with the same normalised URL → the latest capture stays (ties: smallest id)."""

    def __init__(self, keep_rejected: bool = False):
        super().__init__()
        self.keep_rejected = keep_rejected

    def expand(self, docs):
        return (docs
                | "KeyByUrl" >> beam.Map(lambda d: (normalize_url(d["url"]) or f"\0{d['id']}", d))
                | "GroupByUrl" >> beam.GroupByKey()
                | "KeepLatest" >> beam.ParDo(_KeepOneDoFn("url_dedup", URL_DUPLICATE, _latest,
                                                          self.keep_rejected, count_removed=False)))


class ExactDedup(beam.PTransform):
    """Documents with the same normalised text → the one with the smallest id stays."""

    def __init__(self, keep_rejected: bool = False):
        super().__init__()
        self.keep_rejected = keep_rejected

    def expand(self, docs):
        return (docs
                | "KeyByText" >> beam.Map(lambda d: (text_key(d["text"]), d))
                | "GroupByText" >> beam.GroupByKey()
                | "KeepSmallestId" >> beam.ParDo(_KeepOneDoFn("exact_dedup", EXACT_DUPLICATE, _smallest_id,
                                                              self.keep_rejected, count_removed=True)))


# ---------------------------------------------------------------------------------------------- MinHash LSH

class SignatureDoFn(beam.DoFn):
    """doc → (node, doc) on the main output, ((band, band key), node) per band on `buckets` and
    (node, 16-bit sketch of the signature) on `sketches`."""
    BUCKETS, SKETCHES = "buckets", "sketches"

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.bands, self.rows = cfg.bands_rows()

    def setup(self):
        self.shingles = Metrics.distribution(NAMESPACE, "minhash_dedup/shingles_per_doc")

    def process(self, doc):
        node = _node(doc)
        shingles = minhash.shingle_hashes(doc["text"], self.cfg.ngram, doc.get("language"))
        self.shingles.update(len(shingles))
        yield node, doc
        if len(shingles):     # an empty text has no shingles, so no near-duplicates
            sig = minhash.signature(shingles, self.bands * self.rows, self.cfg.seed)
            for band, key in enumerate(minhash.band_keys(sig, self.bands, self.rows)):
                yield beam.pvalue.TaggedOutput(self.BUCKETS, ((band, key), node))
            yield beam.pvalue.TaggedOutput(self.SKETCHES, (node, minhash.sketch(sig)))


class BucketEdgesDoFn(beam.DoFn):
    """A bucket's members → an edge from each to the smallest member seen before it.

    One pass with a running minimum: O(1) memory however big the bucket (a boilerplate text shared by
    millions of pages), and the edges connect the whole bucket, which is all the components need.
    """

    def setup(self):
        self.sizes = Metrics.distribution(NAMESPACE, "minhash_dedup/bucket_size")
        self.counters = _Counters("minhash_dedup")

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
            self.counters.inc("buckets_shared")


class _StarDoFn(beam.DoFn):
    def __init__(self, step: str, round_index: int):
        self.step, self.round_index = step, round_index

    def setup(self):
        self.changed = Metrics.counter(NAMESPACE, f"minhash_dedup/round{self.round_index}_{self.step}_changed")

    def process(self, element):
        u, neighbours = element
        run = components.large_star if self.step == "large_star" else components.small_star
        changed = 0
        for v, m, c in run(u, neighbours):
            changed += c
            yield v, m
        self.changed.inc(changed)


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
        self.edges = Metrics.counter(NAMESPACE, "minhash_dedup/union_find_edges")

    def process(self, element):
        _, edges = element
        uf, n = components.UnionFind(), 0
        for v, m in edges:
            uf.union(v, m)
            n += 1
        self.edges.inc(n)
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
    """node, {'label': [its label], 'sketch': [its sketch], 'survivor': [n]} → the sketch to its label's group,
    as a member (if the node was moved) or as the survivor (if others were moved to it)."""
    node, grouped = element
    sketches = list(grouped["sketch"])
    if not sketches:
        return
    for label in grouped["label"]:
        yield label, (False, node, sketches[0])
    if list(grouped["survivor"]):
        yield node, (True, node, sketches[0])


class _VerifyDoFn(beam.DoFn):
    """label, its survivor's and members' sketches → (member, label) for members similar enough to stay moved."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def setup(self):
        self.rejected = Metrics.counter(NAMESPACE, "minhash_dedup/verify_rejected")
        self.similarity = Metrics.distribution(NAMESPACE, "minhash_dedup/verify_similarity_percent")

    def process(self, element):
        label, entries = element
        members, survivor = [], None
        for is_survivor, node, sketch in entries:
            if is_survivor:
                survivor = sketch
            else:
                members.append((node, sketch))
        for node, sketch in members:
            similarity = minhash.sketch_jaccard(sketch, survivor)
            self.similarity.update(int(similarity * 100))
            if similarity >= self.threshold:
                yield node, label
            else:
                self.rejected.inc()


def _apply_verdicts(element, keep_rejected: bool):
    """node, {'doc': [doc], 'label': [its label if not itself], 'removed': [how many it survived]} → the doc,
    kept or dropped (a node holds two docs only if their ids collide)."""
    node, grouped = element
    labels = list(grouped["label"])
    label = labels[0] if labels else node
    removed = sum(grouped["removed"])
    for doc in grouped["doc"]:
        if label != node:
            yield _removed(doc, "minhash_dedup", NEAR_DUPLICATE, keep_rejected, label)
        else:
            doc["duplicates_removed"] = doc.get("duplicates_removed", 0) + removed
            yield _kept(doc, "minhash_dedup")


class _CountVerdicts(beam.DoFn):
    def setup(self):
        self.counters = _Counters("minhash_dedup")

    def process(self, item):
        self.counters.inc("kept" if item["kind"] == items.DOC else NEAR_DUPLICATE)
        yield item


class MinHashDedup(beam.PTransform):
    """Near-duplicates by MinHash LSH; one survivor (the smallest id) per connected component."""

    def __init__(self, cfg: DedupConfig, keep_rejected: bool = False):
        super().__init__()
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def expand(self, docs):
        keyed = docs | "Signature" >> beam.ParDo(SignatureDoFn(self.cfg)).with_outputs(
            SignatureDoFn.BUCKETS, SignatureDoFn.SKETCHES, main="docs")
        edges = (keyed[SignatureDoFn.BUCKETS]
                 | "GroupBuckets" >> beam.GroupByKey()
                 | "BucketEdges" >> beam.ParDo(BucketEdgesDoFn()))
        labels = edges | "Components" >> ConnectedComponents(self.cfg.rounds)
        moved = labels | "Moved" >> beam.Filter(lambda nl: nl[0] != nl[1])
        if self.cfg.verify_threshold > 0:
            survivors = (moved
                         | "Survivors" >> beam.Map(lambda nl: (nl[1], 1))
                         | "CountMoved" >> beam.CombinePerKey(sum))
            moved = ({"label": moved, "sketch": keyed[SignatureDoFn.SKETCHES], "survivor": survivors}
                     | "JoinSketches" >> beam.CoGroupByKey()
                     | "RouteSketches" >> beam.FlatMap(_route_sketch)
                     | "GroupByLabel" >> beam.GroupByKey()
                     | "Verify" >> beam.ParDo(_VerifyDoFn(self.cfg.verify_threshold)))
        removed_per_survivor = (moved
                                | "BySurvivor" >> beam.Map(lambda nl: (nl[1], 1))
                                | "CountRemoved" >> beam.CombinePerKey(sum))
        return ({"doc": keyed.docs, "label": moved, "removed": removed_per_survivor}
                | "JoinVerdicts" >> beam.CoGroupByKey()
                | "Apply" >> beam.FlatMap(_apply_verdicts, self.keep_rejected)
                | "Count" >> beam.ParDo(_CountVerdicts()))


# ---------------------------------------------------------------------------------------------- lines (C4)

def line_key(line: str) -> int | None:
    """64-bit hash of a normalised line; None for a line with no word in it (blank, rules, bullets)."""
    words = minhash.normalize(line)
    if not words:
        return None
    return int.from_bytes(hashlib.blake2b(words.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


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


class RemoveFrequentLinesDoFn(beam.DoFn):
    """Removes each frequent line (line key → the node that keeps it) from every other document."""

    def __init__(self, keep_rejected: bool):
        self.keep_rejected = keep_rejected

    def setup(self):
        self.counters = _Counters("line_dedup")

    def process(self, doc, frequent):
        node, kept, removed = _node(doc), [], 0
        for line in doc["text"].split("\n"):
            key = line_key(line)
            if key is not None and frequent.get(key, node) != node:
                removed += 1
            else:
                kept.append(line)
        if not removed:
            self.counters.inc("kept")
            yield _kept(doc, "line_dedup")
            return
        self.counters.inc("lines_removed", removed)
        text = "\n".join(kept).strip()
        if not minhash.normalize(text):
            self.counters.inc(ONLY_DUPLICATE_LINES)
            yield _removed(doc, "line_dedup", ONLY_DUPLICATE_LINES, self.keep_rejected, None)
            return
        self.counters.inc("kept")
        doc["trace"].append(("line_dedup", len(doc["text"]), len(text)))
        doc["text"] = text
        yield doc


class LineDedup(beam.PTransform):
    """C4's line dedup (Raffel et al. 2020, §2.2, on lines here rather than 3-sentence spans): a normalised line
    found in at least `min_docs` documents stays in the one with the smallest id and leaves the others.

    Line counts are combined before the shuffle (no group holds a popular line's documents); the frequent lines
    reach the workers as a side input of 16 bytes each, which bounds this step to crawls whose frequent lines
    fit in a worker's memory (tens of millions)."""

    def __init__(self, min_docs: int = 3, keep_rejected: bool = False):
        super().__init__()
        self.min_docs, self.keep_rejected = min_docs, keep_rejected

    def expand(self, docs):
        min_docs = self.min_docs
        frequent = (docs
                    | "LineKeys" >> beam.FlatMap(_line_entries)
                    | "CountLines" >> beam.CombinePerKey(_LineCountFn())
                    | "Frequent" >> beam.Filter(lambda kv: kv[1][0] >= min_docs)
                    | "Keeper" >> beam.Map(lambda kv: (kv[0], kv[1][1])))
        return docs | "RemoveLines" >> beam.ParDo(RemoveFrequentLinesDoFn(self.keep_rejected),
                                                  beam.pvalue.AsDict(frequent))


# ---------------------------------------------------------------------------------------------- the stage

class _SplitLiveDoFn(beam.DoFn):
    OTHER = "other"

    def process(self, item):
        if item["kind"] == items.DOC:
            yield item
        else:
            yield beam.pvalue.TaggedOutput(self.OTHER, item)


def _split_dropped(item):
    if item["kind"] != items.DOC:
        yield beam.pvalue.TaggedOutput("dropped", item)
    else:
        yield item


class Deduplicate(beam.PTransform):
    """Items → items: live documents through the enabled dedup parts, everything else passed through."""

    def __init__(self, cfg: DedupConfig, url: bool = True, exact: bool = True, near: bool = True,
                 keep_rejected: bool = False, lines: bool = False):
        super().__init__()
        self.cfg, self.url, self.exact, self.near, self.keep_rejected = cfg, url, exact, near, keep_rejected
        self.lines = lines

    def expand(self, pcoll):
        split = pcoll | "Live" >> beam.ParDo(_SplitLiveDoFn()).with_outputs(_SplitLiveDoFn.OTHER, main="docs")
        docs, out = split.docs, [split[_SplitLiveDoFn.OTHER]]
        parts = [("UrlDedup", self.url, lambda: UrlDedup(self.keep_rejected)),
                 ("ExactDedup", self.exact, lambda: ExactDedup(self.keep_rejected)),
                 ("MinHashDedup", self.near, lambda: MinHashDedup(self.cfg, self.keep_rejected)),
                 ("LineDedup", self.lines, lambda: LineDedup(self.cfg.line_min_docs, self.keep_rejected))]
        for label, on, make in parts:
            if on:
                result = docs | label >> make() | f"{label}Split" >> beam.FlatMap(_split_dropped).with_outputs(
                    "dropped", main="docs")
                docs = result.docs
                out.append(result.dropped)
        return (*out, docs) | "Merge" >> beam.Flatten()
