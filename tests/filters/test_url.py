import pytest

from filters.url import DomainSet, Reason, UrlConfig, UrlLists, check_url, host_of, normalize_words


@pytest.fixture(scope="module")
def lists(data):
    root = data / "filters/datatrove_url_words"
    read = lambda name: (root / name).read_text(encoding="utf-8").splitlines()
    return UrlLists(banned_words=normalize_words(read("banned_words.txt")),
                    soft_banned_words=normalize_words(read("soft_banned_words.txt")),
                    banned_subwords=normalize_words(read("banned_subwords.txt")),
                    blocked_domains=DomainSet(["blocked.example", "casino-spam.test"]))


@pytest.mark.parametrize("url, reason", [
    ("https://blocked.example/page", Reason.BLOCKED_DOMAIN),
    ("http://www.news.casino-spam.test/a", Reason.BLOCKED_PARENT_DOMAIN),
    ("https://example.org/videos/xxx/index.html", Reason.BANNED_WORD),
    ("https://example.org/anus-asshole/", Reason.SOFT_BANNED_WORDS),
    ("https://www.bestfreesexsite.example.org/", Reason.BANNED_SUBWORD),
    ("https://en.wikipedia.org/wiki/Escopete", None),
    ("https://www.bbc.co.uk/news/world-europe-12345678", None),
    ("", None),
])
def test_each_reason(lists, url, reason):
    assert check_url(url, UrlConfig(), resources=lists) == reason


def test_soft_threshold(lists):
    assert check_url("https://example.org/anus/", UrlConfig(), resources=lists) is None
    assert check_url("https://example.org/anus/", UrlConfig(min_soft_banned_words=1), resources=lists) == \
        Reason.SOFT_BANNED_WORDS


def test_domain_set():
    domains = DomainSet(["a.example", "B.Example.", "", "c.example"])
    assert len(domains) == 3 and "b.example" in domains and "d.example" not in domains
    assert domains.nbytes == 24


def test_host_of():
    assert host_of("HTTPS://Www.Example.ORG:8080/x?y") == "www.example.org"
    assert host_of("hard::prensalibre.com-tendencia.html") == ""
    assert host_of("http://[bad") == ""


def test_sample_crawl_urls_mostly_pass(lists, data):
    import json
    urls = [json.loads(line)["url"] for line in open(data / "warc/sample-crawl/manifest.jsonl")]
    dropped = [u for u in urls if check_url(u, UrlConfig(), resources=lists)]
    assert len(dropped) / len(urls) < 0.01
