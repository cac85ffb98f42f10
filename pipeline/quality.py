"""Training, evaluating and applying the quality classifier (`refinery quality ...`, the QualityScore stage).

```
refinery quality train --output out/models/quality.bin            # the default offline sources
refinery quality eval --model out/models/quality.bin              # AUC against DCLM's human labels
refinery quality score --model out/models/quality.bin --input docs.jsonl --output scored.jsonl
```
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import apache_beam as beam
import numpy as np

from filters.quality import (
    NEGATIVE,
    POSITIVE,
    QualityConfig,
    Reason,
    normalize_for_fasttext,
    quality_score,
    score_quality,
)
from pipeline import doc as items
from pipeline.charset import decode_html
from pipeline.resources import FastTextModel, load_fasttext, prepare_model_file, save_fasttext, train_fasttext
from pipeline.shared_data import shared_data_dir
from pipeline.stage import ApplyFilter, DocDoFn, Ledger, Stage
from pipeline.warc import Page, read_file
from training.artifacts import jsonl_with, prepare_file
from training.files import parquet_texts, read_rows, write_atomic

QUALITY_LABELS = frozenset({POSITIVE, NEGATIVE})
HUMAN_LABELS = ("text/dclm-human-quality-labels/majority_data.jsonl",
                "text/dclm-human-quality-labels/agreement_data.jsonl")
MIN_WORDS = 20                              # shorter texts teach the classifier little
_WIKI_HEADING = re.compile(r"^ = [^=\n]+ = $", re.MULTILINE)
_TEXT_FIELDS = ("text", "articleBody", "output", "content")


@dataclass(frozen=True)
class ClassifierConfig:
    word_ngrams: int = 2             # DCLM's classifier uses bigrams
    epoch: int = 20
    lr: float = 0.1
    dim: int = 100
    bucket: int = 200_000            # hashed rows for the bigrams: fastText's default, 2 M, made an 870 MB model with
                                     # the same AUC (docs/quality.md); 200 k makes it 150 MB
    holdout: float = 0.1             # share of each class held out for the printed precision / recall / AUC
    seed: int = 0
    max_docs_per_class: int = 50_000


# ---------------------------------------------------------------------------------------------- readers

def resolve_inputs(spec: str) -> list[Path]:
    """A path or glob; relative ones that do not exist here are looked up in the shared data folder."""
    path = Path(spec)
    for base in (Path.cwd(), shared_data_dir()):
        candidate = path if path.is_absolute() else base / path
        matches = sorted(candidate.parent.glob(candidate.name)) if any(c in spec for c in "*?[") else \
            ([candidate] if candidate.exists() else [])
        if matches:
            return matches
    raise FileNotFoundError(f"no file matches {spec!r} (here or in {shared_data_dir()})")


def _json_text(record: dict, field: str | None) -> str | None:
    if field:
        return record.get(field)
    return next((record[f] for f in _TEXT_FIELDS if isinstance(record.get(f), str)), None)


def read_texts(path: Path, field: str | None = None) -> Iterator[str]:
    """Documents of one file: a Parquet file or dataset folder (`text` column), JSONL(.gz) or JSON (a list or
    a mapping of records; `field`, else the first of text / articleBody / output / content), WARC (the whole
    visible text of each HTML page, as negatives), or plain text (wikitext articles split at their `= Title =`
    headings, else paragraphs split at blank lines)."""
    name = path.name
    if path.is_dir() or name.endswith(".parquet"):
        yield from (t for t, in parquet_texts(path, (field or "text",)) if t)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        for _, record in read_rows(path):            # a bad line is an error naming the file and line
            text = _json_text(record, field)
            if text:
                yield text
    elif name.endswith(".json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        for record in (data.values() if isinstance(data, dict) else data):
            text = _json_text(record, field) if isinstance(record, dict) else None
            if text:
                yield text
    elif ".warc" in name or name.endswith(".arc.gz"):
        yield from whole_page_texts(str(path))
    else:
        text = path.read_text(encoding="utf-8", errors="replace")
        if "\x00" in text or text.count("\ufffd") > len(text) // 100:
            raise ValueError(f"{path}: not text (NUL bytes, or more than 1 % of it is not UTF-8): give JSONL, "
                             f"Parquet, WARC or plain text files")
        parts = _WIKI_HEADING.split(text) if _WIKI_HEADING.search(text) else re.split(r"\n\s*\n", text)
        yield from (p.strip() for p in parts if p.strip())


def whole_page_texts(path: str) -> Iterator[str]:
    """All visible text of each HTML page of a WARC file (trafilatura's html2txt: no boilerplate removal)."""

    import trafilatura  # heavy: only this reader extracts pages

    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    for outcome in read_file(path):
        if isinstance(outcome, Page):
            text = trafilatura.html2txt(decode_html(outcome.body, outcome.content_type)[0])
            if text:
                yield text


def load_texts(specs: list[str], field: str | None, limit: int, seed: int, log=print) -> list[str]:
    texts = []
    for spec in specs:
        found = [t for path in resolve_inputs(spec) for t in read_texts(path, field) if len(t.split()) >= MIN_WORDS]
        if not found:
            raise ValueError(f"{spec}: no text of {MIN_WORDS}+ words in it"
                             + (f" under the field {field!r}" if field else ""))
        log(f"[quality] {spec}: {len(found):,} texts")
        texts += found
    if len(texts) > limit:
        texts = random.Random(seed).sample(texts, limit)
    return texts


# ---------------------------------------------------------------------------------------------- metrics

def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if not positives or not negatives:
        raise ValueError("AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):                      # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision_recall(scores, labels, threshold: float = 0.5) -> tuple[float, float]:
    predicted = np.asarray(scores) >= threshold
    labels = np.asarray(labels, bool)
    true_positives = (predicted & labels).sum()
    return (float(true_positives / predicted.sum()) if predicted.sum() else 0.0,
            float(true_positives / labels.sum()) if labels.sum() else 0.0)


# ---------------------------------------------------------------------------------------------- train, eval

@dataclass
class ClassifierResult:
    model_path: str
    counts: dict = field(default_factory=dict)
    holdout: dict = field(default_factory=dict)
    wall_s: float = 0.0


def load_classifier(path: str):
    if not Path(path).is_file():
        raise FileNotFoundError(f"quality model not found: {path} (train one with `refinery quality train`)")
    return load_fasttext(path, QUALITY_LABELS, "quality model")


def train_classifier(positives: list[str], negatives: list[str], output: str,
                     cfg: ClassifierConfig = ClassifierConfig(), field: str | None = None,
                     log=print) -> ClassifierResult:
    """Train the classifier on the texts of `positives` vs `negatives` (paths or globs), hold out a share of
    each for precision / recall / AUC, save the model and a `.json` card beside it."""
    started = time.monotonic()
    prepare_model_file(output, [str(p) for spec in [*positives, *negatives] for p in resolve_inputs(spec)],
                       "quality", "positives")
    pos = load_texts(positives, field, cfg.max_docs_per_class, cfg.seed, log)
    neg = load_texts(negatives, field, cfg.max_docs_per_class, cfg.seed, log)
    if not pos or not neg:
        raise ValueError(f"need texts of both classes, got {len(pos)} positive and {len(neg)} negative")
    log(f"[quality] {len(pos):,} positive and {len(neg):,} negative texts of >= {MIN_WORDS} words")
    rng = random.Random(cfg.seed)
    examples = [(POSITIVE, t) for t in pos] + [(NEGATIVE, t) for t in neg]
    rng.shuffle(examples)
    held, used = [], []
    for label in (POSITIVE, NEGATIVE):
        of_label = [e for e in examples if e[0] == label]
        cut = int(len(of_label) * cfg.holdout)
        held += of_label[:cut]
        used += of_label[cut:]
    rng.shuffle(used)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as fh:
        for label, text in used:
            fh.write(f"{label} {normalize_for_fasttext(text)}\n")
        train_file = fh.name
    try:
        model = train_fasttext(train_file, wordNgrams=cfg.word_ngrams, epoch=cfg.epoch, lr=cfg.lr, dim=cfg.dim,
                               bucket=cfg.bucket, minCount=1, thread=1, seed=cfg.seed, verbose=0)
    finally:
        os.unlink(train_file)
    metrics = {}
    if held and len({label for label, _ in held}) == 2:
        scores = [quality_score(model, t) for _, t in held]
        labels = [label == POSITIVE for label, _ in held]
        precision, recall = precision_recall(scores, labels)
        metrics = {"documents": len(held), "precision": round(precision, 4), "recall": round(recall, 4),
                   "auc": round(roc_auc(scores, labels), 4)}
    result = ClassifierResult(output, {"positive": len(pos), "negative": len(neg), "trained_on": len(used)}, metrics,
                         time.monotonic() - started)
    save_fasttext(model, output, {"positives": positives, "negatives": negatives, "counts": result.counts,
                                  "holdout": metrics, "config": cfg.__dict__,
                                  "normalisation": "filters.quality.normalize_for_fasttext"})
    return result


def evaluate(model_path: str, labelled: list[str] = HUMAN_LABELS) -> dict[str, dict]:
    """AUC of the model's score against human keep (1) / drop (0) labels, per labelled JSONL file."""
    model = load_classifier(model_path)
    results = {}
    for spec in labelled:
        for path in resolve_inputs(spec):
            records = []
            for where, row in read_rows(path):
                if not isinstance(row.get("text"), str) or row.get("label") not in (0, 1, "0", "1"):
                    raise ValueError(f"{path}, {where}: expected a text string and a label 0 or 1")
                records.append(row)
            scores = [quality_score(model, r["text"]) for r in records]
            labels = [int(r["label"]) == 1 for r in records]
            precision, recall = precision_recall(scores, labels)
            results[path.name] = {"documents": len(records), "keep": sum(labels), "auc": round(roc_auc(scores, labels), 4),
                                  "precision": round(precision, 4), "recall": round(recall, 4)}
    return results


def score_jsonl(model_path: str, source: str, target: str, field: str = "text") -> int:
    """Copy JSONL `source` to `target` with `quality_score` added to each record; returns the count. The target
    is written to a temporary file and renamed into place at the end: never half, never over the source."""
    prepare_file(target, [source, model_path, model_path + ".json"], jsonl_with("quality_score"), "scored JSONL")
    model = load_classifier(model_path)
    lines = []
    for where, record in read_rows(source):
        if not isinstance(record.get(field), str):
            raise ValueError(f"{source}, {where}: no string field {field!r}")
        record["quality_score"] = round(quality_score(model, record[field]), 6)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    data = "".join(lines).encode("utf-8")
    write_atomic(target, gzip.compress(data) if target.endswith(".gz") else data)
    return len(lines)


# ---------------------------------------------------------------------------------------------- Beam stage

class KeepTopDoFn(DocDoFn):
    """Keeps documents scoring at least the cut-off (the side input: [score] or [] for no cut-off)."""

    def __init__(self, keep_rejected: bool):
        self.keep_rejected = keep_rejected

    def setup(self):
        self.ledger = Ledger("quality", self.keep_rejected)

    def process_doc(self, doc, cutoff):
        if cutoff and doc["quality_score"] < cutoff[0]:
            yield self.ledger.drop(doc, Reason.NOT_IN_TOP)
        else:
            yield self.ledger.keep(doc)


class QualityScore(Stage):
    """Sets `quality_score` on every document (model loaded once per worker); drops those under
    `min_score`, then, with `top_fraction` < 1, those under the score that (approximately) that fraction of
    documents reach (Beam's ApproximateQuantiles over all scores, 1,000 quantiles)."""
    name = "quality"

    def __init__(self, cfg: QualityConfig = QualityConfig()):
        super().__init__()
        self.cfg = cfg
        self.needs_every_input = cfg.top_fraction < 1.0       # the cut-off is a quantile over all documents

    def expand(self, pcoll):
        model = FastTextModel(self.cfg.model_path, "quality model",
                              " (quality.model_path is empty: train a model with `refinery quality train` and pass "
                              "it with --quality-model or quality.model_path)", QUALITY_LABELS)
        top = self.cfg.top_fraction < 1.0
        scored = pcoll | "Score" >> ApplyFilter(self.name, score_quality, self.cfg, load=model,
                                                record_keep=not top).keeping_rejected(self.keep_rejected)
        if not top:
            return scored
        index = int(round((1.0 - self.cfg.top_fraction) * 1000))
        cutoff = (scored
                  | "Scores" >> beam.FlatMap(lambda d: [d["quality_score"]] if d["kind"] == items.DOC else [])
                  | "Quantiles" >> beam.ApproximateQuantiles.Globally(1001)
                  | "Cutoff" >> beam.Map(lambda q: q[index] if q else 0.0))
        return scored | "KeepTop" >> beam.ParDo(KeepTopDoFn(self.keep_rejected), beam.pvalue.AsList(cutoff))
