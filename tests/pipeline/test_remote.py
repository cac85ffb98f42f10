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
