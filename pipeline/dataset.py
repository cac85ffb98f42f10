"""Writing the curated dataset: Parquet shards, errors, rejected documents, and the funnel.

One output shard per input WARC file, `OUT/data/<name>.parquet` (HF datasets reads a folder of Parquet files),
written atomically (temporary name, then rename). After a file's outputs are in place a progress marker
`OUT/_progress/<name>.json` records its funnel; a rerun skips input files that have one, and `stats.json` sums
all markers, so it covers every run that contributed to the folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline import corpus, doc as items
from pipeline.stage import Measured

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("text", pa.string()),
    ("title", pa.string()),
    ("date", pa.string()),              # publication date the page declares (YYYY-MM-DD) or ''
    ("crawl_date", pa.string()),        # WARC-Date
    ("language_hint", pa.string()),     # <html lang> or Content-Language
    ("language", pa.string()),          # fastText lid.176
    ("language_score", pa.float32()),
    ("pii_email", pa.int32()),          # placeholders put in by PII redaction, per type
    ("pii_ip", pa.int32()),
    ("pii_phone", pa.int32()),
    ("pii_card", pa.int32()),
    ("duplicates_removed", pa.int32()),  # exact and near duplicates dedup removed in this document's favour
    ("decontaminated", pa.string()),     # decontam action `cut`: benchmarks whose n-grams were cut out, comma-separated
    ("quality_score", pa.float32()),     # P(reference-quality) from the fastText quality model, if it ran
    ("domain", pa.string()),             # news, reference, forum, blog, commerce, code, other (URL rules, classifier)
    ("repeat", pa.int32()),              # mixing: how many times the document counts (up-sampling), else null
    ("charset", pa.string()),           # the codec the HTML was decoded with
    ("warc_file", pa.string()),
    ("warc_record_id", pa.string()),
    ("warc_offset", pa.int64()),
])
REJECTED_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("stage", pa.string()),
                             ("reason", pa.string()), ("text", pa.string()), ("warc_file", pa.string()),
                             ("warc_record_id", pa.string()), ("warc_offset", pa.int64()),
                             ("duplicate_of", pa.int64())])     # dedup: node id of the document that stayed
PROGRESS_DIR = "_progress"


def shard_name(path: str) -> str:
    """A file-system-safe, collision-free output name for an input path."""
    stem = re.sub(r"(\.(warc|arc|wet|wat|gz))+$", "", path.rstrip("/").rsplit("/", 1)[-1])
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:80] or "input"
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def dataset_files(dataset_dir: str) -> list[str]:
    """The Parquet files of a curated dataset (its folder or its data/ folder), in path order: what readers of
    its documents read (a file of another kind in data/, a user's notes, is not one)."""
    for folder in (join(dataset_dir, "data"), dataset_dir):
        found = listed(folder, "*.parquet")
        if found:
            return found
    raise FileNotFoundError(f"no Parquet files in {dataset_dir} or {dataset_dir}/data")


def join(*parts: str) -> str:
    return FileSystems.join(*parts)


def listed(folder: str, pattern: str) -> list[str]:
    """The files in `folder` (local, gs://, s3://) whose names match `pattern` (`*.json`; `**`: every file at any
    depth), sorted. A local folder is taken as named: Beam's match reads the whole path as a glob, so under it
    a folder called `run[1]` would hold nothing."""
    if "://" in folder:
        return sorted(m.path for m in FileSystems.match([join(folder, pattern)])[0].metadata_list)
    root = Path(folder)
    if not root.is_dir():
        return []
    found = root.rglob("*") if pattern == "**" else root.glob(pattern)
    return sorted(join(folder, str(p.relative_to(root))) for p in found if p.is_file())


def remove(paths: list[str]) -> None:
    """Delete these files (local, gs://, s3://); local ones by their exact names (Beam's delete globs them)."""
    for path in paths:
        if "://" not in path:
            os.remove(path)
    remote = [path for path in paths if "://" in path]
    if remote:
        FileSystems.delete(remote)


def write_atomic(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see a half-written file."""
    _mkdirs(path.rsplit("/", 1)[0])
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(temporary) as fh:
        fh.write(data)
    if FileSystems.exists(path):
        remove([path])
    FileSystems.rename([temporary], [path])


def _parquet_bytes(rows: list[dict], schema: pa.Schema) -> bytes:
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema} for row in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _mkdirs(path: str) -> None:
    if "://" not in path:
        try:
            FileSystems.mkdirs(path)
        except OSError:
            pass    # exists


def file_funnel(file_items: list[dict]) -> dict:
    """The funnel of one input file from its items; `balanced` says whether the accounting identity holds."""
    skipped, dropped, errors = Counter(), defaultdict(Counter), Counter()
    chars = defaultdict(lambda: [0, 0])
    read_pages = read_errors = kept = 0
    for item in file_items:
        kind = item["kind"]
        if kind == items.TALLY:
            read_pages += item["pages"]
            read_errors += item["errors"]
            skipped.update(item["skipped"])
            continue
        if kind == items.DOC:
            kept += 1
        elif kind == items.DROPPED:
            dropped[item["stage"]][item["reason"]] += 1
        elif kind == items.ERROR:
            errors[item["reason"]] += 1
        for stage, chars_in, chars_out in item.get("trace", ()):
            chars[stage][0] += chars_in
            chars[stage][1] += chars_out
    records_in = read_pages + read_errors + sum(skipped.values())
    accounted = kept + sum(skipped.values()) + sum(sum(c.values()) for c in dropped.values()) + sum(errors.values())
    return {"records_in": records_in, "kept": kept, "skipped": dict(skipped),
            "dropped": {stage: dict(c) for stage, c in dropped.items()}, "errors": dict(errors),
            "chars": {stage: {"in": c[0], "out": c[1]} for stage, c in chars.items()},
            "balanced": records_in == accounted}


class WriteFileDoFn(beam.DoFn):
    """(input path, its items) → data/<name>.parquet, errors/, rejected/, then the progress marker."""

    def __init__(self, output_dir: str, write_rejected: bool, write_errors: bool, config_sha: str,
                 skip: frozenset[str] = frozenset()):
        self.output_dir, self.write_rejected, self.write_errors = output_dir, write_rejected, write_errors
        self.config_sha, self.skip = config_sha, skip

    def process(self, element):
        path, file_items = element
        if path in self.skip:      # read again only for a global stage (dedup); its outputs are complete
            return
        file_items = list(file_items)
        name = shard_name(path)
        funnel = file_funnel(file_items)
        if not funnel["balanced"]:
            log.error("accounting does not balance for %s: %s", path, funnel)
        written = []
        docs = sorted((i for i in file_items if i["kind"] == items.DOC), key=lambda d: d["warc_offset"])
        if docs:
            target = join(self.output_dir, "data", f"{name}.parquet")
            write_atomic(target, _parquet_bytes(docs, SCHEMA))
            written.append(f"data/{name}.parquet")
        errors = sorted((i for i in file_items if i["kind"] == items.ERROR), key=lambda e: e["warc_offset"])
        if errors and self.write_errors:
            lines = "".join(json.dumps({k: e.get(k) for k in ("warc_file", "warc_offset", "warc_record_id", "url",
                                                               "stage", "reason", "detail")}) + "\n"
                            for e in errors)
            write_atomic(join(self.output_dir, "errors", f"{name}.jsonl"), lines.encode())
            written.append(f"errors/{name}.jsonl")
        if self.write_rejected:
            by_stage = defaultdict(list)
            for item in file_items:
                if item["kind"] == items.DROPPED:
                    by_stage[item["stage"]].append(item)
            for stage, rows in sorted(by_stage.items()):
                rows.sort(key=lambda d: d["warc_offset"])
                write_atomic(join(self.output_dir, "rejected", stage, f"{name}.parquet"),
                             _parquet_bytes(rows, REJECTED_SCHEMA))
                written.append(f"rejected/{stage}/{name}.parquet")
        marker = {"input": path, "outputs": written, "config_sha": self.config_sha, **funnel,
                  "corpus": corpus.file_stats(docs)}
        write_atomic(join(self.output_dir, PROGRESS_DIR, f"{name}.json"), json.dumps(marker, indent=1).encode())
        yield marker


class WriteDataset(beam.PTransform):
    """Items → one Parquet shard per input file plus errors/, rejected/ and a progress marker per file."""

    def __init__(self, output_dir: str, write_rejected: bool = False, write_errors: bool = True,
                 config_sha: str = "", skip: frozenset[str] = frozenset()):
        super().__init__()
        self.output_dir, self.write_rejected, self.write_errors = output_dir, write_rejected, write_errors
        self.config_sha, self.skip = config_sha, frozenset(skip)

    def expand(self, pcoll):
        return (pcoll
                | "KeyByFile" >> beam.Map(lambda item: (item["warc_file"], item))
                | Measured("write/by_file")
                | "GroupByFile" >> beam.GroupByKey()
                | "WriteFile" >> beam.ParDo(WriteFileDoFn(self.output_dir, self.write_rejected, self.write_errors,
                                                         self.config_sha, self.skip)))


# ---------------------------------------------------------------------------------------------- the whole funnel

def progress_markers(output_dir: str) -> dict[str, dict]:
    """The progress markers curation wrote in OUT/_progress/: each one's path in OUT → its JSON (an input, the
    outputs written for it, the config's sha). A file that does not read as a marker, or is not named after its
    input, is none (that input is curated again: markers are written atomically); an output that would lead out of
    OUT is not one of its outputs (nothing follows it there)."""
    found = {}
    for path in listed(join(output_dir, PROGRESS_DIR), "*.json"):
        try:
            with FileSystems.open(path) as fh:
                marker = json.loads(fh.read())
        except (OSError, ValueError):
            continue
        name = path.rsplit("/", 1)[-1]
        if not (isinstance(marker, dict) and isinstance(marker.get("input"), str)
                and isinstance(marker.get("outputs"), list) and all(isinstance(o, str) for o in marker["outputs"])
                and name == f"{shard_name(marker['input'])}.json"):
            continue
        marker["outputs"] = [o for o in marker["outputs"] if not o.startswith("/") and ".." not in o.split("/")]
        found[f"{PROGRESS_DIR}/{name}"] = marker
    return found


def completed_inputs(output_dir: str, config_sha: str | None = None) -> dict[str, dict]:
    """Input path → progress marker, for inputs whose outputs are all present (and, if `config_sha` is
    given, that were written under that config)."""
    return {marker["input"]: marker for marker in progress_markers(output_dir).values()
            if (config_sha is None or marker.get("config_sha") == config_sha)
            and all(FileSystems.exists(join(output_dir, out)) for out in marker["outputs"])}


def total_funnel(markers: list[dict]) -> dict:
    """Sum of per-file funnels; `balanced` holds if every file balanced and the identity holds overall."""
    total = {"records_in": 0, "kept": 0, "skipped": Counter(), "dropped": defaultdict(Counter),
             "errors": Counter(), "chars": defaultdict(Counter), "files": len(markers)}
    for marker in markers:
        total["records_in"] += marker["records_in"]
        total["kept"] += marker["kept"]
        total["skipped"].update(marker["skipped"])
        total["errors"].update(marker["errors"])
        for stage, reasons in marker["dropped"].items():
            total["dropped"][stage].update(reasons)
        for stage, c in marker["chars"].items():
            total["chars"][stage].update(c)
    accounted = (total["kept"] + sum(total["skipped"].values()) + sum(total["errors"].values())
                 + sum(sum(c.values()) for c in total["dropped"].values()))
    with_corpus = [marker["corpus"] for marker in markers if "corpus" in marker]
    return {"records_in": total["records_in"], "kept": total["kept"],
            "skipped": dict(sorted(total["skipped"].items())),
            "dropped": {s: dict(sorted(c.items())) for s, c in total["dropped"].items()},
            "errors": dict(sorted(total["errors"].items())),
            "chars": {s: {"in": c["in"], "out": c["out"]} for s, c in total["chars"].items()},
            "files": total["files"],
            "balanced": accounted == total["records_in"] and all(m["balanced"] for m in markers),
            "corpus": {**corpus.merge(with_corpus), "files_without_statistics": len(markers) - len(with_corpus)}}


def format_funnel(funnel: dict, stages: list[str]) -> str:
    """The funnel as a plain-text table for the end of a run, stages in pipeline order."""
    rows = [("records in", funnel["records_in"], "")]
    for reason, n in funnel["skipped"].items():
        rows.append((f"  skipped: {reason}", n, ""))
    for reason, n in funnel["errors"].items():
        rows.append((f"  error: {reason}", n, ""))
    for stage in stages:
        reasons = funnel["dropped"].get(stage, {})
        c = funnel["chars"].get(stage)
        chars = f"chars in {c['in']:>13,}  out {c['out']:>13,}" if c and c["in"] else ""
        rows.append((f"  dropped at {stage}", sum(reasons.values()), chars))
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            rows.append((f"    {reason}", n, ""))
    rows.append(("kept", funnel["kept"], ""))
    width = max(len(r[0]) for r in rows)
    lines = [f"{label:<{width}}  {n:>9,}  {extra}".rstrip() for label, n, extra in rows]
    status = "holds" if funnel["balanced"] else "DOES NOT HOLD"
    lines.append(f"records in = kept + skipped + dropped + errors: {status}")
    return "\n".join(lines)
