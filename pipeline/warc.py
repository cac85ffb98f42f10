"""Reading WARC files record by record, robustly, without Beam.

A WARC file is cut into byte ranges ("chunks") so one big file does not pin one worker. Common Crawl writes one
gzip member per record, so any byte position can be re-synchronised to the next member that decompresses to
`WARC/`; a record belongs to the chunk in which its member starts. The same re-synchronisation lets a reader step
over a corrupt record and keep every good record after it.

Every record read is reported exactly once, as a `Page` (an HTML response to extract), a skip reason, or a
`ReadError` with file, offset and reason, so the funnel can account for all of them.
"""
from __future__ import annotations

import enum
import functools
import gzip
import io
import logging
import os
import re
import uuid
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParser, StatusAndHeadersParserException

from pipeline.remote import HTTPReader, RetryPolicy, StoreReader, open_at

# warcio logs one warning per record whose target URI holds spaces; it repairs them, and we keep the URL as repaired.
logging.getLogger("warcio.recordloader").setLevel(logging.ERROR)

GZIP_MAGIC = b"\x1f\x8b\x08"
WARC_LINE = re.compile(rb"(?:^|\n)(WARC/(?:1\.0|1\.1|0\.1[78])\r?\n)")
_SCAN_BLOCK_BYTES = 1 << 20
WHOLE_FILE = 1 << 62          # `end` of a chunk that covers the whole file
_HTTP_PARSER = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0", "HTTP/0.9"], verify=False)


@dataclass(frozen=True)
class ReadConfig:
    max_body_bytes: int = 5 * 2**20      # decompressed payload cap; CC itself truncates payloads at 1 MiB
    split_bytes: int = 2 * 2**20         # chunk size for per-record gzip files: many per worker balance load
    html_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")
    http_attempts: int = 8               # http(s) inputs: tries per request or broken body (pipeline/remote.py)
    http_backoff_s: float = 0.5          # first wait after a 429/503 or a broken connection; doubled each time

    def __post_init__(self):
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, got {self.max_body_bytes}")
        if self.split_bytes < 1 << 16:
            raise ValueError(f"split_bytes must be >= 65536, got {self.split_bytes}")
        if self.http_attempts < 1:
            raise ValueError(f"http_attempts must be >= 1, got {self.http_attempts}")
        if not 0 <= self.http_backoff_s <= 3600:
            raise ValueError(f"http_backoff_s must be between 0 and 3600 seconds, got {self.http_backoff_s}")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.http_attempts, backoff_s=self.http_backoff_s,
                           max_backoff_s=max(30.0, self.http_backoff_s))


class Skip(str, enum.Enum):
    """Why a well-formed record is not a page to extract."""
    WARCINFO = "warcinfo_record"
    REQUEST = "request_record"
    METADATA = "metadata_record"
    RESOURCE = "resource_record"
    REVISIT = "revisit_record"
    CONVERSION = "conversion_record"
    OTHER_TYPE = "other_record_type"
    NOT_HTTP = "response_without_http"      # e.g. Heritrix `dns:` responses
    HTTP_NOT_200 = "http_status_not_200"
    NOT_HTML = "not_html"
    EMPTY_BODY = "empty_body"
    BODY_TOO_LARGE = "body_too_large"


_SKIP_BY_TYPE = {"warcinfo": Skip.WARCINFO, "request": Skip.REQUEST, "metadata": Skip.METADATA,
                 "resource": Skip.RESOURCE, "revisit": Skip.REVISIT, "conversion": Skip.CONVERSION}


class ErrorReason(str, enum.Enum):
    """Why a record (or a stretch of a file) could not be read."""
    TRUNCATED_RECORD = "truncated_record"        # body shorter than its Content-Length
    BAD_WARC_HEADER = "bad_warc_header"          # not a WARC record where one should start
    BAD_GZIP = "bad_gzip"                        # compressed data is corrupt
    BAD_HTTP_HEADER = "bad_http_header"
    BAD_CONTENT_ENCODING = "bad_content_encoding"  # gzip/deflate/br payload that does not decode
    FILE_UNREADABLE = "file_unreadable"


