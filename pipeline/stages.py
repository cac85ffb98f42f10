"""The Beam stages of curation: ReadWarc, ExtractText and ApplyFilter.

Each stage takes and returns one PCollection of items (see pipeline/doc.py). A stage works on live documents
and passes dropped, error and tally items through untouched, so the pipeline reads as one chain and the writer
sees every record that came in.
"""
from __future__ import annotations

import enum
import logging
from collections import Counter
from typing import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import doc as items
from pipeline.extract import ExtractConfig, Reason as ExtractReason, TimeBoundExtractor
from pipeline.warc import Chunk, Page, ReadConfig, ReadError, open_raw, plan_chunks, read_chunk

NAMESPACE = "refinery"
_HEAD_BYTES = 1 << 16
log = logging.getLogger(__name__)


class _Counters:
    """Beam counters created on first use, named `<stage>/<what>`."""

    def __init__(self, stage: str):
        self.stage, self._counters = stage, {}

    def inc(self, what: str, n: int = 1) -> None:
        counter = self._counters.get(what)
        if counter is None:
            counter = self._counters[what] = Metrics.counter(NAMESPACE, f"{self.stage}/{what}")
        counter.inc(n)


def file_size(path: str) -> int:
    if path.startswith(("http://", "https://")):
        import urllib.request
        with urllib.request.urlopen(urllib.request.Request(path, method="HEAD"), timeout=60) as response:
            return int(response.headers.get("Content-Length") or 0)
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


class PlanChunksDoFn(beam.DoFn):
    """A WARC path → its chunks; a file that cannot be opened becomes an error item and a tally."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def process(self, path: str):
        try:
            size = file_size(path)
            with open_raw(path) as fh:
                head = fh.read(_HEAD_BYTES)
        except Exception as e:   # missing, permission, network: the run goes on without this file
            yield items.error(path, 0, "read", "file_unreadable", f"{type(e).__name__}: {e}"[:200])
            yield items.tally(path, 0, pages=0, errors=1, skipped={})
            return
        for chunk in plan_chunks(path, size, head, self.cfg.split_bytes):
            yield (chunk.path, chunk.start, chunk.end, chunk.mode)


class ReadChunkDoFn(beam.DoFn):
    """A chunk → a doc item per HTML page, an error item per unreadable record, and one tally."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def setup(self):
        self.counters = _Counters("read")

    def process(self, element):
        if isinstance(element, dict):   # an error/tally from planning
            yield element
            return
        chunk = Chunk(*element)
        pages, errors, skipped = 0, 0, Counter()
        for outcome in read_chunk(chunk, self.cfg):
            if isinstance(outcome, Page):
                pages += 1
                yield items.new_doc(outcome, chunk.path)
            elif isinstance(outcome, ReadError):
                errors += 1
                self.counters.inc(f"error/{outcome.reason.value}")
                yield items.read_error(outcome)
            else:
                skipped[outcome.value] += 1
                self.counters.inc(f"skipped/{outcome.value}")
        self.counters.inc("records_in", pages + errors + sum(skipped.values()))
        self.counters.inc("pages", pages)
        yield items.tally(chunk.path, chunk.start, pages, errors, skipped)


class ReadWarc(beam.PTransform):
    """WARC paths (local, gs://, s3://, https://) → items. Files are cut into chunks and spread over workers."""

    def __init__(self, paths: list[str], cfg: ReadConfig):
        super().__init__()
        self.paths, self.cfg = list(paths), cfg

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> beam.Create(self.paths)
                | "Plan" >> beam.ParDo(PlanChunksDoFn(self.cfg))
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(ReadChunkDoFn(self.cfg)))


class _DocDoFn(beam.DoFn):
    """Passes non-live items through; subclasses handle live documents in `process_doc`."""

    def process(self, item):
        if item["kind"] != items.DOC:
            yield item
            return
        yield from self.process_doc(item)

    def process_doc(self, doc):
        raise NotImplementedError


class ExtractTextDoFn(_DocDoFn):
    def __init__(self, cfg: ExtractConfig, keep_rejected: bool):
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def setup(self):
        self.extractor = TimeBoundExtractor(self.cfg)
        self.counters = _Counters("extract")

    def teardown(self):
        self.extractor.close()

    def process_doc(self, doc):
        body = doc.pop("html")
        result = self.extractor(body, doc.pop("content_type"), doc["url"] or None, doc.pop("content_language"))
        if isinstance(result, tuple):
            reason, detail = result
            self.counters.inc(f"error/{reason.value}")
            yield items.error(doc["warc_file"], doc["warc_offset"], "extract", reason.value, detail, doc)
            return
        doc["trace"].append(("extract", len(body), len(result.text) if result else 0))
        if result is None:
            self.counters.inc(ExtractReason.NO_TEXT.value)
            yield items.dropped(doc, "extract", ExtractReason.NO_TEXT.value, self.keep_rejected)
            return
        self.counters.inc("kept")
        doc.update(text=result.text, title=result.title, date=result.date, charset=result.charset,
                   language_hint=result.language_hint)
        yield doc


class ExtractText(beam.PTransform):
    """HTML pages → main text (trafilatura), with a per-page time limit; pages without main text are dropped."""

    def __init__(self, cfg: ExtractConfig, keep_rejected: bool = False):
        super().__init__()
        self.cfg, self.keep_rejected = cfg, keep_rejected

    def expand(self, pcoll):
        return pcoll | "Extract" >> beam.ParDo(ExtractTextDoFn(self.cfg, self.keep_rejected))


class ApplyFilterDoFn(_DocDoFn):
    def __init__(self, name: str, check: Callable, reasons: type[enum.Enum], field: str | None,
                 load: Callable | None, keep_rejected: bool):
        self.name, self.check, self.reasons = name, check, reasons
        self.field, self.load, self.keep_rejected = field, load, keep_rejected

    def setup(self):
        self.counters = _Counters(self.name)
        self.resource = self.load() if self.load is not None else None   # word lists, once per worker

    def process_doc(self, doc):
        value = doc if self.field is None else doc[self.field]
        result = self.check(value) if self.load is None else self.check(value, self.resource)
        chars = len(doc.get("text", ""))
        if isinstance(result, tuple):          # a filter that also cleans: (new text, reason or None)
            text, result = result
            if result is None:
                doc["text"] = text
        if result is None:
            self.counters.inc("kept")
            doc["trace"].append((self.name, chars, len(doc.get("text", ""))))
            yield doc
            return
        reason = self.reasons(result)    # a check that returns something outside its Reason enum is a bug
        self.counters.inc(reason.value)
        doc["trace"].append((self.name, chars, 0))
        yield items.dropped(doc, self.name, reason.value, self.keep_rejected)


class ApplyFilter(beam.PTransform):
    """Wraps a pure check: counts keeps and each reason as Beam counters, tags dropped documents.

    `check(doc[field])` (or `check(doc)` when `field` is None) returns a Reason or None; a check that also
    cleans returns `(new_text, Reason | None)`. With `load`, the check is called as `check(value, resource)`
    where `resource = load()` runs once per worker (word lists, models).
    """

    def __init__(self, name: str, check: Callable, reasons: type[enum.Enum], field: str | None = "text",
                 load: Callable | None = None, keep_rejected: bool = False):
        super().__init__()
        self.name, self.check, self.reasons, self.field = name, check, reasons, field
        self.load, self.keep_rejected = load, keep_rejected

    def expand(self, pcoll):
        return pcoll | f"Check_{self.name}" >> beam.ParDo(
            ApplyFilterDoFn(self.name, self.check, self.reasons, self.field, self.load, self.keep_rejected))
