"""ExtractText: the stage that turns each page's HTML into its main text, through the time-bound child process
of `pipeline/extraction.py` (one per worker, started when the worker sets the stage up)."""
from __future__ import annotations

import enum

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import doc as items
from pipeline.extraction import ExtractConfig, TimeBoundExtractor
from pipeline.stage import Ledger, Stage


class Reason(str, enum.Enum):
    NO_TEXT = "no_main_text"          # trafilatura found nothing it judged to be main text


class ExtractTextDoFn(beam.DoFn):
    """Pages → their text, through the worker's extraction child, overlapped with the worker's own work: a page
    is handed to the child, and its result taken only when the next item (or the bundle's end) arrives; the
    next page is handed over before that result goes downstream. So the child extracts page N + 1 while this
    process runs the later stages on page N and reads page N + 2. Items leave in the order they came."""

    def __init__(self, cfg: ExtractConfig, keep_rejected: bool):
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def setup(self):
        self.extractor = TimeBoundExtractor(self.cfg)
        self.extractor.start()           # it loads trafilatura while the worker reads its first chunk
        self.ledger = Ledger("extract", self.keep_rejected)

    def teardown(self):
        self.extractor.close()

    def start_bundle(self):
        self.waiting = None              # (doc, HTML size) of the page the child has
        self.extractor.reset()           # a page left by a bundle that failed

    def process(self, item):
        done = self.take()
        if item["kind"] == items.DOC:
            body = item.pop("html")
            self.extractor.submit(body, item.pop("content_type"), item["url"] or None, item.pop("content_language"))
            self.waiting, item = (item, len(body)), None
        if done is not None:
            yield done
        if item is not None:
            yield item

    def finish_bundle(self):
        done = self.take()
        if done is not None:
            yield WindowedValue(done, MIN_TIMESTAMP, [GlobalWindow()])

    def take(self) -> dict | None:
        """The item for the page the child has (kept, dropped or error), or None if it has none."""
        if self.waiting is None:
            return None
        (doc, size), self.waiting = self.waiting, None
        result = self.extractor.result()
        if isinstance(result, tuple):
            return self.ledger.error(doc, *result)
        if result is None:
            return self.ledger.drop(doc, Reason.NO_TEXT, chars_in=size)
        doc.update(text=result.text, title=result.title, date=result.date, charset=result.charset,
                   language_hint=result.language_hint)
        return self.ledger.keep(doc, chars_in=size)


class ExtractText(Stage):
    """HTML pages → main text (trafilatura), with a per-page time limit; pages without main text are dropped."""
    name = "extract"
    always = True          # every later stage reads the text

    def __init__(self, cfg: ExtractConfig = ExtractConfig()):
        super().__init__()
        self.cfg = cfg

    def expand(self, pcoll):
        return pcoll | "Extract" >> beam.ParDo(ExtractTextDoFn(self.cfg, self.keep_rejected))
