"""The filters inside Beam: resource loading, language ID and PII redaction as composite transforms."""
import io
import tarfile

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters.language import LanguageConfig
from filters.pii import PiiConfig
from filters.url import Reason as UrlReason, UrlConfig
from pipeline import doc as items
from pipeline.filtering import (IdentifyLanguage, RedactPii, blocklist_domains, load_bad_words, load_stop_words,
                                load_url_lists, resolve, resolved_url_config, url_filter)


def live_doc(text, url="https://example.org/", language=None):
    doc = {"kind": items.DOC, "id": "x", "url": url, "warc_file": "f", "warc_record_id": "x", "warc_offset": 0,
           "crawl_date": "", "text": text, "trace": []}
    if language:
        doc["language"] = language
    return doc


def test_resolve_reads_relative_paths_from_shared_data(data):
    assert resolve("filters/ldnoobw") == str(data / "filters/ldnoobw")
    assert resolve("/abs/path") == "/abs/path" and resolve("gs://b/x") == "gs://b/x" and resolve("") == ""


def test_word_lists_load(data):
    stop_words = load_stop_words(resolve("filters/stopwords/stopwords-iso.json"))
    assert "und" in stop_words["de"] and stop_words["en"] == frozenset(
        {"the", "be", "to", "of", "and", "that", "have", "with"})
    bad = load_bad_words(resolve("filters/ldnoobw"))
    assert {"en", "de", "zh", "ja"} <= set(bad) and bad["zh"].unspaced and not bad["en"].unspaced


def test_ut1_blocklist_in_a_tarball(tmp_path):
    """UT1 layout: <category>/domains inside a tar.gz; the hosts are real spam hosts of the 2020 CC sample."""
    archive = tmp_path / "blacklists.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for category, domains in (("adult", "037426.cn\n0513mt.com\n"), ("gambling", "041696.com\n")):
            data = domains.encode()
            info = tarfile.TarInfo(f"{category}/domains")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert sorted(blocklist_domains(str(archive))) == ["037426.cn", "041696.com", "0513mt.com"]
    lists = load_url_lists(resolved_url_config(UrlConfig(blocklists=(str(archive),))))
    from filters.url import check_url
    assert check_url("http://0513mt.com/index.php", lists) == UrlReason.BLOCKED_DOMAIN
    assert check_url("http://www.041696.com/x", lists) == UrlReason.BLOCKED_PARENT_DOMAIN
    assert check_url("http://01spb.ru/company/", lists) is None


def test_url_filter_transform_drops_before_extraction(data):
    with BeamTestPipeline() as p:
        docs = p | beam.Create([live_doc("", url="https://example.org/videos/xxx/index.html"),
                                live_doc("", url="https://en.wikipedia.org/wiki/Escopete")])
        out = docs | url_filter(UrlConfig(), keep_rejected=False)
        assert_that(out | beam.Map(lambda d: (d["kind"], d.get("reason"))),
                    equal_to([(items.DROPPED, "url_banned_word"), (items.DOC, None)]))


def test_identify_language(article, data):
    german = next((data / "extraction/htmltotext-benchmark-multilingual/de/text").glob("*.txt")).read_text()
    with BeamTestPipeline() as p:
        docs = p | beam.Create([live_doc(article), live_doc(german), live_doc("12345 678 !!!")])
        out = docs | IdentifyLanguage(LanguageConfig(languages=("en",)))
        assert_that(out | beam.Map(lambda d: (d["kind"], d.get("language"), d.get("reason"))),
                    equal_to([(items.DOC, "en", None), (items.DROPPED, None, "language_not_wanted"),
                              (items.DROPPED, None, "language_low_score")]))


def test_redact_pii(dolma_docs):
    text = next(d["text"] for d in dolma_docs if "@" in d["text"])
    with BeamTestPipeline() as p:
        out = p | beam.Create([live_doc(text)]) | RedactPii(PiiConfig())
        assert_that(out | beam.Map(lambda d: (d["pii_email"] >= 1, "<EMAIL>" in d["text"], d["trace"][-1][0])),
                    equal_to([(True, True, "pii")]))


def test_missing_language_model_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="language ID model not found: /nonexistent/lid.bin"):
        IdentifyLanguage(LanguageConfig(model_path="/nonexistent/lid.bin"))
