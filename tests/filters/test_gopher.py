import re

import pytest

from filters.gopher import (GOPHER_STOP_WORDS, GopherQualityConfig, QualityReason, RepetitionReason,
                            check_gopher_quality, check_gopher_repetition)


def paragraphs_of(text):
    return [p for p in text.split("\n") if p.strip()]


def repetition_cases(article):
    paras = paragraphs_of(article)
    words = article.split()
    return {
        RepetitionReason.EMPTY: "",
        # every paragraph twice: half the paragraphs are duplicates
        RepetitionReason.DUPLICATE_PARAGRAPHS: "\n\n".join(paras + paras),
        # one long paragraph repeated, the rest unique: few duplicates by count, many by characters
        RepetitionReason.DUPLICATE_PARAGRAPH_CHARS: "\n\n".join(paras[:10] + [max(paras[:10], key=len)] * 4),
        # single-newline lines, each shown twice
        RepetitionReason.DUPLICATE_LINES: "\n".join(p for p in paras for _ in range(2)),
        # one paragraph of single-newline lines; the longest line repeated: few by count, many by characters
        RepetitionReason.DUPLICATE_LINE_CHARS: "\n".join(paras[:10] + [max(paras[:10], key=len)] * 4),
        RepetitionReason.TOP_NGRAM: " ".join(words[:60] + ["breaking news"] * 40),
        RepetitionReason.DUPLICATE_NGRAMS: " ".join(words[:150] + words[:40]),
    }


@pytest.mark.parametrize("reason", list(RepetitionReason))
def test_each_repetition_reason(article, reason):
    assert check_gopher_repetition(repetition_cases(article)[reason]) == reason


def test_real_articles_pass_repetition(articles):
    passed = sum(check_gopher_repetition(a) is None for a in articles)
    assert passed / len(articles) > 0.9


def test_chinese_news_passes_repetition(chinese):
    for text in chinese:
        assert check_gopher_repetition(text, language="zh") is None


def quality_cases(article):
    words = article.split()
    sentences = [s for s in re.split(r"(?<=\.)\s+|\n+", article) if s.strip()]
    return {
        QualityReason.TOO_FEW_WORDS: " ".join(words[:30]),
        QualityReason.TOO_MANY_WORDS: article,     # with max_words lowered below
        QualityReason.SHORT_WORDS: " ".join(["a", "of", "to", "is", "the"] * 40),
        QualityReason.LONG_WORDS: " ".join(w + "supercalifragilistic" for w in words[:100]) + " the and",
        QualityReason.SYMBOLS: article + " #tag" * (len(words) // 5),
        QualityReason.BULLET_LINES: "\n".join("- " + line for line in sentences),
        QualityReason.ELLIPSIS_LINES: "\n".join(line + " ..." for line in sentences),
        QualityReason.FEW_ALPHA_WORDS: article + " 123" * len(words),
        QualityReason.FEW_STOP_WORDS: " ".join(w for w in words if not GOPHER_STOP_WORDS.intersection(
            re.findall(r"[^\W\d_]+", w.lower()))),
    }


@pytest.mark.parametrize("reason", list(QualityReason))
def test_each_quality_reason(article, reason):
    cfg = GopherQualityConfig(max_words=100) if reason == QualityReason.TOO_MANY_WORDS else GopherQualityConfig()
    assert check_gopher_quality(quality_cases(article)[reason], cfg) == reason


def test_passing_article_and_empty(article):
    assert check_gopher_quality(article) is None
    assert check_gopher_quality("") == QualityReason.TOO_FEW_WORDS


def test_unspaced_language_is_not_too_few_words(chinese):
    """A Chinese page is one 'word' to str.split(); per-language splitting keeps it."""
    from filters.text import split_words
    for text in chinese:
        assert check_gopher_quality(text, language="zh", resources={"zh": frozenset({"的", "是", "了", "在"})}) is None
        assert len(split_words(text, "zh")) > 300


def test_stop_words_are_per_language(article):
    german = ("Die Stadt hat im vergangenen Jahr mehr Geld für Schulen ausgegeben als je zuvor, und der Rat will "
              "das Programm mit den neuen Mitteln weiterführen. ") * 6
    assert check_gopher_quality(german, language="de") == QualityReason.FEW_STOP_WORDS   # English list
    assert check_gopher_quality(german, language="de", resources={"de": frozenset({"die", "und", "der", "das"})}) is None
    assert check_gopher_quality(german, language="de", resources={"en": GOPHER_STOP_WORDS}) \
        == QualityReason.FEW_STOP_WORDS                              # a language with no list has no stop words


def reference_duplicate_ngram_chars(words, n):
    """The definition, plainly: characters of words inside an n-gram seen earlier, each word once."""
    seen, covered = set(), set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        if gram in seen:
            covered.update(range(i, i + n))
        seen.add(gram)
    return sum(len(words[i]) for i in covered)


def reference_top_ngram_chars(words, n):
    from collections import Counter
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    top, count = grams.most_common(1)[0]
    return sum(map(len, top)) * count if count > 1 else 0


def test_vectorised_ngrams_match_the_definition(articles):
    import numpy as np

    from filters.gopher import _duplicate_ngram_chars, _top_ngram_chars
    from filters.text import split_words
    for text in articles[:60]:
        words = split_words(text)
        vocabulary = {}
        ids = np.array([vocabulary.setdefault(w, len(vocabulary)) for w in words], dtype=np.uint64)
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        for n in range(2, 11):
            assert _duplicate_ngram_chars(ids, lengths, n) == reference_duplicate_ngram_chars(words, n)
            assert _top_ngram_chars(ids, lengths, n) == reference_top_ngram_chars(words, n)
