"""Staging: every input chunk's items are written once, to `OUT/_work/<config>/`, where a rerun finds them.

After the stages that look at one document at a time, each chunk's items (live documents with their text,
dropped documents, errors, the reader's tally) go to `<name>.items.jsonl.gz`, and the compact keys the dedup
stages decide by (`pipeline/dedup.py`: node id, URL hash, date, text hash, MinHash band keys and sketch) to
`<name>.keys.npz`. What flows on through the graph is a reference to the chunk, `(chunk id, name)`; dedup
decides over keys read from the keys files, and its verdicts are applied to each chunk's items read back
from its items file. So no document text goes through a shuffle before the final write.

A chunk whose items all arrived (the tally's pages + errors) gets a marker `<name>.json`, written last, with
the sha256 of both files. A killed run, rerun with the same config, finds the markers and does not read or
extract those chunks again (`ResumeDoFn`; a chunk whose files do not match is read again); the markers also drive the progress line of `refinery curate`. Items that reach the stager
without their chunk complete (items made in a test, or a runner that splits a chunk's items over bundles) are
staged as a part without a marker, so they are used by this run and never resumed. The whole `_work/` folder
is removed when the run completes.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import re
import uuid
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline import doc as items
from pipeline.dataset import join, listed, remove, shard_name, write_atomic
from pipeline.stage import beam_counter

log = logging.getLogger(__name__)

WORK_DIR = "_work"
ITEMS, KEYS, MARKER = ".items.jsonl.gz", ".keys.npz", ".json"


def work_dir(output_dir: str, config_sha: str) -> str:
    """OUT/_work/<config>: built as a string, as the graph is built where gs:// or s3:// may not be installed."""
    return f"{output_dir.rstrip('/')}/{WORK_DIR}/{config_sha}"


def chunk_name(path: str, start: int) -> str:
    """The staged name of the chunk of `path` starting at byte `start`."""
    return f"{shard_name(path)}-{start:013d}"


def chunk_id(name: str) -> int:
    """A 63-bit integer for a chunk's name: what crosses a shuffle instead of the name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") >> 1


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot stage a value of type {type(value).__name__}")


def write_items(work: str, stem: str, chunk_items: list[dict]) -> str:
    """Writes the items; returns the file's sha256."""
    lines = "".join(json.dumps(item, default=_json_default) + "\n" for item in chunk_items)
    data = gzip.compress(lines.encode(), compresslevel=1, mtime=0)
    write_atomic(join(work, stem + ITEMS), data)
    return hashlib.sha256(data).hexdigest()


def read_items(work: str, stem: str) -> list[dict]:
    with FileSystems.open(join(work, stem + ITEMS)) as fh:     # FileSystems decompresses .gz itself
        return [json.loads(line) for line in fh.read().decode().splitlines()]


