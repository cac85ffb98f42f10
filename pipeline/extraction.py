"""Main-text extraction of one page, and the child process that bounds its time. No Beam in here: the child
imports only this module (trafilatura, the charset decoder), so it is ready a fraction of a second after it
starts, in a Beam worker too.

`extract_page` is the plain function (tests and benchmarks use it as the reference); `TimeBoundExtractor` runs
it in a long-lived child process and kills and restarts that child when a page takes longer than `timeout_s`
or crashes it (lxml can segfault on hostile markup). The child evaluates trafilatura's pruning rules with
`pipeline/fastxpath.py` (the same elements selected, ~30 % less CPU per page). The stage around it is
`pipeline/extract.py`.
"""
from __future__ import annotations

import enum
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from html import unescape
from multiprocessing.connection import Connection

import trafilatura

from pipeline import fastxpath
from pipeline.charset import decode_html


@dataclass(frozen=True)
class ExtractConfig:
    timeout_s: float = 15.0           # per page; a normal page takes 10-100 ms
    favor_precision: bool = True      # FineWeb's setting: less boilerplate, a little less recall
    include_comments: bool = False    # FineWeb's setting
    include_tables: bool = True       # trafilatura's default
    # trafilatura's `deduplicate` is left off: its LRU cache depends on the order pages reach a worker, which
    # would make the output depend on how the runner splits work. Dedup is a stage of its own.

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


class ExtractError(str, enum.Enum):
    TIMEOUT = "extract_timeout"
    CRASH = "extract_crash"           # the child died (segfault, out of memory)
    FAILED = "extract_failed"         # trafilatura raised


@dataclass(frozen=True)
class Extraction:
    text: str
    title: str
    date: str
    charset: str           # the codec the HTML was decoded with
    language_hint: str     # <html lang>, else the first Content-Language, else ''


_HTML_LANG = re.compile(r"<html[^>]*?\slang\s*=\s*[\"']?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*)", re.I)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_OG_TITLE = re.compile(r"<meta[^>]+property\s*=\s*[\"']og:title[\"'][^>]*content\s*=\s*[\"']([^\"']*)", re.I)
# Publication date from the markup sites put there for machines (Open Graph, schema.org, Dublin Core, <time>),
# in that order of trust; htmldate's deep search would find more but costs ~15 % of extraction time.
_DATE_KEYS = ("article:published_time", "og:published_time", "datePublished", "DC.date", "dc.date",
              "pubdate", "publish_date", "publish-date", "<time")
_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})")
_SPACES = re.compile(r"\s+")


def html_language(html: str) -> str:
    """The `<html lang>` attribute, lower-cased ('' when absent): a hint for language ID, not a verdict."""
    match = _HTML_LANG.search(html[:8192])
    return match.group(1).lower().replace("_", "-") if match else ""


def page_title(html: str) -> str:
    match = _TITLE.search(html[:65536]) or _OG_TITLE.search(html[:65536])
    return _SPACES.sub(" ", unescape(match.group(1))).strip()[:1000] if match else ""


def page_date(html: str) -> str:
    """The publication date (YYYY-MM-DD) declared in the page's metadata, or ''."""
    for key in _DATE_KEYS:
        at = html.find(key)
        if at != -1:
            match = _ISO_DATE.search(html, at, at + 200)
            if match:
                return match.group(1)
    return ""


def extract_page(body: bytes, content_type: str, url: str | None, cfg: ExtractConfig,
                 content_language: str = "") -> Extraction | None:
    """Decode the payload, then trafilatura's main text, with title and date; None when there is no main text."""
    html, charset, _ = decode_html(body, content_type)
    text = trafilatura.extract(html, url=url, favor_precision=cfg.favor_precision,
                               include_comments=cfg.include_comments, include_tables=cfg.include_tables,
                               deduplicate=False)
    if not text:
        return None
    hint = html_language(html) or content_language.split(",")[0].strip().lower()
    return Extraction(text=text, title=page_title(html), date=page_date(html), charset=charset, language_hint=hint)


