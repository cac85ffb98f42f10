import gzip
import json
import logging
from pathlib import Path

import pytest

from pipeline.shared_data import shared_data_dir

logging.getLogger("trafilatura").setLevel(logging.CRITICAL)


@pytest.fixture(scope="session")
def data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def sample_warcs(data) -> list[str]:
    return sorted(str(p) for p in (data / "warc" / "sample-crawl").glob("*.warc.gz"))


@pytest.fixture(scope="session")
def articles(data) -> list[str]:
    """Clean English article bodies (scrapinghub benchmark gold), longest first."""
    truth = json.loads((data / "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json").read_text())
    return sorted((v["articleBody"] for v in truth.values()), key=len, reverse=True)


@pytest.fixture(scope="session")
def article(articles) -> str:
    """A real news article of a few thousand characters that passes every heuristic filter."""
    from filters.c4 import clean_c4
    from filters.fineweb import check_fineweb
    from filters.gopher import check_gopher_quality, check_gopher_repetition
    for text in articles[20:]:
        if 3000 < len(text) < 8000 and check_gopher_repetition(text) is None and check_gopher_quality(text) is None \
                and clean_c4(text)[1] is None and check_fineweb(text) is None:
            return text
    raise AssertionError("no clean article found")


@pytest.fixture(scope="session")
def chinese(data) -> list[str]:
    root = data / "extraction/htmltotext-benchmark-multilingual/zh/text"
    return [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.txt"))]


@pytest.fixture(scope="session")
def dolma_docs(data) -> list[dict]:
    with gzip.open(data / "text/dolma-cc-docs/cc-main-2023-06_documents-000.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, data):
    """`refinery curate` of the whole sample crawl with the default config (once per test session, ~60 s)."""
    from pipeline.app.cli import main
    output = tmp_path_factory.mktemp("sample") / "out"
    code = main(["curate", "--input", str(data / "warc/sample-crawl/*.warc.gz"), "--output", str(output),
                 "--no-progress"])
    return code, output


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory):
    """(path, ClassifierResult): the quality classifier trained on the default positives against the whole-page text
    of one sample-crawl WARC (~20 s)."""
    from pipeline import quality
    path = str(tmp_path_factory.mktemp("quality") / "quality.bin")
    from filters.quality import DEFAULT_POSITIVES
    result = quality.train_classifier(list(DEFAULT_POSITIVES), ["warc/sample-crawl/sample-crawl-00000.warc.gz"], path,
                           log=lambda *_: None)
    return path, result
