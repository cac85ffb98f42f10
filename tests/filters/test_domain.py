import pytest

from filters.domain import DOMAINS, domain_from_url


@pytest.mark.parametrize("url, domain", [
    ("https://www.nytimes.com/2020/01/01/world/europe/x.html", "news"),
    ("https://www.bbc.co.uk/sport/football/123", "news"),
    ("https://en.wikipedia.org/wiki/New_Zealand", "reference"),
    ("https://www.cs.stanford.edu/people/x/paper.html", "reference"),
    ("https://unix.stackexchange.com/questions/1/how", "forum"),
    ("http://lists.debian.org/debian-consultants/2001/12/msg00000.html", "forum"),
    ("https://someone.blogspot.com/2013/07/space-magic.html", "blog"),
    ("http://blogs.wsj.com/brussels/2010/08/30/x/", "blog"),
    ("https://www.amazon.com/dp/B000123", "commerce"),
    ("https://shop.example.de/products/red-shoes", "commerce"),
    ("https://github.com/apache/beam/issues/1", "code"),
    ("https://docs.python.org/3/library/re.html", "code"),
    ("https://www.mdavis.xyz/supermarket/", None),
    ("hard::womencantalksports.com.top10.html", None),
    ("", None),
])
def test_url_rules(url, domain):
    assert domain_from_url(url) == domain
    assert domain is None or domain in DOMAINS
