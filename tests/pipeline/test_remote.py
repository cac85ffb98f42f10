"""http(s) inputs that survive throttling and broken connections: a server on 127.0.0.1 (in this test) answers
503 and 429, cuts bodies short and resets connections on a schedule; curating a real WARC through it gives what
reading the file directly gives, with every retry counted, and nothing lost or read twice."""
import http.server
import json
import socket
import struct
import threading
import urllib.error
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from pipeline import remote
from pipeline.config import load_config
from pipeline.curate import curate
from pipeline.remote import HTTPReader, RetryPolicy

FAST = RetryPolicy(attempts=4, backoff_s=0.01, max_backoff_s=0.05)


class Faulty(http.server.ThreadingHTTPServer):
    """Serves `data` at any path with Range support; each request takes the next fault of `faults`:
    503 / 429 (throttled), ("cut", n) (n bytes of the body, then the connection closes), ("reset", n) (n bytes,
    then a TCP reset), or None (served whole)."""

    daemon_threads = True

    def __init__(self, data: bytes, faults: list):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data, self.faults, self.lock, self.log = data, list(faults), threading.Lock(), []

    def next_fault(self, statuses_only: bool = False):
        """The next fault; a HEAD (no body) takes only a status one, leaving a body fault for the next GET."""
        with self.lock:
            if not self.faults or statuses_only and not isinstance(self.faults[0], int):
                return None
            return self.faults.pop(0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/slice.warc.gz"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _head(self):
        fault = self.server.next_fault(statuses_only=self.command == "HEAD")
        self.server.log.append((self.command, self.headers.get("Range"), fault))
        if fault in (503, 429, 404):
            self.send_response(fault)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None, None
        data, start = self.server.data, 0
        wanted = self.headers.get("Range")
        if wanted:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        return fault, data[start:]

    def do_HEAD(self):
        self._head()

    def do_GET(self):
        fault, body = self._head()
        if body is None:
            return
        if fault is None:
            self.wfile.write(body)
            return
        kind, n = fault
        self.wfile.write(body[:n])
        self.wfile.flush()
        if kind == "reset":                       # SO_LINGER 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


@pytest.fixture
def serve():
    servers = []

    def start(data: bytes, faults: list) -> Faulty:
        server = Faulty(data, faults)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_broken_body_is_resumed_at_the_byte_where_it_stopped(serve):
    data = bytes(range(256)) * 4000                         # 1 MB, every offset distinguishable
    server = serve(data, [503, 429, ("cut", 100_000), ("reset", 50_000), ("cut", 0)])
    before = remote.retries()
    with HTTPReader(server.url, 0, FAST) as fh:
        assert fh.read() == data
    assert remote.retries() - before == 5
    ranges = [r for _, r, _ in server.log]
    assert ranges[:4] == [None, None, None, "bytes=100000-"]          # then wherever the reset left the body
    assert all(r.startswith("bytes=") for r in ranges[4:]) and len(ranges) == 6
    # from an offset, and a HEAD through throttling
    server.faults = [503, ("reset", 10)]
    with HTTPReader(server.url, 777, FAST) as fh:
        assert fh.read() == data[777:]
    server.faults = [429, 503]
    assert remote.content_length(server.url, FAST) == len(data)


def test_giving_up_names_the_url_and_a_404_is_not_retried(serve):
    server = serve(b"x" * 1000, [503] * 4 + [404])
    with pytest.raises(OSError, match=r"slice.warc.gz: gave up after 4 attempts \(HTTPError"):
        HTTPReader(server.url, 0, FAST)
    with pytest.raises(urllib.error.HTTPError, match="404"):
        HTTPReader(server.url, 0, FAST)
    assert len(server.log) == 5                               # the 404 was asked once
    with pytest.raises(ValueError, match="attempts must be >= 1"):
        RetryPolicy(attempts=0)


def test_curating_through_a_throttling_server_equals_reading_the_file(crawl_slice, serve, tmp_path):
    data = Path(crawl_slice).read_bytes()
    # the HEAD is throttled 3 times; the planner's first read (64 kB) is served whole, then chunk reads break
    faults = [503, 429, 503, None, ("cut", 30_000), ("reset", 20_000), 429, ("cut", 1), ("reset", 0)]
    server = serve(data, faults)
    cfg = load_config(None, ["read.split_bytes=262144", "read.http_backoff_s=0.01"])
    beam = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    curate([crawl_slice], str(tmp_path / "local"), cfg, beam, progress=False)
    remote_run = curate([server.url], str(tmp_path / "remote"), cfg, beam, progress=False)
    assert not server.faults                                 # every fault was served
    assert remote_run.counters["read/http_retries"] == len(faults) - 1, "\n".join(map(str, server.log))
    rows = {}
    for name in ("local", "remote"):
        table = pads.dataset(str(tmp_path / name / "data"), format="parquet").to_table(
            columns=["id", "text", "warc_offset"])
        rows[name] = sorted(zip(*(table.column(c).to_pylist() for c in table.column_names)))
        stats = json.loads((tmp_path / name / "stats.json").read_text())
        rows[name + " stats"] = {k: stats[k] for k in ("records_in", "kept", "skipped", "dropped", "errors")}
    assert rows["local"] == rows["remote"] and len(rows["local"]) > 40        # nothing lost, nothing twice
    assert rows["local stats"] == rows["remote stats"] and rows["remote stats"]["errors"] == {}
    assert json.loads((tmp_path / "remote" / "stats.json").read_text())["http_retries"] == len(faults) - 1


# ------------------------------------------------------------------ object stores (gs://, s3://) through Beam

class SlowDown(Exception):
    """What botocore raises when S3 throttles (its error code, carried in the name here)."""


class Coded(Exception):
    def __init__(self, code: int):
        super().__init__(f"HTTP {code}")
        self.code = code


class FlakyFile:
    """A local file read through a store's client that fails on a schedule: each read takes the next fault of
    `faults` (an exception to raise after consuming some bytes, or None for a good read)."""

    def __init__(self, path: str, offset: int, faults: list, log: list):
        self.fh, self.faults, self.log = open(path, "rb"), faults, log
        self.fh.seek(offset)
        log.append(("open", offset))

    def read(self, n: int) -> bytes:
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            self.fh.read(min(n, 777))                  # the broken transfer had consumed bytes: they must not count
            raise fault
        data = self.fh.read(min(n, 50_000))            # short reads are normal for a stream
        self.log.append(("read", len(data)))
        return data

    def seek(self, offset: int):
        self.fh.seek(offset)
        self.log.append(("seek", offset))

    def close(self):
        self.fh.close()


def _flaky_scheme(faults: list, log: list, open_faults: list | None = None):
    """A Beam FileSystem of scheme flaky:// over local files (Beam finds FileSystem subclasses by scheme), so
    open_raw takes the path a gs:// or s3:// input takes."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    class Flaky(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "flaky"

        def open(self, path, mime_type="application/octet-stream", compression_type=None):
            if open_faults:
                raise open_faults.pop(0)
            return FlakyFile(path.removeprefix("flaky://"), 0, faults, log)
    return Flaky


def test_object_store_reads_are_retried_and_resumed_where_they_stopped(crawl_slice):
    from dataclasses import replace

    from pipeline.warc import Page, open_raw, plan_chunks, read_chunk
    data = Path(crawl_slice).read_bytes()
    faults = [None, SlowDown("Please reduce your request rate"), None, ConnectionResetError("reset"), None,
              Coded(503), TimeoutError("read timed out"), None, None, SlowDown("again")]
    log, open_faults = [], [ConnectionResetError("refused")]
    flaky = _flaky_scheme(faults, log, open_faults)
    before = remote.retries()
    with open_raw(f"flaky://{crawl_slice}", policy=FAST) as fh:
        assert fh.read() == data                             # every byte once, in order
    assert remote.retries() - before == 1 + 5                 # the open, then each failed read
    assert not faults and not open_faults
    # a WARC read record by record through the store gives what the local file gives
    faults += [None, SlowDown("x"), None, Coded(500), None] * 3
    chunks = plan_chunks(crawl_slice, len(data), data[:65536], 40_000)
    assert len(chunks) > 3
    local = [o for c in chunks for o in read_chunk(c)]
    stored = [o for c in chunks for o in read_chunk(replace(c, path=f"flaky://{crawl_slice}"))]
    assert not faults
    assert [(o.offset, o.record_id, o.body) if isinstance(o, Page) else o for o in local] == \
        [(o.offset, o.record_id, o.body) if isinstance(o, Page) else o for o in stored]
    assert sum(isinstance(o, Page) for o in stored) > 40
    del flaky


def test_object_store_errors_that_will_not_pass_are_not_retried(tmp_path):
    path = tmp_path / "x.warc"
    path.write_bytes(b"abc")
    before = remote.retries()
    for error in (FileNotFoundError("gone"), PermissionError("denied"), Coded(404), ValueError("bad")):
        with pytest.raises(type(error)):
            remote.StoreReader("flaky://x", 0, FAST, opener=lambda p, o, e=error: (_ for _ in ()).throw(e))
    assert remote.retries() == before
    always = [SlowDown("busy")] * 10
    reader = remote.StoreReader("s3://bucket/x.warc", 0, FAST,
                                opener=lambda p, o: FlakyFile(str(path), o, always, []))
    with pytest.raises(OSError, match=r"s3://bucket/x.warc: reading at byte 0 failed 4 times \(SlowDown: busy\)"):
        reader.read(10)
    assert remote.retries() - before == 3
