"""The HTML pages of WARC files, read once with our reader, for benchmarks that time extraction on them."""
from __future__ import annotations

import glob
import os

from pipeline.shared_data import shared_data_dir
from pipeline.warc import Page, ReadConfig, plan_chunks, read_chunk


def sample_crawl_paths() -> list[str]:
    return sorted(glob.glob(str(shared_data_dir() / "warc/sample-crawl/*.warc.gz")))


def read_pages(paths: list[str]) -> list[Page]:
    """Every HTML page (HTTP 200 response) of `paths`, in file order."""
    pages = []
    for path in paths:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        for chunk in plan_chunks(path, os.path.getsize(path), head, 1 << 40):
            pages.extend(o for o in read_chunk(chunk, ReadConfig()) if isinstance(o, Page))
    return pages
