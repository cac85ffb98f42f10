"""Model-based quality: a fastText classifier's probability that a text looks like reference-quality prose.

DCLM (Li et al. 2024, §4.4) filters with a fastText bigram classifier trained on reference-like positives
against raw web text; `refinery quality train` builds one from offline sources (docs/quality.md). Training
and scoring share `normalize_for_fasttext`, so the model sees the same tokens in both.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from filters.verdict import Verdict

POSITIVE, NEGATIVE = "__label__hq", "__label__lq"
_TOKEN = re.compile(r"\w+|[^\w\s\ud800-\udfff]")     # a lone surrogate (a JSON "\\ud800" escape) is no token
_MAX_CHARS = 20_000          # the first 20k characters decide: enough for the classifier, bounded cost


# Default training sources, relative to the shared data folder. Why these (docs/quality.md): positives are
# edited prose, negatives whole crawled pages as a browser shows them, boilerplate and all; the classifier
# learns the difference DCLM's raters judge.
DEFAULT_POSITIVES = ("text/wikitext-2-raw-v1.test.txt",
                     "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json")
DEFAULT_NEGATIVES = ("warc/sample-crawl/*.warc.gz",)


@dataclass(frozen=True)
class QualityConfig:
    model_path: str = ""             # fastText model from `refinery quality train` (required when the stage runs)
    min_score: float = 0.0           # keep documents scoring at least this; 0 scores without dropping
    top_fraction: float = 1.0        # keep (about) this fraction with the highest scores; 1 keeps all

    def __post_init__(self):
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"quality.min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"quality.top_fraction must be in (0, 1], got {self.top_fraction}")


class Reason(str, enum.Enum):
    LOW_SCORE = "quality_below_min_score"
    NOT_IN_TOP = "quality_below_top_fraction"


def normalize_for_fasttext(text: str) -> str:
    """One line of lower-cased tokens (words and single punctuation marks) separated by spaces."""
    return " ".join(_TOKEN.findall(text[:_MAX_CHARS].lower()))


def quality_score(model, text: str) -> float:
    """P(positive) under `model`, in [0, 1]; 0.0 for a text with no token."""
    line = normalize_for_fasttext(text)
    if not line:
        return 0.0
    labels, probs = model.predict(line, k=2)
    return float(dict(zip(labels, probs)).get(POSITIVE, 0.0))


def check_quality(score: float, cfg: QualityConfig = QualityConfig()) -> Reason | None:
    """Why a document with this score is dropped by the fixed threshold, or None."""
    return Reason.LOW_SCORE if score < cfg.min_score else None


def score_quality(text: str, cfg: QualityConfig = QualityConfig(), *, language: str | None = None,
                  resources=None) -> Verdict:
    """`quality_score` for the document (the fastText model in `resources`), and whether `min_score` drops it.
    `top_fraction` is decided later, over all scores (pipeline/quality.py)."""
    score = round(quality_score(resources, text), 6)
    return Verdict(reason=check_quality(score, cfg), fields={"quality_score": score})
