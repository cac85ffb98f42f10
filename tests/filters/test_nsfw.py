import pytest

from filters.nsfw import BadWords, NsfwConfig, Reason, check_nsfw


@pytest.fixture(scope="module")
def lists(data):
    root = data / "filters/ldnoobw"
    return {code: BadWords.from_lines((root / code).read_text(encoding="utf-8").splitlines(), unspaced=code == "zh")
            for code in ("en", "de", "zh")}


def single_words(bad):
    return sorted(e for e in bad.entries if " " not in e and e.isalpha())


def test_article_passes_and_empty(lists, article):
    assert check_nsfw(article, language="en", resources=lists) is None
    assert check_nsfw("", language="en", resources=lists) is None


def test_dense_listed_words_are_dropped(lists, article):
    words = single_words(lists["en"])[:10]
    spam = " ".join(article.split()[:200] + words)
    assert check_nsfw(spam, language="en", resources=lists) == Reason.BAD_WORDS


def test_one_word_in_a_long_page_is_not_enough(lists, article):
    """C4 dropped a page for one listed word; a medical or news page may mention one."""
    word = single_words(lists["en"])[0]
    assert check_nsfw(article + " " + word, language="en", resources=lists) is None


def test_phrases_and_unspaced_languages(lists):
    phrase = next(e for e in lists["en"].entries if len(e.split()) == 2)
    text = ("some ordinary words here " + phrase.replace(" ", "\n ") + " ") * 3     # any spacing matches
    assert check_nsfw(text, language="en", resources=lists) == Reason.BAD_WORDS
    zh_entry = lists["zh"].entries[0]
    assert check_nsfw(("今天天气很好" + zh_entry) * 5, language="zh", resources=lists) == Reason.BAD_WORDS


def test_threshold_config(lists, article):
    words = single_words(lists["en"])[:3]
    text = " ".join(article.split()[:100] + words)
    assert check_nsfw(text, NsfwConfig(min_bad_words=4), language="en", resources=lists) is None
    assert check_nsfw(text, NsfwConfig(min_bad_words=3), language="en", resources=lists) == Reason.BAD_WORDS
