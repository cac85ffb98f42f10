"""What the checks read, loaded as workers load it, and the checks that need it inside Beam (ApplyFilter)."""
import io
import json
import os
import subprocess
import sys
import tarfile

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters import language, pii, url
from filters.language import LanguageConfig
from filters.pii import PiiConfig
from filters.url import Reason as UrlReason, UrlConfig, check_url
from pipeline import doc as items
from pipeline.resources import BadWords, LanguageModel, StopWords, UrlLists, blocklist_domains, resolve
from pipeline.stage import ApplyFilter
from tests.conftest import REPO


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
    stop_words = StopWords()()
    assert "und" in stop_words["de"] and stop_words["en"] == frozenset(
        {"the", "be", "to", "of", "and", "that", "have", "with"})
    bad = BadWords(__import__("filters.nsfw").nsfw.NsfwConfig())()
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
    cfg = UrlConfig(blocklists=(str(archive),))
    lists = UrlLists(cfg)()
    assert check_url("http://0513mt.com/index.php", cfg, resources=lists) == UrlReason.BLOCKED_DOMAIN
    assert check_url("http://www.041696.com/x", cfg, resources=lists) == UrlReason.BLOCKED_PARENT_DOMAIN
    assert check_url("http://01spb.ru/company/", cfg, resources=lists) is None


def test_url_filter_drops_before_extraction(data):
    with BeamTestPipeline() as p:
        docs = p | beam.Create([live_doc("", url="https://example.org/videos/xxx/index.html"),
                                live_doc("", url="https://en.wikipedia.org/wiki/Escopete")])
        out = docs | ApplyFilter("url", url.check_url, UrlConfig(), field="url", load=UrlLists(UrlConfig()))
        assert_that(out | beam.Map(lambda d: (d["kind"], d.get("reason"))),
                    equal_to([(items.DROPPED, "url_banned_word"), (items.DOC, None)]))


def test_identify_language(article, data):
    german = next((data / "extraction/htmltotext-benchmark-multilingual/de/text").glob("*.txt")).read_text()
    cfg = LanguageConfig(languages=("en",))
    with BeamTestPipeline() as p:
        docs = p | beam.Create([live_doc(article), live_doc(german), live_doc("12345 678 !!!")])
        out = docs | ApplyFilter("language", language.identify_language, cfg, load=LanguageModel(cfg))
        assert_that(out | beam.Map(lambda d: (d["kind"], d.get("language"), d.get("reason"))),
                    equal_to([(items.DOC, "en", None), (items.DROPPED, None, "language_not_wanted"),
                              (items.DROPPED, None, "language_low_score")]))


def test_redact_pii(dolma_docs):
    text = next(d["text"] for d in dolma_docs if "@" in d["text"])
    with BeamTestPipeline() as p:
        out = p | beam.Create([live_doc(text)]) | ApplyFilter("pii", pii.redact_pii, PiiConfig())
        assert_that(out | beam.Map(lambda d: (d["pii_email"] >= 1, sorted(k for k in d if k.startswith("pii_")),
                                              "<EMAIL>" in d["text"], d["trace"][-1][0])),
                    equal_to([(True, ["pii_card", "pii_email", "pii_ip", "pii_phone"], True, "pii")]))


def test_missing_resources_fail_before_the_job_runs(tmp_path):
    cfg = LanguageConfig(model_path="/nonexistent/lid.bin")
    with pytest.raises(FileNotFoundError, match="language ID model not found: /nonexistent/lid.bin"):
        LanguageModel(cfg).check()
    with pytest.raises(FileNotFoundError, match="language ID model not found"):
        LanguageModel(cfg)()          # loaded without a check first: the same message, not a crash
    p = beam.Pipeline()
    with pytest.raises(FileNotFoundError, match="url.banned_words list not found"):
        _ = p | beam.Create([live_doc("")]) | ApplyFilter(
            "url", url.check_url, UrlConfig(), field="url",
            load=UrlLists(UrlConfig(banned_words=str(tmp_path / "none.txt"))))


def test_the_language_model_loads_without_a_check_first():
    model = LanguageModel(LanguageConfig())()
    assert language.predict_language(model, "The cat sat on the mat and looked out of the window.")[0] == "en"


TRAIN_AND_HASH = """
import hashlib, sys
import numpy as np
from pipeline.resources import train_fasttext
model = train_fasttext(sys.argv[1], wordNgrams=2, epoch=5, lr=0.2, dim=20, bucket=20000, minCount=1, thread=1,
                       seed=0, verbose=0)
weights = model.get_input_matrix()
print(hashlib.sha256(weights.tobytes()).hexdigest(), float(np.abs(weights).max()))
"""


def test_fasttext_trains_the_same_model_whatever_memory_the_allocator_hands_it(data, tmp_path):
    """fastText leaves most of its weights as the allocator hands them over; glibc's MALLOC_PERTURB_ fills what it
    hands over with other bytes, as reused memory would be (1 made CI's "Encountered NaN"): the model must not
    change."""
    lines = tmp_path / "train.txt"
    with open(data / "text/dclm-human-quality-labels/majority_data.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    lines.write_text("".join(f"__label__{row['label']} {' '.join(row['text'].split())}\n" for row in rows[:300]),
                     encoding="utf-8")
    seen = {}
    for perturb in ("", "1", "42"):
        done = subprocess.run([sys.executable, "-c", TRAIN_AND_HASH, str(lines)], cwd=REPO, capture_output=True,
                              text=True, env={**os.environ, "MALLOC_PERTURB_": perturb})
        assert done.returncode == 0, f"MALLOC_PERTURB_={perturb}: {done.stderr[-1500:]}"
        seen[perturb] = done.stdout.split()
    assert seen["1"] == seen["42"] == seen[""]
    assert 0 < float(seen[""][1]) < 10          # trained weights, not memory filled with 0xd5 bytes (-2.9e13)
