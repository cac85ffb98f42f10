import re

import pytest

from filters.text import TokenCounts, distinct_stop_words, is_symbol_word, spaced, split_words, token_counts

# digits that are not decimal (² ½ Ⅻ) count as letters to [^\W\d_]; _ is neither; NBSP, ideographic space and
# U+2028 are whitespace; emoji and a math letter lie beyond the BMP; a lone surrogate is a symbol
TRICKY = ("x² ½ Ⅻ __ _a 9_ a\u00a0b c\u3000d e\u2028f 🙂 🙂x 𝒜 \ud800 ... —— 12,5 l'été ﬁ İ Σ٣ ० \t\n  ")


def per_word_counts(text: str) -> TokenCounts:
    words = text.split()
    symbols = [w for w in words if is_symbol_word(w)]
    return TokenCounts(tokens=len(words), chars=sum(map(len, words)), symbols=len(symbols),
                       symbol_chars=sum(map(len, symbols)),
                       letterless=sum(not re.search(r"[^\W\d_]", w) for w in words))


def test_token_counts_equal_per_word_definitions(articles, dolma_docs):
    for text in articles[:80] + [d["text"] for d in dolma_docs] + [TRICKY, "", "   ", "a"]:
        assert token_counts(text) == per_word_counts(text), text[:80]
    for text in articles[:80] + [d["text"] for d in dolma_docs]:
        assert spaced(text) and list(split_words(text)) == text.split()


@pytest.mark.parametrize("text, language, count", [
    ("Hello, world!", "en", 2),
    ("这是一个中文句子。", "zh", 9),                      # one word per character (and the full stop)
    ("ภาษาไทยไม่มีช่องว่าง", "th", 5),                  # 20 Thai letters in pieces of 4
    ("mixed 中文 text", "zh", 4),
    ("", "en", 0),
])
def test_split_words(text, language, count):
    assert len(split_words(text, language)) == count


def test_distinct_stop_words(articles):
    assert distinct_stop_words("The cat and the dog.", frozenset({"the", "and", "of"}), "en") == 2
    stop = frozenset({"the", "of", "and", "to", "in", "is", "was", "zzz"})
    for text in articles[:40]:
        every = distinct_stop_words(text, stop, "en")
        for enough in (1, 2, 3, 9):
            assert distinct_stop_words(text, stop, "en", enough=enough) == min(every, enough)
    assert distinct_stop_words("我的书是红的", frozenset({"的", "是", "了"}), "zh") == 2
