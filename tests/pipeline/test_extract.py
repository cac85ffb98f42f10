"""Extraction on real pages with known main text, and the time bound around it."""
import gzip
import json
import threading
import time

import pytest

from pipeline import doc as items
from pipeline.extract import ExtractTextDoFn
from pipeline.extraction import (ExtractConfig, ExtractError, Extraction, TimeBoundExtractor, extract_page,
                              html_language, page_date, page_title)


@pytest.fixture(scope="module")
def labelled(data):
    """Pages of trafilatura's evaluation set with snippets that must (not) be in the main text."""
    root = data / "extraction/trafilatura-eval"
    rows = [json.loads(line) for line in open(root / "ground_truth.jsonl")][:40]
    return [(gzip.decompress((root / r["html_gz"]).read_bytes()), r) for r in rows]


def test_main_text_keeps_content_and_drops_boilerplate(labelled):
    cfg = ExtractConfig()
    found = missing = leaked = checked = 0
    for html, row in labelled:
        result = extract_page(html, "text/html", row["url"], cfg)
        text = result.text if result else ""
        found += sum(s in text for s in row["with"])
        missing += sum(s not in text for s in row["with"])
        leaked += sum(s in text for s in row["without"])
        checked += len(row["without"])
    # favor_precision trades a little recall; most wanted snippets are there and few unwanted ones
    assert found / (found + missing) > 0.8
    assert leaked / checked < 0.2


def test_extraction_fields(labelled):
    html, row = labelled[0]
    result = extract_page(html, "text/html", row["url"], ExtractConfig())
    assert isinstance(result, Extraction)
    assert result.title and result.charset == "utf-8"


def test_no_main_text_is_none():
    assert extract_page(b"<html><head><title>t</title></head><body></body></html>", "", None, ExtractConfig()) is None
    assert extract_page(b"", "text/html", None, ExtractConfig()) is None


@pytest.mark.parametrize("html, lang", [
    ('<html lang="de-AT"><body>', "de-at"), ("<HTML LANG=en_US>", "en-us"), ("<html><body>", ""),
    ('<html xml:lang="fr" lang="fr">', "fr"),
])
def test_html_language(html, lang):
    assert html_language(html) == lang


@pytest.mark.parametrize("html, date", [
    ('<meta property="article:published_time" content="2021-03-04T10:00:00Z">', "2021-03-04"),
    ('<script type="application/ld+json">{"datePublished": "2019-12-31"}</script>', "2019-12-31"),
    ('<time datetime="2020-01-02">2 Jan</time>', "2020-01-02"),
    ("<p>no date here 2020-01-02 in running text</p>", ""),
])
def test_page_date(html, date):
    assert page_date(html) == date


def test_page_title_unescapes():
    assert page_title("<head><title>\n Fish &amp; Chips \n</title>") == "Fish & Chips"


def test_time_bound_kills_and_recovers(labelled):
    html, row = max(labelled, key=lambda pair: len(pair[0]))
    with TimeBoundExtractor(ExtractConfig(timeout_s=0.001)) as slow:
        reason, detail = slow(html, "text/html", row["url"])
        assert reason == ExtractError.TIMEOUT and "0.001" in detail
    with TimeBoundExtractor(ExtractConfig()) as extractor:
        extractor(html, "text/html", row["url"])
        extractor.cfg = ExtractConfig(timeout_s=0.001)
        assert extractor(html, "text/html", row["url"])[0] == ExtractError.TIMEOUT
        extractor.cfg = ExtractConfig()
        result = extractor(html, "text/html", row["url"])            # a fresh child after the kill
        assert result == extract_page(html, "text/html", row["url"], ExtractConfig())
        assert extractor.restarts == 1


def test_child_crash_is_reported_and_survived(labelled):
    html, row = max(labelled, key=lambda pair: len(pair[0]))
    with TimeBoundExtractor(ExtractConfig()) as extractor:
        extractor(b"<html><body><p>warm up</p></body></html>", "text/html", None)
        # kill the child while it works on a page, as a segfault in lxml would
        threading.Timer(0.02, extractor._process.kill).start()
        reason, detail = extractor(html * 20, "text/html", row["url"])
        assert reason == ExtractError.CRASH and "died" in detail
        assert extractor(html, "text/html", row["url"]) is not None


def test_submit_then_result_overlaps_and_keeps_the_time_limit(labelled):
    html, row = max(labelled, key=lambda pair: len(pair[0]))
    with TimeBoundExtractor(ExtractConfig()) as extractor:
        extractor.submit(html, "text/html", row["url"])
        with pytest.raises(RuntimeError, match="not taken"):
            extractor.submit(html, "text/html", row["url"])
        assert extractor.result() == extract_page(html, "text/html", row["url"], ExtractConfig())
        with pytest.raises(RuntimeError, match="no page"):
            extractor.result()
        extractor.cfg = ExtractConfig(timeout_s=0.001)
        extractor.submit(html * 20, "text/html", row["url"])
        time.sleep(0.05)                                   # the limit runs from the hand-over, not from result()
        assert extractor.result()[0] == ExtractError.TIMEOUT and extractor.restarts == 1
        extractor.cfg = ExtractConfig()
        extractor.submit(html, "text/html", row["url"])
        extractor.reset()                                  # a page nobody will take: the child is restarted
        assert extractor.restarts == 2
        assert extractor(html, "text/html", row["url"]) is not None


def test_the_stage_hands_pages_over_and_keeps_the_order_of_items(labelled):
    """ExtractTextDoFn as a worker runs it: each page's result is taken when the next item comes (or at the end
    of the bundle), and items leave in the order they came, each with extract_page's result."""
    docs = [{"kind": items.DOC, "html": html, "content_type": "text/html", "content_language": "",
             "url": row["url"], "warc_file": "f", "warc_offset": i, "trace": []} for i, (html, row) in
            enumerate(labelled[:12])]
    docs[3]["html"] = b""                                  # no main text: dropped
    stream = docs[:5] + [{"kind": items.TALLY, "warc_file": "f", "chunk": 0}] + docs[5:]
    expected = [extract_page(d["html"], "text/html", d["url"], ExtractConfig()) if d["kind"] == items.DOC else d
                for d in stream]
    fn = ExtractTextDoFn(ExtractConfig(), keep_rejected=False)
    fn.setup()
    try:
        fn.start_bundle()
        out = [item for element in [dict(d) for d in stream] for item in fn.process(element)]
        assert len(out) == len(stream) - 1                 # the last page is still with the child
        out += [value.value for value in fn.finish_bundle()]
    finally:
        fn.teardown()
    assert [(o["kind"], o.get("warc_offset")) for o in out] == \
           [(items.DROPPED if e is None else items.DOC if isinstance(e, Extraction) else e["kind"],
             stream[i].get("warc_offset")) for i, e in enumerate(expected)]
    for o, e in zip(out, expected):
        if isinstance(e, Extraction):
            assert (o["text"], o["title"], o["date"]) == (e.text, e.title, e.date)