def write_keys(work: str, stem: str, columns: dict[str, np.ndarray]) -> str:
    """Writes the key columns; returns the file's sha256."""
    buffer = io.BytesIO()
    np.savez(buffer, **columns)
    write_atomic(join(work, stem + KEYS), buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def read_keys(work: str, stem: str) -> dict[str, np.ndarray]:
    with FileSystems.open(join(work, stem + KEYS)) as fh:
        with np.load(io.BytesIO(fh.read()), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


def read_marker(work: str, name: str) -> dict | None:
    path = join(work, name + MARKER)
    try:
        with FileSystems.open(path) as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None           # absent, or unreadable: the chunk is read again


def intact(work: str, name: str, marker: dict) -> bool:
    """Whether the staged chunk's files are there with the sha256 its marker recorded."""
    digests = marker.get("sha256", {})
    if set(digests) != {ITEMS, KEYS}:
        return False
    for suffix, digest in digests.items():
        try:
            with FileSystems.open(join(work, name + suffix), compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                if hashlib.sha256(fh.read()).hexdigest() != digest:
                    return False
        except OSError:
            return False
    return True


def resumable(marker: dict | None, chunk: tuple) -> bool:
    """Whether a staged chunk's marker matches the chunk planned now (same byte range of a file of the same
    size: a file replaced in between is read again)."""
    path, start, end, _, size = chunk
    return bool(marker) and (marker.get("input"), marker.get("chunk"), marker.get("end"),
                             marker.get("size")) == (path, start, end, size)


class ResumeDoFn(beam.DoFn):
    """Planned chunk → itself to read (main output), or, if an earlier run of the same config staged it
    whole, its reference on `staged` (counted: read/chunks_resumed, read/records_resumed). A staged chunk whose
    files do not match their checksums is read again (read/chunks_damaged)."""
    STAGED = "staged"

    def __init__(self, work: str):
        self.work = work

    def setup(self):
        self.count = beam_counter("read")

    def process(self, element):
        if isinstance(element, dict):       # an error and tally from planning: staged like any chunk's items
            yield element
            return
        name = chunk_name(element[0], element[1])
        marker = read_marker(self.work, name)
        if resumable(marker, element):
            if intact(self.work, name, marker):
                self.count("chunks_resumed", 1)
                self.count("records_resumed", marker["records"])
                yield beam.pvalue.TaggedOutput(self.STAGED, (chunk_id(name), name))
                return
            self.count("chunks_damaged", 1)
            log.warning("staged chunk %s does not match its checksums: reading it again", join(self.work, name))
        yield element


class StageChunkDoFn(beam.DoFn):
    """Items → each chunk's items and keys written to the work folder, and `(chunk id, name)` per file written.

    A chunk is written when its tally and as many items as the tally counts pages and errors have arrived
    (the reader emits them in one call, so they are in one bundle); what is left at the end of a bundle is
    written as a part without a marker."""

    def __init__(self, work: str, keys):
        self.work, self.keys = work, keys      # keys: docs → {column: array} (pipeline/dedup.py KeySpec)

    def setup(self):
        self.count = beam_counter("stage")

    def start_bundle(self):
        self.pending, self.tallies = defaultdict(list), {}

    def process(self, item):
        key = (item["warc_file"], item.get("chunk", 0))
        if item["kind"] == items.TALLY:
            self.tallies[key] = item
        else:
            self.pending[key].append(item)
        tally = self.tallies.get(key)
        if tally is not None and len(self.pending[key]) == tally["pages"] + tally["errors"]:
            yield self.flush(key, complete=True)

    def finish_bundle(self):
        for key in list(self.pending.keys() | self.tallies.keys()):
            yield WindowedValue(self.flush(key, complete=False), MIN_TIMESTAMP, [GlobalWindow()])

    def flush(self, key, complete: bool) -> tuple[int, str]:
        path, start = key
        tally = self.tallies.pop(key, None)
        chunk_items = self.pending.pop(key, []) + ([tally] if tally else [])
        name = chunk_name(path, start)
        stem = name if complete else f"{name}.part-{uuid.uuid4().hex[:12]}"
        docs = [i for i in chunk_items if i["kind"] == items.DOC]
        digests = {ITEMS: write_items(self.work, stem, chunk_items), KEYS: write_keys(self.work, stem, self.keys(docs))}
        self.count("docs", len(docs))
        if complete:
            records = tally["pages"] + tally["errors"] + sum(tally["skipped"].values())
            marker = {"input": path, "chunk": start, "end": tally.get("end", 0), "size": tally.get("size", 0),
                      "records": records, "docs": len(docs), "sha256": digests}
            write_atomic(join(self.work, name + MARKER), json.dumps(marker).encode())
            self.count("chunks", 1)
        else:
            self.count("parts", 1)
        return chunk_id(name), stem


class StageChunks(beam.PTransform):
    """Items → `(chunk id, name)` of each staged file (see the module docstring)."""

    def __init__(self, work: str, keys):
        super().__init__()
        self.work, self.keys = work, keys

    def expand(self, pcoll):
        return pcoll | "Stage" >> beam.ParDo(StageChunkDoFn(self.work, self.keys))


_OURS = re.compile(r"^[0-9a-f]{16}/[^/]+(\.items\.jsonl\.gz|\.keys\.npz|\.json)(\.tmp-[0-9a-f]{8})?$")


def staged_file(relative: str) -> bool:
    """Whether a path under `_work/` is one staging writes: `<config>/<chunk>` + a staged suffix (or its
    temporary name)."""
    return bool(_OURS.match(relative))


def clean_work(output_dir: str, keep: str | None) -> None:
    """Remove staged files from the work folder, except those of the config `keep` (its complete chunks are
    resumed; its parts, which no marker vouches for, go). Only files staging writes are touched."""
    root = join(output_dir, WORK_DIR)
    if not FileSystems.exists(root):
        return
    doomed = []
    for path in listed(root, "**"):
        relative = path[len(root):].lstrip("/")
        if staged_file(relative) and (keep is None or not relative.startswith(keep + "/") or ".part-" in relative
                               or ".tmp-" in relative):
            doomed.append(path)
    if doomed:
        remove(doomed)
    if "://" not in root:                 # local config folders the deletes left empty, then _work/ if empty
        configs = [f for f in Path(root).iterdir() if f.is_dir() and re.fullmatch(r"[0-9a-f]{16}", f.name)]
        for folder in [f for f in configs if keep is None or f.name != keep] + [Path(root)]:
            if not any(folder.iterdir()):
                folder.rmdir()
