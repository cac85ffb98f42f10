"""`refinery tokenize`: a curated dataset → token shards, one set per domain, in Beam.

```
refinery tokenize --input out/sample --tokenizer out/tokenizer --output out/tokens
```
Each Parquet file of the dataset is one unit of work: its documents are encoded (mixing's `repeat` copies
written out), grouped by `domain`, and written as `OUT/<domain>/<file>.bin` plus `<file>.idx.parquet`
(training/shards.py has the format). `OUT/tokens.json` sums tokens and documents per domain; `OUT/tokenizer/`
holds a copy of the tokenizer, so training needs only OUT.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.dataset import dataset_files, join, remove, write_atomic
from pipeline.runner import quiet_workers, runner_options
from training.artifacts import FolderLock, prepare_output, safe_name, sha256_file, write_manifest
from training.shards import shard_bytes
from training.tokenizer import CONFIG_FILE, MODEL_FILE, Tokenizer

SUMMARIES = "_shards"     # each shard's figures, read back once the job is done (then removed)
_COLUMNS = ("id", "text", "domain", "repeat", "warc_file", "warc_record_id", "warc_offset")


def _stem(path: str) -> str:
    """A dataset file's name without .parquet: its shards' names in each domain's folder."""
    return path.rsplit("/", 1)[-1].removesuffix(".parquet")


def _summary_path(output_dir: str, domain: str, stem: str) -> str:
    """Where the figures of one shard wait for the job's end (read back, then removed)."""
    return join(output_dir, SUMMARIES, domain, f"{stem}.json")


class TokenizeFileDoFn(beam.DoFn):
    def __init__(self, tokenizer_dir: str, output_dir: str):
        self.tokenizer_dir, self.output_dir = tokenizer_dir, output_dir

    def setup(self):
        self.tokenizer = Tokenizer(self.tokenizer_dir)

    def process(self, path: str):

        with FileSystems.open(path) as fh:
            table = pq.read_table(io.BytesIO(fh.read()))
        rows = table.to_pylist()
        by_domain = defaultdict(list)
        for row in rows:
            by_domain[safe_name(row.get("domain") or "all", f"domain label in {path}")].append(row)
        stem = _stem(path)
        for domain, docs in sorted(by_domain.items()):
            encoded = self.tokenizer.encode_batch([d["text"] for d in docs])
            sequences, index, start = [], [], 0
            for doc, ids in zip(docs, encoded):
                for copy in range(max(1, doc.get("repeat") or 1)):
                    sequences.append(ids)
                    index.append({"start": start, "length": len(ids), "copy": copy,
                                  **{k: doc.get(k) for k in ("id", "warc_file", "warc_record_id", "warc_offset")}})
                    start += len(ids) + 1                    # + EOS
            data = shard_bytes(sequences, self.tokenizer.eos_id, self.tokenizer.vocab_size, self.tokenizer.sha256)
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(index), buffer, compression="zstd")
            write_atomic(join(self.output_dir, domain, f"{stem}.idx.parquet"), buffer.getvalue())
            write_atomic(join(self.output_dir, domain, f"{stem}.bin"), data)      # the shard last: it marks done
            summary = {"domain": domain, "file": f"{domain}/{stem}.bin", "tokens": start,
                       "documents": len(docs), "sequences": len(sequences)}
            write_atomic(_summary_path(self.output_dir, domain, stem), json.dumps(summary).encode())


class TokenizeDataset(beam.PTransform):
    def __init__(self, files: list[str], tokenizer_dir: str, output_dir: str):
        super().__init__()
        self.files, self.tokenizer_dir, self.output_dir = files, tokenizer_dir, output_dir

    def expand(self, pbegin):
        return (pbegin
                | "Files" >> beam.Create(self.files)
                | "Spread" >> beam.Reshuffle()
                | "Tokenize" >> beam.ParDo(TokenizeFileDoFn(self.tokenizer_dir, self.output_dir)))


