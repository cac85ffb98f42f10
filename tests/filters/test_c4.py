import pytest

from filters.c4 import C4Config, Reason, clean_c4


@pytest.mark.parametrize("reason, make", [
    (Reason.LOREM_IPSUM, lambda a: a + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."),
    (Reason.CURLY_BRACKET, lambda a: a + "\nThe function returns {value: 1} when called with no arguments."),
    (Reason.TOO_FEW_SENTENCES, lambda a: "Menu\nHome\nContact us today for a free quote on everything."),
])
def test_each_page_reason(article, reason, make):
    assert clean_c4(make(article))[1] == reason


def test_passing_article_keeps_its_sentences(article):
    text, reason, *_ = clean_c4(article)
    assert reason is None and 0.8 * len(article) < len(text) <= len(article)


def test_line_rules(article):
    noisy = "\n".join(["Share this", "Please enable JavaScript to view the comments powered by Disqus.",
                       "This site uses cookies to improve your experience with our service.",
                       "A real sentence with enough words in it[1].", article])
    text, reason, *_ = clean_c4(noisy)
    assert reason is None
    assert "Share this" not in text and "JavaScript" not in text and "cookies" not in text
    assert "A real sentence with enough words in it." in text          # citation marker removed


def test_paper_defaults_not_datatrove_swap():
    four_words = "\n".join(["This line has four." for _ in range(10)])
    assert clean_c4(four_words)[1] == Reason.TOO_FEW_SENTENCES       # lines of < 5 words are removed
    two_sentences = "This is a first sentence here. And here is a second one."
    assert clean_c4(two_sentences)[1] == Reason.TOO_FEW_SENTENCES
    assert clean_c4(two_sentences + " A third makes three.")[1] is None
    assert C4Config().min_words_per_line == 5 and C4Config().min_sentences == 3


def test_empty():
    assert clean_c4("")[1] == Reason.TOO_FEW_SENTENCES


def test_chinese_lines_count_characters_as_words(chinese):
    for text in chinese:
        cleaned, reason, *_ = clean_c4(text, language="zh")
        assert reason is None and len(cleaned) > 0.5 * len(text)
