"""Domain labels from the URL: news, reference, forum, blog, commerce, code (None when no rule applies).

Rules look at the host's labels and the path's words, first match wins, in the order of `RULES`: a Q&A thread
on a news site is `forum`, a product page on a blog host is `commerce`. What no rule covers is left to the
text classifier (pipeline/mix.py), trained on the documents the rules did label.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

DOMAINS = ("news", "reference", "forum", "blog", "commerce", "code", "other")

_WORDS = re.compile(r"[a-z0-9]+")

# (domain, host words or suffixes, path words): a rule matches on any host word, or any path word
RULES: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = (
    ("code", frozenset({"github", "gitlab", "bitbucket", "stackoverflow", "readthedocs", "pypi", "npmjs",
                        "sourceforge", "developer", "developers", "docs", "dev", "codeproject"}),
     frozenset({"api", "docs", "documentation", "sdk", "github", "tutorial", "code", "programming"})),
    ("forum", frozenset({"forum", "forums", "reddit", "quora", "stackexchange", "answers", "community",
                         "discourse", "boards", "groups", "lists"}),
     frozenset({"forum", "forums", "thread", "threads", "topic", "showthread", "viewtopic", "questions",
                "discussion", "comments", "board"})),
    ("commerce", frozenset({"shop", "store", "amazon", "ebay", "etsy", "aliexpress", "walmart", "shopify"}),
     frozenset({"shop", "store", "product", "products", "cart", "checkout", "buy", "sale", "price", "item",
                "catalog", "dp"})),
    ("reference", frozenset({"wikipedia", "wiktionary", "britannica", "wikihow", "dictionary", "encyclopedia",
                             "edu", "gov", "ac", "scholarpedia", "arxiv", "ncbi", "nih"}),
     frozenset({"wiki", "glossary", "dictionary", "encyclopedia", "definition", "reference", "research",
                "paper", "papers"})),
    ("blog", frozenset({"blogspot", "wordpress", "medium", "tumblr", "substack", "blogger", "livejournal",
                        "typepad", "blog", "blogs"}),
     frozenset({"blog", "blogs", "diary", "journal", "posts"})),
    ("news", frozenset({"news", "times", "post", "herald", "tribune", "guardian", "telegraph", "reuters", "bbc",
                        "cnn", "nytimes", "washingtonpost", "gazette", "journal", "daily", "press", "zeitung",
                        "spiegel", "lemonde", "nbcnews", "foxnews", "apnews", "theatlantic", "independent"}),
     frozenset({"news", "article", "articles", "story", "stories", "politics", "world", "business", "sport",
                "sports", "opinion", "breaking"})),
)


def domain_from_url(url: str) -> str | None:
    """The first rule's domain that the URL's host or path words match, or None."""
    try:
        parts = urlsplit(url.strip().lower())
        host = parts.hostname or ""
    except ValueError:
        return None
    if not host:
        return None
    host_words = set(_WORDS.findall(host))
    path_words = set(_WORDS.findall(parts.path))
    for domain, hosts, paths in RULES:
        if host_words & hosts or path_words & paths:
            return domain
    return None