@dataclass(frozen=True)
class Chunk:
    """A byte range [start, end) of one WARC file; `mode` says how the file is framed."""
    path: str
    start: int
    end: int
    mode: str   # "members": gzip member per record (splittable) | "gzip": one gzip stream | "plain": uncompressed
    size: int = 0   # the file's size when the chunks were planned (a resumed run checks it still is)

    def __post_init__(self):
        if self.mode not in ("members", "gzip", "plain"):
            raise ValueError(f"mode must be members, gzip or plain, got {self.mode!r}")


@dataclass(frozen=True)
class Page:
    """An HTTP 200 HTML response, payload decoded from transfer and content encodings."""
    url: str
    record_id: str
    offset: int
    crawl_date: str
    body: bytes
    content_type: str
    content_language: str
    warc_truncated: str = ""


@dataclass(frozen=True)
class ReadError:
    path: str
    offset: int
    reason: ErrorReason
    detail: str


Outcome = Page | Skip | ReadError


# ---------------------------------------------------------------------------------------------- opening files

def open_raw(path: str, offset: int = 0, policy: RetryPolicy = RetryPolicy()) -> BinaryIO:
    """The file's raw bytes from `offset`: local paths, gs://, s3:// (Beam FileSystems, retried and resumed) or
    http(s):// (Range requests, retried and resumed): pipeline/remote.py."""
    if path.startswith(("http://", "https://")):
        return _PositionedReader(HTTPReader(path, offset, policy), offset)
    if "://" in path and not path.startswith("file://"):               # gs://, s3://: retried and resumed
        return _PositionedReader(StoreReader(path, offset, policy), offset)
    return _PositionedReader(open_at(path, offset), offset)


class _PositionedReader(io.RawIOBase):
    """A read-only stream that knows its absolute position (warcio takes record offsets from `tell()`)."""

    def __init__(self, fh: BinaryIO, position: int):
        self._fh, self._position = fh, position

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._fh.read(len(buffer))
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_logical(chunk: Chunk, offset: int, opener: Callable[[str, int], BinaryIO]) -> BinaryIO:
    """A stream at `offset` in the coordinates records are addressed in (decompressed for mode `gzip`)."""
    if chunk.mode != "gzip":
        return io.BufferedReader(opener(chunk.path, offset), 1 << 16)
    stream = gzip.GzipFile(fileobj=opener(chunk.path, 0))
    remaining = offset
    while remaining:
        skipped = len(stream.read(min(remaining, 1 << 20)))
        if not skipped:
            break
        remaining -= skipped
    return io.BufferedReader(_PositionedReader(stream, offset - remaining), 1 << 16)


# ---------------------------------------------------------------------------------------------- planning

def detect_mode(head: bytes) -> str:
    """Framing of a file from its first bytes: one gzip member per record, one gzip stream, or plain."""
    if not head.startswith(GZIP_MAGIC):
        return "plain"
    decompressor = zlib.decompressobj(31)
    try:
        decompressor.decompress(head)
    except zlib.error:
        return "gzip"   # corrupt from the start: read as a stream and report the error there
    # A member that ends inside the head, followed by another member or the end of the file: per-record gzip.
    if decompressor.eof and (not decompressor.unused_data or decompressor.unused_data.startswith(GZIP_MAGIC)):
        return "members"
    return "gzip"


def plan_chunks(path: str, size: int, head: bytes, split_bytes: int) -> list[Chunk]:
    """Byte ranges of one file: several for per-record gzip, else the whole file."""
    mode = detect_mode(head)
    if mode != "members" or size <= split_bytes:
        return [Chunk(path, 0, WHOLE_FILE, mode, size)]     # offsets in mode gzip are decompressed: no end to compare
    return [Chunk(path, start, min(start + split_bytes, size), mode, size) for start in range(0, size, split_bytes)]


# ---------------------------------------------------------------------------------------------- re-synchronising

def _is_member_start(data: bytes) -> bool:
    decompressor = zlib.decompressobj(31)
    try:
        return decompressor.decompress(data, 16).startswith(b"WARC/")
    except zlib.error:
        return False


