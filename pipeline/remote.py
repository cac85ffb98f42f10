"""HTTP(S) reads of WARC files that survive throttling and broken connections.

Common Crawl's servers answer a busy client with 503 / 429 (S3's SlowDown), and a long download can break or end
early. Each request here is retried with bounded exponential backoff (a server's `Retry-After` is honoured, up
to the cap); a body that breaks or ends before its length is reopened with a Range request at the byte where it
stopped, so no byte is read twice or skipped, and the WARC reader above sees one unbroken stream. Every retry is
counted (`retries()`: the reading DoFns report it as the Beam counter `read/http_retries`).

    open_http("https://data.commoncrawl.org/crawl-data/…warc.gz", offset=0, policy=RetryPolicy())

Object stores read through Beam's FileSystems (gs://, s3://, and any other registered scheme) get the same
treatment from `StoreReader`: their clients raise their own exceptions (botocore's SlowDown and
IncompleteRead, google-api-core's ServiceUnavailable, Beam's S3ClientError with an HTTP code), so an error is
transient when it is a network or OS error other than a missing or forbidden file, carries a retryable HTTP
code, or is named as throttling or a broken transfer; the file is then reopened and seeked to the byte where the
read stopped.
"""
from __future__ import annotations

import http.client
import io
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT = (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException, urllib.error.URLError)

_lock = threading.Lock()
_retries = 0


def retries() -> int:
    """Retries made by this process so far (the DoFns report the difference per bundle)."""
    return _retries


def _count() -> None:
    global _retries
    with _lock:
        _retries += 1


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8                    # tries per request (and per broken body) before giving up
    backoff_s: float = 0.5               # first wait; doubled each time, with up to 25 % jitter
    max_backoff_s: float = 30.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"need 0 <= backoff_s <= max_backoff_s, got {self.backoff_s}, {self.max_backoff_s}")

    def wait(self, attempt: int, retry_after: str | None = None) -> None:
        try:
            asked = float(retry_after) if retry_after else None
        except ValueError:                    # an HTTP date: fall back to our own schedule
            asked = None
        delay = asked if asked is not None else self.backoff_s * 2 ** attempt * (1 + random.random() / 4)
        time.sleep(min(self.max_backoff_s, max(0.0, delay)))


def request(url: str, offset: int = 0, method: str = "GET", policy: RetryPolicy = RetryPolicy()):
    """The response to `method url` from byte `offset`, retrying throttling (429, 503, …) and transient network
    errors; other HTTP errors (404, 403) raise at once."""
    last = None
    for attempt in range(policy.attempts):
        if attempt:
            _count()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers, method=method),
                                              timeout=60)
        except urllib.error.HTTPError as e:
            if e.code not in RETRY_STATUS:
                raise
            last, retry_after = e, e.headers.get("Retry-After")
            e.close()
        except TRANSIENT as e:
            last, retry_after = e, None
        else:
            if offset and response.status != 206:
                response.close()
                raise OSError(f"{url}: the server ignored the Range request (status {response.status})")
            return response
        if attempt + 1 < policy.attempts:
            policy.wait(attempt, retry_after)
    raise OSError(f"{url}: gave up after {policy.attempts} attempts ({type(last).__name__}: {last})")


def content_length(url: str, policy: RetryPolicy = RetryPolicy()) -> int:
    with request(url, method="HEAD", policy=policy) as response:
        return int(response.headers.get("Content-Length") or 0)


def _end_of(response, offset: int) -> int | None:
    """The file's size from a response starting at `offset`: Content-Range's total, else offset + length."""
    whole = (response.headers.get("Content-Range") or "").rpartition("/")[2]
    if whole.isdigit():
        return int(whole)
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_NAMES = ("SlowDown", "Throttl", "TooManyRequests", "ServiceUnavailable", "InternalServerError",
                    "IncompleteRead", "ReadTimeout", "ConnectTimeout", "EndpointConnectionError", "ConnectionClosed",
                    "TransportError", "DeadlineExceeded", "RequestTimeout")


def transient(error: BaseException) -> bool:
    """Whether an object store's error is worth retrying (see the module's docstring)."""
    if isinstance(error, PERMANENT):
        return False
    code = getattr(error, "code", None) or getattr(error, "status_code", None)
    if isinstance(code, int):
        return code in RETRY_STATUS
    return isinstance(error, (OSError, *TRANSIENT)) or any(name in f"{type(error).__name__} {code or ''}"
                                                           for name in _TRANSIENT_NAMES)


def open_at(path: str, offset: int = 0):
    """A path through Beam's FileSystems (local, gs://, s3://), raw bytes, positioned at `offset`; no retries."""
    fh = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    if offset:
        fh.seek(offset)
    return fh


class StoreReader(io.RawIOBase):
    """The bytes of an object-store path (gs://, s3://, … through Beam's FileSystems) from `offset`, as one
    stream: opening and each read are retried on transient errors (`transient`), reopening at the byte where
    the read stopped, so nothing is read twice or skipped; other errors raise at once."""

    def __init__(self, path: str, offset: int = 0, policy: RetryPolicy = RetryPolicy(), opener=open_at):
        self.path, self.position, self.policy, self._opener = path, offset, policy, opener
        self._fh = None
        self._retrying(self._handle, "opening")

    def _handle(self):
        """The open file at `position`, opened again after a failure dropped it."""
        if self._fh is None:
            self._fh = self._opener(self.path, self.position)
        return self._fh

    def _drop(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except Exception:  # the broken handle may not close
                pass
            self._fh = None

    def _retrying(self, action, what: str):
        for attempt in range(self.policy.attempts):
            try:
                return action()
            except Exception as e:  # store clients raise their own types
                if not transient(e):
                    raise
                last = e
            self._drop()                                # the next try reopens where the read stopped
            if attempt + 1 < self.policy.attempts:
                _count()
                self.policy.wait(attempt)
        raise OSError(f"{self.path}: {what} at byte {self.position:,} failed {self.policy.attempts} times "
                      f"({type(last).__name__}: {last})")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._retrying(lambda: self._handle().read(len(buffer)), "reading")
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()


class HTTPReader(io.RawIOBase):
    """The bytes of `url` from `offset` to its end, as one stream: a body that breaks, or ends before the length
    the server announced, is reopened at the byte where it stopped."""

    def __init__(self, url: str, offset: int = 0, policy: RetryPolicy = RetryPolicy()):
        self.url, self.position, self.policy = url, offset, policy
        self.response = request(url, offset, policy=policy)
        self.end = _end_of(self.response, offset)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        last = None
        for attempt in range(self.policy.attempts):
            try:
                data = self.response.read(len(buffer))
            except TRANSIENT as e:
                data, last = None, e
            if data:
                buffer[:len(data)] = data
                self.position += len(data)
                return len(data)
            if data is not None and (self.end is None or self.position >= self.end):
                return 0                                  # the real end
            last = last or OSError(f"the body ended at byte {self.position:,} of {self.end:,}")
            _count()
            self.response.close()
            self.policy.wait(attempt)
            self.response = request(self.url, self.position, policy=self.policy)
        raise OSError(f"{self.url}: reading at byte {self.position:,} failed {self.policy.attempts} times "
                      f"({type(last).__name__}: {last})")

    def close(self) -> None:
        self.response.close()
        super().close()
