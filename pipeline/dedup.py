"""Deduplication in Beam: same URL, same text, then near-duplicates by MinHash LSH; optionally C4's line dedup.

```
UrlDedup      same normalised URL: the latest capture stays
ExactDedup    same normalised text: the smallest id stays
MinHashDedup  signatures → band buckets → edges → connected components → verdicts applied to the documents
LineDedup     (off by default) a line in ≥ 3 documents stays in one of them
```
Each is a stage of its own (`url_dedup`, `exact_dedup`, `minhash_dedup`, `line_dedup`): it takes the live
documents and decides through its ledger (`pipeline/stage.py`), so the writer still accounts for each record.
Survivors carry `duplicates_removed`: how many documents the exact and near-duplicate steps removed in their
favour. Keys, reasons and the config are in `filters/dedup.py`; signatures and components in
`filters/minhash.py` and `filters/components.py`.

MinHashDedup shuffles only integers after the signature step: `((band, band key), node)` into buckets, then
edges `(node, node)` through the connected-components rounds, then `(node, label)` verdicts that are joined
back against the documents. The survivor of a component is its smallest node id, a hash of the WARC file's
name and record id, so the outcome depends neither on worker count and arrival order nor on where the crawl
is read from.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from filters import components, minhash
from filters.dedup import DedupConfig, Reason, line_key, normalize_url, text_key
from pipeline.stage import NAMESPACE, DocDoFn, Ledger, OnLiveDocs


def _node(doc: dict) -> int:
    return minhash.node_id(doc["id"], doc["warc_file"])


class Dedup(OnLiveDocs):
    """A dedup stage: it compares every document with every other, so reruns read complete inputs again."""
    needs_every_input = True


# ---------------------------------------------------------------------------------------------- URL and exact

class _KeepOneDoFn(beam.DoFn):
    """(key, docs sharing it) → the one `pick` chooses stays, the others are dropped with `reason`."""

    def __init__(self, stage: str, reason: Reason, pick, keep_rejected: bool, count_removed: bool):
        self.stage, self.reason, self.pick, self.keep_rejected = stage, reason, pick, keep_rejected
        self.count_removed = count_removed

    def setup(self):
        self.ledger = Ledger(self.stage, self.keep_rejected)

    def process(self, element):
        _, docs = element
        docs = list(docs)          # a group is one URL or one text: small, except for the rare boilerplate page
        winner = self.pick(docs)
        for doc in docs:
            if doc is not winner:
                yield self.ledger.drop(doc, self.reason, duplicate_of=_node(winner))
                continue
            if self.count_removed:
                doc["duplicates_removed"] = doc.get("duplicates_removed", 0) + len(docs) - 1
            yield self.ledger.keep(doc)


def _latest(docs: list[dict]) -> dict:
    return max(docs, key=lambda d: (d["crawl_date"], -_node(d)))     # latest WARC-Date, then smallest id


def _smallest_id(docs: list[dict]) -> dict:
    return min(docs, key=_node)


class UrlDedup(Dedup):
    """Documents with the same normalised URL → the latest capture stays (ties: smallest id)."""
    name = "url_dedup"

    def decide(self, docs):
        return (docs
                | "KeyByUrl" >> beam.Map(lambda d: (normalize_url(d["url"]) or f"\0{d['id']}", d))
                | "GroupByUrl" >> beam.GroupByKey()
                | "KeepLatest" >> beam.ParDo(_KeepOneDoFn(self.name, Reason.URL_DUPLICATE, _latest,
                                                          self.keep_rejected, count_removed=False)))


class ExactDedup(Dedup):
    """Documents with the same normalised text → the one with the smallest id stays."""
    name = "exact_dedup"

    def decide(self, docs):
        return (docs
                | "KeyByText" >> beam.Map(lambda d: (text_key(d["text"]), d))
                | "GroupByText" >> beam.GroupByKey()
                | "KeepSmallestId" >> beam.ParDo(_KeepOneDoFn(self.name, Reason.EXACT_DUPLICATE, _smallest_id,
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
        self.ledger = Ledger("minhash_dedup")
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
                self.ledger.note("verify_rejected")


class ApplyVerdictsDoFn(beam.DoFn):
    """node, {'doc': [doc], 'label': [its label if not itself], 'removed': [how many it survived]} → the doc,
    kept or dropped (a node holds two docs only if their ids collide)."""

    def __init__(self, keep_rejected: bool):
        self.keep_rejected = keep_rejected

    def setup(self):
        self.ledger = Ledger("minhash_dedup", self.keep_rejected)

    def process(self, element):
        node, grouped = element
        labels = list(grouped["label"])
        label = labels[0] if labels else node
        removed = sum(grouped["removed"])
        for doc in grouped["doc"]:
            if label != node:
                yield self.ledger.drop(doc, Reason.NEAR_DUPLICATE, duplicate_of=label)
            else:
                doc["duplicates_removed"] = doc.get("duplicates_removed", 0) + removed
                yield self.ledger.keep(doc)


class MinHashDedup(Dedup):
    """Near-duplicates by MinHash LSH; one survivor (the smallest id) per connected component."""
    name = "minhash_dedup"

    def __init__(self, cfg: DedupConfig = DedupConfig()):
        super().__init__()
        self.cfg = cfg

    def decide(self, docs):
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
                | "Apply" >> beam.ParDo(ApplyVerdictsDoFn(self.keep_rejected)))


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


class LineDedup(Dedup):
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
