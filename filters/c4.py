"""C4's clean-up rules (Raffel et al. 2020, §2.2), as in the TFDS reference `text/c4_utils.py`.

Line rules remove lines; page rules drop the page. The paper keeps lines of at least 5 words and pages of at
least 3 sentences (TFDS: `min_words_per_line=5`, `min_num_sentences=3`). datatrove's C4QualityFilter swapped
these two defaults (3 words per line, 5 sentences); we follow the paper.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from filters.text import split_words
from filters.verdict import Verdict


@dataclass(frozen=True)
class C4Config:
    min_words_per_line: int = 5        # paper: "only retained lines that contained at least 5 words"
    min_sentences: int = 3             # paper: "discarded any page with fewer than 3 sentences"
    max_word_chars: int = 1000         # TFDS: a line with a longer "word" is markup debris
    require_terminal_punctuation: bool = True   # paper: lines ending in . ! ? or a closing quote
    drop_javascript_lines: bool = True          # paper: lines mentioning "javascript"
    drop_policy_lines: bool = True              # TFDS: cookie and terms-of-use notices
    drop_lorem_ipsum: bool = True               # paper: pages with "lorem ipsum"
    drop_curly_bracket: bool = True             # paper: pages with "{" (code)
    remove_citations: bool = True               # TFDS: Wikipedia-style [1], [edit], [citation needed]


class Reason(str, enum.Enum):
    LOREM_IPSUM = "c4_lorem_ipsum"
    CURLY_BRACKET = "c4_curly_bracket"
    TOO_FEW_SENTENCES = "c4_too_few_sentences"


_TERMINAL = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", "」")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.I)
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# A sentence ends at . ! ? (or their CJK forms) followed by space or the end; TFDS uses nltk's punkt here.
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’」]?(?=\s|$)")


def count_sentences(line: str) -> int:
    return max(1, len(_SENTENCE_END.findall(line))) if line.strip() else 0


def clean_c4(text: str, cfg: C4Config = C4Config(), *, language: str | None = None, resources=None) -> Verdict:
    """The text with C4's line rules applied, or why the page is dropped (`Verdict.reason`).

    Words are counted per language (filters/text.py), so Chinese or Japanese lines are not all "too short".
    """
    kept, sentences = [], 0
    for line in text.split("\n"):
        line = stripped = line.strip()      # words: of the line before citations are cut
        if len(line) > cfg.max_word_chars and max(map(len, split_words(line, language))) > cfg.max_word_chars:
            continue
        if cfg.remove_citations and "[" in line:
            line = _CITATION.sub("", line)
        if cfg.require_terminal_punctuation and (not line.endswith(_TERMINAL) or line.endswith("...")):
            continue
        if len(split_words(stripped, language)) < cfg.min_words_per_line:
            continue
        lower = line.lower()
        if cfg.drop_lorem_ipsum and "lorem ipsum" in lower:
            return Verdict(reason=Reason.LOREM_IPSUM)
        if cfg.drop_javascript_lines and "javascript" in lower:
            continue
        if cfg.drop_curly_bracket and "{" in line:
            return Verdict(reason=Reason.CURLY_BRACKET)
        if cfg.drop_policy_lines and any(p in lower for p in _POLICY):
            continue
        sentences += count_sentences(line)
        kept.append(line)
    if sentences < cfg.min_sentences:
        return Verdict(reason=Reason.TOO_FEW_SENTENCES)
    return Verdict(text="\n".join(kept))
