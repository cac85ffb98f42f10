import re

import pytest

from filters.text import (count_letterless_tokens, distinct_stop_words, is_symbol_word, spaced, split_words,
                          symbol_tokens)


def test_whole_text_passes_equal_per_word_definitions(articles, dolma_docs):
    for text in articles[:80] + [d["text"] for d in dolma_docs]:
        words = split_words(text)
        assert spaced(text) and list(words) == text.split()
        assert symbol_tokens(text) == [w for w in words if is_symbol_word(w)]
        assert count_letterless_tokens(text) == sum(not re.search(r"[^\W\d_]", w) for w in words)


@pytest.mark.parametrize("text, language, count", [
    ("Hello, world!", "en", 2),
    ("这是一个中文句子。", "zh", 9),                      # one word per character (and the full stop)
    ("ภาษาไทยไม่มีช่องว่าง", "th", 5),                  # 20 Thai letters in pieces of 4
    ("mixed 中文 text", "zh", 4),
    ("", "en", 0),
])
def test_split_words(text, language, count):
    assert len(split_words(text, language)) == count


def test_distinct_stop_words():
    assert distinct_stop_words("The cat and the dog.", frozenset({"the", "and", "of"}), "en") == 2
    assert distinct_stop_words("我的书是红的", frozenset({"的", "是", "了"}), "zh") == 2
