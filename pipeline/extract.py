"""ExtractText: the stage that turns each page's HTML into its main text, through the time-bound child process
of `pipeline/extraction.py` (one per worker, started when the worker sets the stage up)."""
from __future__ import annotations

import enum

import apache_beam as beam

from pipeline.extraction import ExtractConfig, TimeBoundExtractor
from pipeline.stage import DocDoFn, Ledger, Stage


class Reason(str, enum.Enum):
    NO_TEXT = "no_main_text"          # trafilatura found nothing it judged to be main text


class ExtractTextDoFn(DocDoFn):
    def __init__(self, cfg: ExtractConfig, keep_rejected: bool):
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def setup(self):
        self.extractor = TimeBoundExtractor(self.cfg)
        self.extractor.start()           # it loads trafilatura while the worker reads its first chunk
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
