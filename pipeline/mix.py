"""Domain labels and mixing: `domain` on every document, then deterministic down- and up-sampling to target
token shares, and a mix report.

```
refinery domains train --input out/sample/data --output out/models/domain.bin   # text classifier
refinery curate ... --domain-model out/models/domain.bin --config configs/mix.yaml
```

Labels: the URL rules of `filters/domain.py`; where none applies, the text classifier (fastText trained on the
documents the rules labelled) if it is at least `min_confidence` sure; else `other`.

Sampling (with `mix.weights`): tokens are estimated as UTF-8 bytes / 4. Every document gets a position
u ∈ [0, 1) from a hash of its id and `mix.seed`. Per domain, a 4,096-bucket histogram of tokens over u (summed
by a combiner, so exact and independent of workers) gives the u below which a wanted share of the domain's
tokens lies. A domain that must shrink keeps the documents below that u; one that must grow repeats every
document ⌊r⌋ times and one more time below the u of the fractional part, at most `max_repeat` times. The output
size is the input's, or less when a domain cannot grow enough within `max_repeat`. Repeats are a column
(`repeat`), not copies: the token shard writer expands them.
"""
from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.dataset as pads

from filters.domain import DOMAINS, domain_from_url
from filters.quality import normalize_for_fasttext
from pipeline import doc as items
from pipeline.dataset import dataset_files, join, write_atomic
from pipeline.quality import resolve_inputs
from pipeline.resources import FastTextModel, prepare_model_file, save_fasttext, train_fasttext
from pipeline.stage import DocDoFn, Ledger, Stage
from training.files import parquet_texts

BUCKETS = 4096
_LABEL = "__label__"
DOMAIN_LABELS = frozenset(_LABEL + d for d in DOMAINS)


class Reason(str, enum.Enum):
    DOWNSAMPLED = "mix_downsampled"              # its domain has more tokens than its share: not sampled
    NOT_WANTED = "mix_domain_not_wanted"         # its domain has weight 0 (or none) in mix.weights