def find_record_start(stream: BinaryIO, position: int, mode: str, limit: int | None) -> int | None:
    """Absolute offset of the first record start at or after `position` (and before `limit`), else None.

    `stream` must be positioned at `position`. For gzip members a candidate is a gzip header whose data begins
    with `WARC/`; otherwise a `WARC/x.y` line at the start of a line.
    """
    carry = b""
    base = position           # absolute offset of carry[0]
    at_line_start = position == 0
    while limit is None or base < limit:
        block = stream.read(_SCAN_BLOCK_BYTES)
        if not block:
            data = carry
        else:
            data = carry + block
        if mode == "members":
            index = data.find(GZIP_MAGIC)
            while index != -1:
                if limit is not None and base + index >= limit:
                    return None
                if _is_member_start(data[index:index + (1 << 16)] if block else data[index:]):
                    return base + index
                index = data.find(GZIP_MAGIC, index + 1)
        else:
            for match in WARC_LINE.finditer(data):
                start = match.start(1)
                if start == 0 and not at_line_start:
                    continue
                if limit is not None and base + start >= limit:
                    return None
                return base + start
        if not block:
            return None
        keep = 1 << 16 if mode == "members" else 16     # a candidate may straddle two blocks
        carry = data[-keep:]
        base += len(data) - len(carry)
        at_line_start = data[-len(carry) - 1:-len(carry)] == b"\n" if len(data) > len(carry) else at_line_start
    return None


# ---------------------------------------------------------------------------------------------- records

def _record_id(record, path: str, offset: int) -> str:
    raw = record.rec_headers.get_header("WARC-Record-ID") or ""
    match = re.search(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", raw)
    if match:
        return match.group(0).lower()
    # No UUID (old crawlers): a stable one from where the record sits.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{path}#{offset}#{raw}"))


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in head


def _classify(record, path: str, offset: int, cfg: ReadConfig) -> Outcome:
    """What one record is, reading at most `max_body_bytes` of its payload."""
    rec_type = record.rec_type
    protocol = getattr(record.rec_headers, "protocol", "") or ""
    if not protocol.startswith("WARC/") or not rec_type:
        # warcio is lenient and makes a headerless "record" out of any text; we are not.
        return ReadError(path, offset, ErrorReason.BAD_WARC_HEADER, f"no WARC record here (starts {protocol[:40]!r})")
    if rec_type != "response":
        return _SKIP_BY_TYPE.get(rec_type, Skip.OTHER_TYPE)
    if record.http_headers is None:
        # warcio only parses HTTP headers for http(s) URIs; trust the WARC Content-Type instead.
        if not (record.content_type or "").startswith("application/http"):
            return Skip.NOT_HTTP
        try:
            record.http_headers = _HTTP_PARSER.parse(record.raw_stream)
        except (StatusAndHeadersParserException, EOFError, ValueError) as e:
            return ReadError(path, offset, ErrorReason.BAD_HTTP_HEADER, str(e)[:200])
    status = record.http_headers.get_statuscode()
    if status != "200":
        return Skip.HTTP_NOT_200
    content_type = record.http_headers.get_header("Content-Type") or ""
    mime = content_type.split(";")[0].strip().lower()
    if mime and mime not in cfg.html_types:
        return Skip.NOT_HTML
    try:
        body = record.content_stream().read(cfg.max_body_bytes + 1)
    except (zlib.error, OSError, EOFError, ValueError) as e:
        return ReadError(path, offset, ErrorReason.BAD_CONTENT_ENCODING, str(e)[:200])
    if len(body) > cfg.max_body_bytes:
        return Skip.BODY_TOO_LARGE
    if not body.strip():
        return Skip.EMPTY_BODY
    if not mime and not _looks_like_html(body):
        return Skip.NOT_HTML
    headers = record.rec_headers
    return Page(url=(headers.get_header("WARC-Target-URI") or "").strip("<>"),
                record_id=_record_id(record, path, offset), offset=offset,
                crawl_date=headers.get_header("WARC-Date") or "", body=body, content_type=content_type,
                content_language=record.http_headers.get_header("Content-Language") or "",
                warc_truncated=headers.get_header("WARC-Truncated") or "")


def _drain(record) -> int:
    """Read what is left of the record's block; the number of promised bytes that never came."""
    stream = record.raw_stream
    while stream.read(1 << 16):
        pass
    return max(getattr(stream, "limit", 0), 0)


_READ_ERRORS = (ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error, EOFError, ValueError,
                OSError, gzip.BadGzipFile)


def _error_reason(exc: Exception) -> ErrorReason:
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)):
        return ErrorReason.BAD_GZIP
    if isinstance(exc, EOFError):
        return ErrorReason.TRUNCATED_RECORD
    if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile):
        return ErrorReason.FILE_UNREADABLE
    return ErrorReason.BAD_WARC_HEADER


