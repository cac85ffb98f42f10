"""Dolma's repetition rule on words: one case per Reason, a passing page, the empty string, the run arithmetic."""
import pytest

from filters.repetition import Reason, RepetitionConfig, check_repetition, longest_run


@pytest.mark.parametrize("words, period, expected", [
    ("a b a b a b c", 13, 3),               # "a b" three times
    ("x x x x", 13, 4),
    ("a b c", 13, 1),                        # nothing repeats
    ("the cat sat the cat sat the cat", 3, 2),   # only whole repeats count
    ("the cat sat the cat sat the cat sat", 2, 1),   # a period longer than max_period is not seen
    ("", 13, 1),
])
def test_longest_run(words, period, expected):
    assert longest_run(words.split(), period) == expected


def test_real_article_passes(article):
    assert check_repetition(article) is None


def test_a_long_run_inside_a_long_real_article_is_dropped(articles):
    """Gopher's fractions let one run of 33 repeats pass in a long page; this rule does not."""
    from filters.gopher import check_gopher_repetition
    long_article = next(a for a in articles if check_gopher_repetition(a) is None)      # ~3,500 words
    spam = long_article + "\n" + "buy cheap pills now " * 33
    assert check_gopher_repetition(spam) is None
    assert check_repetition(spam) == Reason.REPEATED_RUN
    assert check_repetition(long_article + "\n" + "buy cheap pills now " * 32) is None       # 32: not more


def test_threshold_and_period_come_from_the_config(article):
    text = article + " " + "one two three four five six " * 10
    assert check_repetition(text, RepetitionConfig(max_repeats=9)) == Reason.REPEATED_RUN
    assert check_repetition(text, RepetitionConfig(max_repeats=9, max_period=5)) is None


def test_chinese_counts_characters_as_words(chinese):
    assert check_repetition(chinese[0], language="zh") is None
    assert check_repetition(chinese[0] + "哈" * 40, language="zh") == Reason.REPEATED_RUN


def test_empty_and_bad_config():
    assert check_repetition("") is None
    with pytest.raises(ValueError, match="max_repeats"):
        RepetitionConfig(max_repeats=1)
