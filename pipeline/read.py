"""ReadWarc: WARC paths → items. Files are cut into chunks that are spread over workers (`pipeline/warc.py`
reads a chunk); every record becomes a live document, an error item or a skip counted in the chunk's tally."""
from __future__ import annotations

import os
from collections import Counter

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline import doc as items, remote
from pipeline.stage import Measured, beam_counter
from pipeline.warc import Chunk, ErrorReason, Page, ReadConfig, ReadError, open_raw, plan_chunks, read_chunk

_HEAD_BYTES = 1 << 16


def file_size(path: str, cfg: ReadConfig = ReadConfig()) -> int:
    if path.startswith(("http://", "https://")):
        return remote.content_length(path, cfg.retry_policy())
    if "://" not in path:
        return os.path.getsize(path)         # as named: Beam's match would read `[1]` as a glob
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


class _CountsRetries:
    """Adds the http(s) retries this process made while a DoFn worked to the Beam counter read/http_retries."""

    def retried_since(self, before: int) -> None:
        if remote.retries() > before:
            self.count("http_retries", remote.retries() - before)


class PlanChunksDoFn(_CountsRetries, beam.DoFn):
    """A WARC path → its chunks; a file that cannot be opened becomes an error item and a tally."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def setup(self):
        self.count = beam_counter("read")

    def process(self, path: str):
        before = remote.retries()
        try:
            size = file_size(path, self.cfg)
            with open_raw(path, policy=self.cfg.retry_policy()) as fh:
                head = fh.read(_HEAD_BYTES)
        except Exception as e:   # missing, permission, network: the run goes on without this file
            self.retried_since(before)
            self.count("records_in", 1)
            self.count(f"error/{ErrorReason.FILE_UNREADABLE.value}", 1)
            yield items.read_error(ReadError(path, 0, ErrorReason.FILE_UNREADABLE, f"{type(e).__name__}: {e}"[:200]))
            yield items.tally(path, 0, pages=0, errors=1, skipped={})
            return
        self.retried_since(before)
        for chunk in plan_chunks(path, size, head, self.cfg.split_bytes):
            yield (chunk.path, chunk.start, chunk.end, chunk.mode, chunk.size)


class ReadChunkDoFn(_CountsRetries, beam.DoFn):
    """A chunk → a doc item per HTML page, an error item per unreadable record, and one tally."""

    def __init__(self, cfg: ReadConfig):
        self.cfg = cfg

    def setup(self):
        self.count = beam_counter("read")

    def process(self, element):
        if isinstance(element, dict):   # an error/tally from planning
            yield element
            return
        chunk = Chunk(*element)
        before = remote.retries()
        pages, errors, skipped = 0, 0, Counter()
        for outcome in read_chunk(chunk, self.cfg):
            if isinstance(outcome, Page):
                pages += 1
                yield items.new_doc(outcome, chunk.path, chunk.start)
            elif isinstance(outcome, ReadError):
                errors += 1
                self.count(f"error/{outcome.reason.value}", 1)
                yield items.read_error(outcome, chunk.start)
            else:
                skipped[outcome.value] += 1
                self.count(f"skipped/{outcome.value}", 1)
        self.count("records_in", pages + errors + sum(skipped.values()))
        self.count("pages", pages)
        self.retried_since(before)
        yield items.tally(chunk.path, chunk.start, pages, errors, skipped, chunk.end, chunk.size)


class PlanChunks(beam.PTransform):
    """WARC paths (local, gs://, s3://, https://) → their chunks `(path, start, end, mode, size)`, spread over
    workers; a file that cannot be opened becomes an error item and a tally instead."""

    def __init__(self, paths: list[str], cfg: ReadConfig):
        super().__init__()
        self.paths, self.cfg = list(paths), cfg

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> beam.Create(self.paths)
                | "Plan" >> beam.ParDo(PlanChunksDoFn(self.cfg))
                | Measured("read/chunks")
                | "Spread" >> beam.Reshuffle())


class ReadWarc(beam.PTransform):
    """WARC paths → items. Files are cut into chunks and spread over workers."""

    def __init__(self, paths: list[str], cfg: ReadConfig):
        super().__init__()
        self.paths, self.cfg = list(paths), cfg

    def expand(self, pbegin):
        return (pbegin
                | "Chunks" >> PlanChunks(self.paths, self.cfg)
                | "Read" >> beam.ParDo(ReadChunkDoFn(self.cfg)))
