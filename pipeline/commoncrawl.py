"""Common Crawl by name: `CC-MAIN-2024-22` → the HTTPS URLs of its WARC files.

Each crawl publishes `crawl-data/<crawl>/warc.paths.gz`, one relative path per WARC file. We read it from
`base` (https://data.commoncrawl.org/ by default; `s3://commoncrawl/` from inside AWS) and join the first N
paths to the same base.
"""
from __future__ import annotations

import gzip
import io
import re
import urllib.request

from apache_beam.io.filesystems import FileSystems

from pipeline import remote

CC_BASE = "https://data.commoncrawl.org/"
_CRAWL_NAME = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")


def paths_url(crawl: str, base: str = CC_BASE) -> str:
    if not _CRAWL_NAME.match(crawl):
        raise ValueError(f"crawl must look like CC-MAIN-2024-22, got {crawl!r}")
    return f"{base.rstrip('/')}/crawl-data/{crawl}/warc.paths.gz"


def _fetch(url: str) -> bytes:
    if url.startswith(("http://", "https://")):
        with remote.HTTPReader(url) as response:           # throttling and broken downloads retried
            return response.read()
    if url.startswith("file://"):
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    with FileSystems.open(url) as fh:   # s3:// or gs:// mirrors; FileSystems un-gzips .gz on its own
        return fh.read()


def resolve_crawl(crawl: str, warc_files: int, base: str = CC_BASE) -> list[str]:
    """The URLs of the first `warc_files` WARC files of `crawl`."""
    if warc_files <= 0:
        raise ValueError(f"warc_files must be > 0, got {warc_files}")
    data = _fetch(paths_url(crawl, base))
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    paths = [line.strip() for line in io.StringIO(data.decode("utf-8")) if line.strip()]
    if not paths:
        raise ValueError(f"{paths_url(crawl, base)} lists no WARC files")
    return [f"{base.rstrip('/')}/{path.lstrip('/')}" for path in paths[:warc_files]]
