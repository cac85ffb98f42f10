"""The HTML pages of WARC files, read once with our reader, for benchmarks that time extraction on them."""
from __future__ import annotations

import glob

from pipeline.shared_data import shared_data_dir
from pipeline.warc import Page, read_file


def sample_crawl_paths() -> list[str]:
    return sorted(glob.glob(str(shared_data_dir() / "warc/sample-crawl/*.warc.gz")))


def read_pages(paths: list[str]) -> list[Page]:
    """Every HTML page (HTTP 200 response) of `paths`, in file order."""
    return [o for path in paths for o in read_file(path) if isinstance(o, Page)]