def domains_of(files: list[str]) -> list[str]:
    """The domain labels of the dataset's files, each checked to be a folder name that stays in the output; a file
    that is not Parquet, or has no text column, is named here, before the job."""
    found = set()
    for path in files:
        with FileSystems.open(path) as fh:
            data = io.BytesIO(fh.read())
        try:
            schema = pq.read_schema(data)
            labels = set(pq.read_table(data, columns=["domain"]).column("domain").to_pylist()) \
                if "domain" in schema.names else {None}
        except (OSError, ValueError, pa.ArrowException) as e:
            raise ValueError(f"{path}: not a Parquet file ({type(e).__name__}: {str(e).splitlines()[0][:120]})") \
                from None
        if "text" not in schema.names:
            raise ValueError(f"{path}: no text column (it has {', '.join(schema.names) or 'none'}): not a curated "
                             f"dataset's file")
        for value in labels:
            found.add(safe_name(value or "all", f"domain label in {path}"))
    return sorted(found)


def tokenize(dataset_dir: str, tokenizer_dir: str, output_dir: str, beam_args: list[str] = (),
             overwrite: bool = False) -> dict:
    """Run the job; returns (and writes as OUT/tokens.json) tokens and documents per domain, and OUT/manifest.json
    over every file it wrote (shards, indexes, the tokenizer's copy) with the tokenizer's and dataset's sha256."""
    started = time.monotonic()
    tokenizer = Tokenizer(tokenizer_dir)          # fail before the job if it is missing
    files = dataset_files(dataset_dir)
    domains = domains_of(files)                   # a label like ../../x fails here, before anything is written
    local = "://" not in output_dir
    if local:
        prepare_output(output_dir, "tokens", [dataset_dir, tokenizer_dir], overwrite=overwrite)
    with FolderLock(output_dir) if local else contextlib.nullcontext():
        with quiet_workers(), beam.Pipeline(options=runner_options(list(beam_args))) as p:
            _ = p | "Tokenize" >> TokenizeDataset(files, tokenizer_dir, output_dir)
        # the figures this job wrote, by name: never a file of that folder it did not write
        summaries = [path for path in (_summary_path(output_dir, d, _stem(f)) for d in domains for f in files)
                     if FileSystems.exists(path)]
        shards = []
        for path in summaries:
            with FileSystems.open(path) as fh:
                shards.append(json.loads(fh.read()))
        shards.sort(key=lambda s: s["file"])
        remove(summaries)
        if local:
            for folder in sorted({Path(p).parent for p in summaries}) + [Path(output_dir) / SUMMARIES]:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        domains = defaultdict(lambda: {"tokens": 0, "documents": 0, "sequences": 0, "shards": 0})
        for shard in shards:
            entry = domains[shard["domain"]]
            for key in ("tokens", "documents", "sequences"):
                entry[key] += shard[key]
            entry["shards"] += 1
        result = {"dataset": dataset_dir, "tokenizer": tokenizer_dir, "tokenizer_sha256": tokenizer.sha256,
                  "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                  "domains": dict(sorted(domains.items())), "tokens": sum(d["tokens"] for d in domains.values()),
                  "shards": [s["file"] for s in shards], "wall_s": round(time.monotonic() - started, 1)}
        # a copy of the tokenizer beside the shards, so training and evaluation need only this folder
        copied = []
        for name in (MODEL_FILE, CONFIG_FILE):
            source = Path(tokenizer_dir) / name
            if source.is_file():
                write_atomic(join(output_dir, "tokenizer", name), source.read_bytes())
                copied.append(f"tokenizer/{name}")
        write_atomic(join(output_dir, "tokens.json"), json.dumps(result, indent=1).encode())
        if local:
            written = [s["file"] for s in shards] + [s["file"].removesuffix(".bin") + ".idx.parquet" for s in shards]
            write_manifest(output_dir, "tokens", [*written, *copied, "tokens.json"],
                           provenance={"tokenizer_sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size,
                                       "eos_id": tokenizer.eos_id, "dataset": dataset_dir,
                                       "dataset_sha256": dataset_fingerprint(dataset_dir)})
    return result


def dataset_fingerprint(dataset_dir: str) -> str | None:
    """The sha256 of the dataset's manifest (published) or its stats.json: what the tokens were made from."""
    for name in ("manifest.json", "stats.json"):
        path = Path(dataset_dir) / name
        if path.is_file():
            return sha256_file(path)
    return None