@dataclass(frozen=True)
class MixConfig:
    weights: dict[str, float] = field(default_factory=dict)   # domain → target token share; empty: label only
    max_repeat: int = 4              # at most this many copies of a document (Muennighoff et al. 2023: ~4 epochs
                                     # of repeated data are almost as good as new data)
    seed: int = 0                    # of the sampling hash: another seed, another sample
    domain_model: str = ""           # fastText domain classifier (`refinery domains train`); '' = URL rules only
    min_confidence: float = 0.5      # the classifier's label is used from this probability; below: `other`

    def __post_init__(self):
        unknown = sorted(set(self.weights) - set(DOMAINS))
        if unknown:
            raise ValueError(f"mix.weights: unknown domain(s) {', '.join(unknown)}; expected {', '.join(DOMAINS)}")
        if any(w < 0 for w in self.weights.values()) or (self.weights and sum(self.weights.values()) <= 0):
            raise ValueError(f"mix.weights must be >= 0 with a positive sum, got {self.weights}")
        if self.max_repeat < 1:
            raise ValueError(f"mix.max_repeat must be >= 1, got {self.max_repeat}")

    def shares(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {d: w / total for d, w in self.weights.items() if w > 0}


def estimate_tokens(text: str) -> int:
    return max(1, len(text.encode("utf-8", "surrogatepass")) // 4)


def position(doc_id: str, seed: int) -> float:
    """The document's place in [0, 1) for sampling: a hash of its id, so reruns pick the same documents."""
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64


# ---------------------------------------------------------------------------------------------- the plan

def cut_below(histogram: np.ndarray, fraction: float) -> float:
    """The u such that about `fraction` of the histogram's tokens lie below it (linear inside a bucket)."""
    total = histogram.sum()
    if fraction >= 1.0 or total == 0:
        return 1.0
    if fraction <= 0.0:
        return 0.0
    target = fraction * total
    cumulative = np.cumsum(histogram)
    b = int(np.searchsorted(cumulative, target))        # first bucket where the sum reaches the target
    before = cumulative[b - 1] if b else 0
    inside = (target - before) / histogram[b] if histogram[b] else 0.0
    return (b + inside) / len(histogram)


def plan(histograms: dict[str, np.ndarray], cfg: MixConfig) -> dict:
    """Per domain: (rate, whole repeats, u cut for one more) and the expected tokens, from the token histograms."""
    shares = cfg.shares()
    tokens_in = {d: int(h.sum()) for d, h in histograms.items()}
    total_in = sum(tokens_in.values())
    available = {d: t for d, t in tokens_in.items() if d in shares and t > 0}
    # the output size: the input's, unless a domain cannot reach its share within max_repeat copies
    size = min([total_in] + [available[d] * cfg.max_repeat / shares[d] for d in available]) if available else 0
    norm = sum(shares[d] for d in available) or 1.0
    domains = {}
    for d, tokens in tokens_in.items():
        rate = size * shares[d] / norm / tokens if d in available else 0.0
        whole = min(int(math.floor(rate)), cfg.max_repeat)
        extra = cut_below(histograms[d], rate - whole) if whole < cfg.max_repeat else 0.0
        domains[d] = {"tokens_in": tokens, "target_share": round(shares.get(d, 0.0) / norm, 6),
                      "rate": round(rate, 6), "whole": whole, "cut": extra}
    return {"size_tokens": int(size), "tokens_in": total_in, "domains": domains,
            "missing": sorted(set(shares) - set(available))}


def repeats(u: float, domain_plan: dict | None) -> int:
    """How many times a document at position u is in the mix."""
    if not domain_plan:
        return 0
    return domain_plan["whole"] + (1 if u < domain_plan["cut"] else 0)


# ---------------------------------------------------------------------------------------------- Beam

class LabelDomainDoFn(DocDoFn):
    """Sets `domain`; without weights the stage ends here and keeps every document."""

    def __init__(self, cfg: MixConfig, model: FastTextModel | None, keep_rejected: bool):
        self.cfg, self.load_model, self.keep_rejected = cfg, model, keep_rejected

    def setup(self):
        self.model = self.load_model() if self.load_model is not None else None
        self.ledger = Ledger("mix", self.keep_rejected)

    def process_doc(self, doc):
        domain, source = domain_from_url(doc["url"]), "url"
        if domain is None and self.model is not None:
            domain, source = classify_domain(self.model, doc["text"], self.cfg.min_confidence), "text"
        doc["domain"] = domain or "other"
        self.ledger.note(f"domain/{doc['domain']}/{source if domain else 'none'}")
        yield self.ledger.keep(doc) if not self.cfg.weights else doc     # with weights, sampling decides


def classify_domain(model, text: str, min_confidence: float) -> str | None:
    line = normalize_for_fasttext(text)
    if not line:
        return None
    labels, probs = model.predict(line, k=1)
    return labels[0].removeprefix(_LABEL) if probs[0] >= min_confidence else None


class _HistogramFn(beam.CombineFn):
    def create_accumulator(self):
        return np.zeros(BUCKETS, dtype=np.int64)

    def add_input(self, accumulator, element):
        u, tokens = element
        accumulator[min(int(u * BUCKETS), BUCKETS - 1)] += tokens
        return accumulator

    def merge_accumulators(self, accumulators):
        return sum(accumulators, np.zeros(BUCKETS, dtype=np.int64))

    def extract_output(self, accumulator):
        return accumulator


class SampleDoFn(DocDoFn):
    """Keeps a document `repeats` times (the `repeat` column) or drops it, by its position and the plan."""

    def __init__(self, seed: int, keep_rejected: bool):
        self.seed, self.keep_rejected = seed, keep_rejected

    def setup(self):
        self.ledger = Ledger("mix", self.keep_rejected)

    def process_doc(self, doc, the_plan):
        domain_plan = the_plan[0]["domains"].get(doc["domain"]) if the_plan else None
        n = repeats(position(doc["id"], self.seed), domain_plan)
        if n == 0:
            reason = Reason.NOT_WANTED if not domain_plan or domain_plan["rate"] == 0 else Reason.DOWNSAMPLED
            yield self.ledger.drop(doc, reason)
            return
        doc["repeat"] = n
        yield self.ledger.keep(doc)


class _WritePlanDoFn(beam.DoFn):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, the_plan):
        write_atomic(join(self.output_dir, "mix_plan.json"), json.dumps(the_plan, indent=1).encode())
        yield the_plan


class Mix(Stage):
    """Labels `domain`; with weights, samples each domain to its token share (see the module docstring)."""
    name = "mix"

    def __init__(self, cfg: MixConfig = MixConfig(), output_dir: str | None = None):
        super().__init__()
        self.cfg, self.output_dir = cfg, output_dir
        self.needs_every_input = bool(cfg.weights)        # the plan is computed over all documents

    def expand(self, pcoll):
        model = FastTextModel(self.cfg.domain_model, "domain model", labels=DOMAIN_LABELS) \
            if self.cfg.domain_model else None
        if model is not None:
            model.check()                                  # fail before the job starts
        labelled = pcoll | "Label" >> beam.ParDo(LabelDomainDoFn(self.cfg, model, self.keep_rejected))
        if not self.cfg.weights:
            return labelled
        cfg, seed = self.cfg, self.cfg.seed
        the_plan = (labelled
                    | "Tokens" >> beam.FlatMap(lambda d: [(d["domain"], (position(d["id"], seed),
                                                                         estimate_tokens(d["text"])))]
                                               if d["kind"] == items.DOC else [])
                    | "Histograms" >> beam.CombinePerKey(_HistogramFn())
                    | "All" >> beam.combiners.ToDict()
                    | "Plan" >> beam.Map(lambda histograms: plan(histograms, cfg)))
        if self.output_dir:
            the_plan = the_plan | "WritePlan" >> beam.ParDo(_WritePlanDoFn(self.output_dir))
        return labelled | "Sample" >> beam.ParDo(SampleDoFn(seed, self.keep_rejected), beam.pvalue.AsList(the_plan))


# ---------------------------------------------------------------------------------------------- report

def mix_report(output_dir: str, plot: bool = True) -> dict:
    """Tokens per domain before (from the plan) and after (kept documents × repeats, from the shards);
    writes mix.json and, if matplotlib is there, mix.png beside the data."""
    root = Path(output_dir)
    the_plan = json.loads((root / "mix_plan.json").read_text()) if (root / "mix_plan.json").exists() else None
    table = pads.dataset(dataset_files(output_dir), format="parquet").to_table(columns=["domain", "text", "repeat"])
    after: dict[str, int] = {}
    for domain, text, repeat in zip(*(table.column(c).to_pylist() for c in ("domain", "text", "repeat"))):
        after[domain or "other"] = after.get(domain or "other", 0) + estimate_tokens(text) * (repeat or 1)
    total_after = sum(after.values()) or 1
    before = {d: p["tokens_in"] for d, p in the_plan["domains"].items()} if the_plan else dict(after)
    total_before = sum(before.values()) or 1
    report = {"tokens": "estimated as UTF-8 bytes / 4", "domains": {}}
    for d in sorted(set(before) | set(after), key=DOMAINS.index):
        entry = {"tokens_before": before.get(d, 0), "share_before": round(before.get(d, 0) / total_before, 4),
                 "tokens_after": after.get(d, 0), "share_after": round(after.get(d, 0) / total_after, 4)}
        if the_plan and d in the_plan["domains"]:
            entry["target_share"] = the_plan["domains"][d]["target_share"]
        report["domains"][d] = entry
    (root / "mix.json").write_text(json.dumps(report, indent=1))
    if plot:
        try:
            import matplotlib  # heavy: only when a plot is drawn
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
        except ImportError:
            return report
        names = list(report["domains"])
        x = np.arange(len(names))
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        ax.bar(x - 0.2, [report["domains"][n]["share_before"] for n in names], 0.4, label="before")
        ax.bar(x + 0.2, [report["domains"][n]["share_after"] for n in names], 0.4, label="after")
        if the_plan:
            ax.scatter(x + 0.2, [report["domains"][n].get("target_share", 0) for n in names], color="k",
                       marker="_", s=300, label="target", zorder=3)
        ax.set_xticks(x, names)
        ax.set_ylabel("share of tokens")
        ax.legend()
        fig.tight_layout()
        fig.savefig(root / "mix.png")
        plt.close(fig)
    return report


# ---------------------------------------------------------------------------------------------- classifier

DOMAIN_BUCKETS = 200_000        # hashed bigram rows; fastText's default 2 M made a 408 MB model (docs/mix.md)


def train_domain_classifier(inputs: list[str], output: str, epoch: int = 10, log=print) -> dict:
    """fastText on the documents of curated datasets (Parquet with url and text) that the URL rules label."""

    paths = [path for spec in inputs for path in resolve_inputs(spec)]
    prepare_model_file(output, [*inputs, *paths], "domain", "labels")
    examples = []
    for path in paths:
        for url, text in parquet_texts(path, ("url", "text")):
            domain = domain_from_url(url or "")
            if domain and text:
                examples.append((domain, normalize_for_fasttext(text)))
    labels = sorted({d for d, _ in examples})
    if len(labels) < 2:
        raise ValueError(f"the URL rules labelled {len(examples)} documents in {len(labels)} domain(s): need 2+")
    random.Random(0).shuffle(examples)
    held = examples[:len(examples) // 10]
    used = examples[len(examples) // 10:]
    log(f"[domains] {len(examples):,} documents labelled by URL rules: " +
        ", ".join(f"{d} {sum(1 for x, _ in examples if x == d)}" for d in labels))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        fh.writelines(f"{_LABEL}{d} {t}\n" for d, t in used)
        train_file = fh.name
    try:
        model = train_fasttext(train_file, wordNgrams=2, epoch=epoch, lr=0.2, dim=50, bucket=DOMAIN_BUCKETS,
                               minCount=1, thread=1, seed=0, verbose=0)
    finally:
        os.unlink(train_file)
    save_fasttext(model, output, {"inputs": inputs, "labels": labels, "documents": len(examples)})
    correct = sum(model.predict(t, k=1)[0][0] == f"{_LABEL}{d}" for d, t in held)
    return {"documents": len(examples), "labels": labels, "held_out": len(held),
            "held_out_accuracy": round(correct / len(held), 4) if held else None}