def read_chunk(chunk: Chunk, cfg: ReadConfig = ReadConfig(),
               opener: Callable[[str, int], BinaryIO] | None = None) -> Iterator[Outcome]:
    """Every record whose start lies in the chunk, as a Page, a Skip or a ReadError, each exactly once.

    After an unreadable stretch, reading resumes at the next record start; the stretch is one ReadError.
    """
    opener = opener or functools.partial(open_raw, policy=cfg.retry_policy())
    position = chunk.start
    needs_sync = chunk.start > 0
    while position < chunk.end:
        try:
            stream = _open_logical(chunk, position, opener)
        except _READ_ERRORS as e:
            yield ReadError(chunk.path, position, ErrorReason.FILE_UNREADABLE, f"{type(e).__name__}: {e}"[:200])
            return
        try:
            if needs_sync:
                try:
                    found = find_record_start(stream, position, chunk.mode, chunk.end)
                except _READ_ERRORS:
                    found = None    # the rest is unreadable; the error that led here is already reported
                if found is None:
                    return
                if found != position:
                    stream.close()
                    position, needs_sync = found, False
                    continue
            position = yield from _read_from(stream, position, chunk, cfg)
        finally:
            stream.close()
        if position is None:
            return
        needs_sync = True


def read_file(path: str, cfg: ReadConfig = ReadConfig(), split_bytes: int = 1 << 40) -> Iterator[Outcome]:
    """Every record of a local WARC file in order, read chunk by chunk as the pipeline plans them, without Beam
    (the quality classifier's page reader, tests, benchmarks)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    for chunk in plan_chunks(path, os.path.getsize(path), head, split_bytes):
        yield from read_chunk(chunk, cfg)


def _read_from(stream: BinaryIO, position: int, chunk: Chunk, cfg: ReadConfig):
    """Read records from `position` until the chunk's end (returns None) or an error (returns where to re-sync)."""
    iterator = ArchiveIterator(stream, no_record_parse=False)
    records = iter(iterator)
    while True:
        record_start = iterator.offset if iterator.offset is not None else position
        if record_start >= chunk.end:
            return None
        try:
            record = next(records)
        except StopIteration:
            return None
        except Exception as e:     # noqa: BLE001 — warcio parsing bytes from the web: any failure is this record's
            # (besides _READ_ERRORS, e.g. AttributeError from its HTTP parser on a response with no Target-URI)
            yield ReadError(chunk.path, record_start, _error_reason(e), f"{type(e).__name__}: {e}"[:200])
            return record_start + 1
        if record_start >= chunk.end:   # the record began in the next chunk: it is read there
            return None
        length = record.rec_headers.get_header("Content-Length")
        if (getattr(record.rec_headers, "protocol", "") or "").startswith("WARC/") and \
                not (length or "").strip().isdigit():
            # warcio reads a bad length as 0 and its block as the next "record": one error for both, then re-sync
            yield ReadError(chunk.path, record_start, ErrorReason.BAD_WARC_HEADER,
                            f"Content-Length {length!r} is not a number of bytes")
            return record_start + 1
        try:
            outcome = _classify(record, chunk.path, record_start, cfg)
            missing = _drain(record)
            iterator.read_to_end()
        except _READ_ERRORS as e:
            yield ReadError(chunk.path, record_start, _error_reason(e), f"{type(e).__name__}: {e}"[:200])
            return record_start + 1
        if missing:
            yield ReadError(chunk.path, record_start, ErrorReason.TRUNCATED_RECORD,
                            f"block ends {missing} bytes short of its Content-Length")
            return record_start + 1
        yield outcome
