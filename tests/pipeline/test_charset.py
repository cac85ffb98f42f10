"""Charset decisions, on labels as servers send them and on real pages."""
import pytest

from pipeline.charset import codec_for, decode_html
from pipeline.warc import Page, read_file


@pytest.mark.parametrize("label, codec", [
    ("utf-8", "utf-8"), ("UTF8", "utf-8"), ("iso-8859-1", "cp1252"), ("ISO8859-1", "cp1252"),
    ("us-ascii", "cp1252"), ("window-1252", "cp1252"), ("windows-1251", "cp1251"), ("gb2312", "gb18030"),
    ("euc_kr", "cp949"), ("Shift_JIS", "cp932"), ("big5", "big5hkscs"), ("EUC-JP", "euc_jp"),
    ("0", None), ("x-user-defined-nonsense", None), ("", None),
])
def test_labels_map_as_browsers_read_them(label, codec):
    assert codec_for(label) == codec


@pytest.mark.parametrize("body, content_type, text, source", [
    ("<p>Grüße</p>".encode("utf-8"), "text/html; charset=UTF-8", "<p>Grüße</p>", "http"),
    ("<p>Grüße</p>".encode("cp1252"), "text/html; charset=iso-8859-1", "<p>Grüße</p>", "http"),
    # declared UTF-8 but is not: the header is not trusted blindly
    ('<meta charset="windows-1252"><p>café</p>'.encode("cp1252"), "text/html; charset=utf-8",
     '<meta charset="windows-1252"><p>café</p>', "meta"),
    ("<p>naïve</p>".encode("utf-8"), "text/html", "<p>naïve</p>", "utf8"),
    ("\ufeff<p>x</p>".encode("utf-8"), "text/html; charset=latin1", "<p>x</p>", "bom"),
    ("<p>plain</p>".encode(), "text/html; charset=0", "<p>plain</p>", "utf8"),   # bogus label
    (b"", "text/html", "", "utf8"),
])
def test_decision_order(body, content_type, text, source):
    decoded, _, used = decode_html(body, content_type)
    assert (decoded, used) == (text, source)


def pages(path):
    return [o for o in read_file(path) if isinstance(o, Page)]


def test_real_cp1251_page_decodes_to_cyrillic(data):
    page = next(p for p in pages(str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz"))
                if "01spb.ru" in p.url)
    text, codec, _ = decode_html(page.body, page.content_type)
    assert codec == "cp1251"
    assert sum("а" <= ch <= "я" for ch in text.lower()) > 200 and "\ufffd" not in text


def test_real_euc_jp_pages_decode_to_japanese(data):
    for page in pages(str(data / "warc/other-crawls/clueweb09-ja_resiliparse-quirk.warc.gz")):
        text, codec, _ = decode_html(page.body, page.content_type)
        assert codec == "euc_jp"
        assert sum("\u3040" <= ch <= "\u30ff" for ch in text) > 50    # hiragana and katakana


def test_every_sample_crawl_page_decodes_without_replacement_characters_mostly(sample_warcs):
    """Replacement characters may only come from pages that really hold undecodable bytes: under 1 %."""
    bad = total = 0
    for page in pages(sample_warcs[2]):
        text, _, _ = decode_html(page.body, page.content_type)
        total += 1
        bad += "\ufffd" in text
    assert total == 690 and bad / total < 0.01
