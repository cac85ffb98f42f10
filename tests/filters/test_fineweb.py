import pytest


def list_of_long_words(article):
    """Lines of three long words each: long enough not to be 'short', but a list all the same."""
    long_words = list(dict.fromkeys(w.strip(",.;:") for w in article.split() if len(w) >= 11))
    return "\n".join(f"{a} {b} {c}." for a, b, c in zip(long_words[::3], long_words[1::3], long_words[2::3]))

from filters.fineweb import Reason, check_fineweb


@pytest.mark.parametrize("reason, make", [
    (Reason.EMPTY, lambda a: "  \n \n"),
    (Reason.FEW_PUNCTUATED_LINES, lambda a: "\n".join(w for w in a.replace(".", "").split()[:200])),
    (Reason.SHORT_LINES, lambda a: "\n".join(w + "." for w in a.split()[:300])),
    (Reason.DUPLICATE_LINES, lambda a: a + "\n" + "\n".join([a.split("\n")[0]] * 2)),
    (Reason.LIST_LIKE, lambda a: list_of_long_words(a)),
])
def test_each_reason(article, reason, make):
    assert check_fineweb(make(article)) == reason


def test_passing_article(article):
    assert check_fineweb(article) is None


def test_real_articles_mostly_pass(articles):
    assert sum(check_fineweb(a) is None for a in articles) / len(articles) > 0.8