def serve(fd: int, cfg_json: str) -> None:
    """The child: pages in on the socket `fd`, `("ok", Extraction | None)` or `("failed", detail)` out."""
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)   # it logs every page it finds empty
    fastxpath.install()
    cfg = ExtractConfig(**json.loads(cfg_json))
    connection = Connection(fd)
    while True:
        try:
            body, content_type, url, content_language = connection.recv()
        except EOFError:
            return
        try:
            connection.send(("ok", extract_page(body, content_type, url, cfg, content_language)))
        except Exception as e:   # trafilatura/lxml raise many types on bad markup; report, keep serving
            connection.send(("failed", f"{type(e).__name__}: {e}"[:200]))


class TimeBoundExtractor:
    """`extract_page` in a child process with a per-page time limit. Use as a context manager or call close().
    Call it on a page, or `submit` a page and take its `result` later, doing other work while the child works.

    The child is `python -m pipeline.extraction` (a plain subprocess, not multiprocessing's spawn, which would
    import the parent's main module, in a Beam worker all of Beam, again), talking over a socket pair."""

    def __init__(self, cfg: ExtractConfig = ExtractConfig()):
        self.cfg = cfg
        self._process: subprocess.Popen | None = None
        self._connection: Connection | None = None
        self._submitted: float | None = None      # when the page the child works on was handed over
        self._send_error: OSError | None = None
        self.restarts = 0

    def start(self) -> None:
        """Start the child if it is not running (it loads while the caller goes on; the first page waits for it)."""
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                self._kill()
            parent, child = socket.socketpair()
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "pipeline.extraction", str(child.fileno()), json.dumps(asdict(self.cfg))],
                    pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, env=env)
            finally:
                child.close()
            self._connection = Connection(parent.detach())

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._connection.close()
        self._process = self._connection = None
        self.restarts += 1

    def __call__(self, body: bytes, content_type: str, url: str | None,
                 content_language: str = "") -> Extraction | None | tuple[ExtractError, str]:
        """`extract_page`'s result, or (ExtractError, detail)."""
        self.submit(body, content_type, url, content_language)
        return self.result()

    def submit(self, body: bytes, content_type: str, url: str | None, content_language: str = "") -> None:
        """Hand one page to the child and return while it works; `result()` takes what it made of it. One page
        at a time: the time limit runs from here."""
        if self._submitted is not None:
            raise RuntimeError("TimeBoundExtractor.submit: the last page's result was not taken")
        self.start()
        self._submitted, self._send_error = time.monotonic(), None
        try:
            self._connection.send((body, content_type, url, content_language))
        except OSError as e:          # the child died since the last page: result() reports it
            self._send_error = e

    def result(self) -> Extraction | None | tuple[ExtractError, str]:
        """What the child made of the page `submit` gave it: `extract_page`'s result, or (ExtractError, detail)."""
        if self._submitted is None:
            raise RuntimeError("TimeBoundExtractor.result: no page was submitted")
        started, self._submitted = self._submitted, None
        try:
            if self._send_error is not None:
                raise self._send_error
            if not self._connection.poll(max(0.0, self.cfg.timeout_s - (time.monotonic() - started))):
                self._kill()
                return ExtractError.TIMEOUT, f"no result after {self.cfg.timeout_s:g} s"
            status, value = self._connection.recv()
        except (EOFError, OSError) as e:
            exitcode = self._process.poll()
            self._kill()
            return ExtractError.CRASH, f"child died ({type(e).__name__}, exit code {exitcode}) " \
                                       f"after {time.monotonic() - started:.1f} s"
        if status == "failed":
            return ExtractError.FAILED, value
        return value

    def reset(self) -> None:
        """Forget a page handed over whose result nobody will take (a Beam bundle that failed): the child, which
        may still be on it, is restarted."""
        if self._submitted is not None:
            self._submitted = None
            self._kill()

    def close(self) -> None:
        if self._process is not None:
            self._connection.close()             # the child reads EOF and exits
            try:
                self._process.wait(2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    # the child: this module is imported again under its own name, so what it sends back unpickles as
    # pipeline.extraction's classes in the parent, not as __main__'s
    from pipeline import extraction
    extraction.serve(int(sys.argv[1]), sys.argv[2])
