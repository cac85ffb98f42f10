"""Common Crawl by name, resolved offline against a paths file laid out as data.commoncrawl.org lays it out."""
import gzip

import pytest

from pipeline.commoncrawl import paths_url, resolve_crawl

PATHS = ["crawl-data/CC-MAIN-2024-22/segments/1715971057216.39/warc/"
         f"CC-MAIN-20240517233122-20240518023122-{i:05d}.warc.gz" for i in range(5)]


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "crawl-data" / "CC-MAIN-2024-22"
    folder.mkdir(parents=True)
    (folder / "warc.paths.gz").write_bytes(gzip.compress("\n".join(PATHS).encode() + b"\n"))
    return tmp_path


def test_default_base_is_the_public_https_endpoint():
    assert paths_url("CC-MAIN-2024-22") == "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/warc.paths.gz"


def test_resolves_first_n_files_under_the_same_base(mirror):
    base = f"file://{mirror}/"
    urls = resolve_crawl("CC-MAIN-2024-22", 2, base)
    assert urls == [f"file://{mirror}/{p}" for p in PATHS[:2]]


def test_local_path_base(mirror):
    assert resolve_crawl("CC-MAIN-2024-22", 10, str(mirror)) == [f"{mirror}/{p}" for p in PATHS]


@pytest.mark.parametrize("crawl, n", [("CC-MAIN-24-22", 1), ("latest", 1), ("CC-MAIN-2024-22", 0)])
def test_bad_arguments(crawl, n, mirror):
    with pytest.raises(ValueError):
        resolve_crawl(crawl, n, str(mirror))
