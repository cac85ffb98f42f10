"""Main-text extraction with trafilatura, in a child process so one pathological page cannot stall a worker.

`extract_page` is the plain function (used by tests and benchmarks as the reference); `TimeBoundExtractor` runs
it in a long-lived child process and kills and restarts that child when a page takes longer than `timeout_s`
or crashes it (lxml can segfault on hostile markup); `ExtractText` is the stage.
"""
from __future__ import annotations

import enum
import logging
import multiprocessing
import re
import time
from dataclasses import asdict, dataclass
from html import unescape

import apache_beam as beam
import trafilatura

from pipeline.charset import decode_html
from pipeline.stage import DocDoFn, Ledger, Stage


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


class Reason(str, enum.Enum):
    NO_TEXT = "no_main_text"          # trafilatura found nothing it judged to be main text


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


def _child_main(connection, cfg_dict: dict) -> None:
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)   # it logs every page it finds empty
    cfg = ExtractConfig(**cfg_dict)
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
    """`extract_page` in a child process with a per-page time limit. Use as a context manager or call close()."""

    def __init__(self, cfg: ExtractConfig = ExtractConfig()):
        self.cfg = cfg
        self._context = multiprocessing.get_context("spawn")   # fork is unsafe under gRPC threads (Beam workers)
        self._process = None
        self._connection = None
        self.restarts = 0

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_child_main, args=(child, asdict(self.cfg)), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
            self._connection.close()
        self._process = self._connection = None
        self.restarts += 1

    def __call__(self, body: bytes, content_type: str, url: str | None,
                 content_language: str = "") -> Extraction | None | tuple[ExtractError, str]:
        """`extract_page`'s result, or (ExtractError, detail)."""
        if self._process is None or not self._process.is_alive():
            self._start()
        started = time.monotonic()
        try:
            self._connection.send((body, content_type, url, content_language))
            if not self._connection.poll(self.cfg.timeout_s):
                self._kill()
                return ExtractError.TIMEOUT, f"no result after {self.cfg.timeout_s:g} s"
            status, value = self._connection.recv()
        except (EOFError, OSError, BrokenPipeError) as e:
            exitcode = self._process.exitcode if self._process else None
            self._kill()
            return ExtractError.CRASH, f"child died ({type(e).__name__}, exit code {exitcode}) " \
                                       f"after {time.monotonic() - started:.1f} s"
        if status == "failed":
            return ExtractError.FAILED, value
        return value

    def close(self) -> None:
        if self._process is not None and self._connection is not None:
            self._connection.close()
            self._process.join(2)
            if self._process.is_alive():
                self._process.kill()
            self._process = self._connection = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ExtractTextDoFn(DocDoFn):
    def __init__(self, cfg: ExtractConfig, keep_rejected: bool):
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def setup(self):
        self.extractor = TimeBoundExtractor(self.cfg)
        self.ledger = Ledger("extract", self.keep_rejected)

    def teardown(self):
        self.extractor.close()

    def process_doc(self, doc):
        body = doc.pop("html")
        result = self.extractor(body, doc.pop("content_type"), doc["url"] or None, doc.pop("content_language"))
        if isinstance(result, tuple):
            yield self.ledger.error(doc, *result)
        elif result is None:
            yield self.ledger.drop(doc, Reason.NO_TEXT, chars_in=len(body))
        else:
            doc.update(text=result.text, title=result.title, date=result.date, charset=result.charset,
                       language_hint=result.language_hint)
            yield self.ledger.keep(doc, chars_in=len(body))


class ExtractText(Stage):
    """HTML pages → main text (trafilatura), with a per-page time limit; pages without main text are dropped."""
    name = "extract"
    always = True          # every later stage reads the text

    def __init__(self, cfg: ExtractConfig = ExtractConfig()):
        super().__init__()
        self.cfg = cfg

    def expand(self, pcoll):
        return pcoll | "Extract" >> beam.ParDo(ExtractTextDoFn(self.cfg, self.keep_rejected))
