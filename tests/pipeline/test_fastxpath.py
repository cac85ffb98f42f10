"""trafilatura's rules evaluated in Python select what libxml2 selects, element for element, and extraction
gives the same text with them as without."""
import gzip
import json

import pytest
from lxml import etree, html

from pipeline import fastxpath
from pipeline.extraction import ExtractConfig, extract_page
from pipeline.warc import Page, read_file

RE = {"re": "http://exslt.org/regular-expressions"}

TREE = """<html><body>
<div id="main" class="post content">a<span class="share-this">s</span></div>
<div class="x" id="y">first class</div><div id="y" class="x">first id</div>
<div class="">empty class</div><div>none</div>
<section role="Navigation" data-component="MostPopularStories"><h1>t</h1><p class="Caption">c</p></section>
<section style="display: none" aria-hidden="true"><p>hidden</p></section>
<ul class="comment-list"><li class="reply-1">r</li></ul><ol id="comments"><li>r</li></ol>
<aside class="infinite-scroll"><p>no heading</p></aside>
<p class="bottom link">footer</p><span class="Hidden hide">h</span>
</body></html>"""

EXPRESSIONS = [
    ".//*[self::div or self::section][re:test(@id|@class, '^x$')]",
    ".//*[self::div or self::section][re:test(@class|@id, '^y')]",
    ".//div[@class='']",
    ".//div[@class]",
    ".//*[starts-with(@id|@class, 'reply-')]",
    ".//*[contains(translate(@role, 'N', 'n'), 'nav')]",
    ".//*[contains(translate(@class, 'CP','cp'), 'caption')]",
    ".//*[contains(@data-component, 'MostPopularStories') or @aria-hidden='true']",
    ".//*[contains(@style, 'display:none') or contains(@style, 'display: none')]",
    ".//*[self::div or self::list or self::ul or self::ol][re:test(@id, '^comment') or re:test(@class, 'comment')]"
    "[not(self::ol or self::ul) or re:test(@id, '^comment')]",
    ".//*[self::section or self::aside][re:test(@class, 'infinite-?scroll') or @role][not(.//h1)]",
    ".//*[re:test(@class, 'HIDDEN', 'i') or re:test(@class, ' hide')]",
    ".//*[re:test(@id|@class, '(^|\\s)bottom|bottom(\\s|$)') or re:test(@id|@class, '(^|\\s)link(\\s|$)')]",
    ".//*[self::p and (@class or @id)]",
    ".//header",
]


@pytest.mark.parametrize("path", EXPRESSIONS)
def test_selects_what_libxml2_selects(path):
    tree = html.fromstring(TREE)
    original = etree.XPath(path, namespaces=RE)
    expected = original(tree)
    assert fastxpath.CompiledXPath(original)(tree) == expected
    # and from a sub-tree: .// is the descendants of the context element, not the element itself
    body = tree.find("body")
    assert fastxpath.CompiledXPath(original)(body) == original(body)


def test_the_first_attribute_in_the_source_is_the_string_of_a_union():
    tree = html.fromstring(TREE)
    rule = fastxpath.CompiledXPath(etree.XPath(".//div[re:test(@id|@class, '^x$')]", namespaces=RE))
    assert [e.text for e in rule(tree)] == ["first class"]


@pytest.mark.parametrize("path", ["(.//article)[1]", ".//*[@class='post'][1]", ".//cite|.//quote",
                                  "//div[@class='tags']", ".//*[rel='me']", ".//p[string-length(@class) > 3]",
                                  ".//*[re:replace(@class, 'a', 'g', 'b')]"])
def test_what_it_cannot_evaluate_is_left_to_lxml(path):
    with pytest.raises(fastxpath.Unsupported):
        fastxpath.CompiledXPath(etree.XPath(path, namespaces=RE))


def test_install_swaps_in_place_and_uninstall_restores():
    from trafilatura import main_extractor, xpaths
    before = list(xpaths.OVERALL_DISCARD_XPATH)
    try:
        assert fastxpath.install() >= 10
        assert main_extractor.OVERALL_DISCARD_XPATH is xpaths.OVERALL_DISCARD_XPATH   # the same list, changed in place
        assert all(isinstance(r, fastxpath.CompiledXPath) for r in xpaths.OVERALL_DISCARD_XPATH)
        assert all(isinstance(r, etree.XPath) for r in xpaths.BODY_XPATH)                # positions: lxml keeps them
        assert fastxpath.install() == fastxpath.install()                                # idempotent
    finally:
        fastxpath.uninstall()
    assert xpaths.OVERALL_DISCARD_XPATH == before and all(a is b for a, b in zip(xpaths.OVERALL_DISCARD_XPATH, before))


def test_a_rule_it_cannot_compile_stays_with_lxml():
    from trafilatura import xpaths
    broken = etree.XPath(".//div[re:test(@class, '(')]", namespaces=RE)       # lxml compiles the regex only when used
    xpaths.TEASER_DISCARD_XPATH.append(broken)
    try:
        fastxpath.install()
        assert xpaths.TEASER_DISCARD_XPATH[-1] is broken
        assert isinstance(xpaths.TEASER_DISCARD_XPATH[0], fastxpath.CompiledXPath)
    finally:
        fastxpath.uninstall()
        xpaths.TEASER_DISCARD_XPATH.remove(broken)


def test_real_pages_select_the_same_elements_and_extract_the_same_text(data):
    """100 pages of trafilatura's evaluation set and 60 of the sample crawl: every rule call checked against
    libxml2 (check=True raises on a difference), and the extracted text equal to extraction without them."""
    root = data / "extraction/trafilatura-eval"
    rows = [json.loads(line) for line in open(root / "ground_truth.jsonl")][:100]
    pages = [(gzip.decompress((root / r["html_gz"]).read_bytes()), "", r["url"]) for r in rows]
    warc = read_file(str(data / "warc/sample-crawl/sample-crawl-00001.warc.gz"))
    pages += [(p.body, p.content_type, p.url) for p in warc if isinstance(p, Page)][:60]
    cfg = ExtractConfig()
    plain = [extract_page(body, ct, url, cfg) for body, ct, url in pages]
    del fastxpath.mismatches[:]
    try:
        fastxpath.install(check=True)
        fast = [extract_page(body, ct, url, cfg) for body, ct, url in pages]
    finally:
        fastxpath.uninstall()
    assert fastxpath.mismatches == []
    assert sum(p is not None for p in plain) > 120
    assert fast == plain
