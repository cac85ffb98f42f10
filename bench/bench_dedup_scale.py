"""Dedup at scale: N synthetic documents with text through URL, exact and MinHash dedup as curation runs them,
on the DirectRunner (multi_processing, 2 workers): wall time, peak RSS, bytes per shuffle, and what was removed.

Documents are made inside the pipeline, 1,000 per chunk, each with 250 words drawn from a 5,000-word vocabulary
(~1.9 KB of text); of every 20, one is an exact copy of another's text under a new URL, one a near copy of it
(2 % of its words replaced), one a later capture of a third one's URL. The same documents go through this checkout's
dedup or, with `--tree`, another checkout's (before staging, dedup grouped the documents themselves); the
counts removed must agree.

    python bench/bench_dedup_scale.py --docs 1000000
    python bench/bench_dedup_scale.py --docs 1000000 --tree ../older-checkout
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("REFINERY_TREE") or str(ROOT))

PER_CHUNK, WORDS, VOCABULARY = 1000, 250, 5000


def vocabulary() -> list[str]:
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(3, 10))) for _ in range(VOCABULARY)]


def text_of(i: int, words: list[str]) -> str:
    rng = np.random.default_rng(i)
    return " ".join(words[k] for k in rng.integers(0, VOCABULARY, size=WORDS))


def chunk_docs(chunk: int, words: list[str]):
    """The documents of one chunk and its tally."""
    for i in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        kind = i % 20
        url = f"https://site{i % 997}.example/page/{i}"
        if kind == 17:                 # an exact copy of the text of i - 17, elsewhere
            text = text_of(i - 17, words)
        elif kind == 18:               # a near copy of i - 18: 2 % of its words replaced
            tokens = text_of(i - 18, words).split()
            rng = np.random.default_rng(i)
            for k in rng.choice(WORDS, size=WORDS // 50, replace=False):
                tokens[k] = words[rng.integers(VOCABULARY)]
            text = " ".join(tokens)
        elif kind == 19:               # a later capture of the URL of i - 10, with its own text
            url, text = f"https://site{(i - 10) % 997}.example/page/{i - 10}", text_of(i, words)
        else:
            text = text_of(i, words)
        yield {"kind": "doc", "id": f"<urn:uuid:{i:012d}>", "url": url, "warc_file": f"synthetic-{chunk // 100}.warc.gz",
               "warc_record_id": f"<urn:uuid:{i:012d}>", "warc_offset": i, "chunk": chunk,
               "crawl_date": "2024-06-01T00:00:00Z" if kind == 19 else "2024-05-01T00:00:00Z",
               "text": text, "language": "en", "trace": []}
    yield {"kind": "tally", "warc_file": f"synthetic-{chunk // 100}.warc.gz", "chunk": chunk, "end": 0, "size": 0,
           "pages": PER_CHUNK, "errors": 0, "skipped": {}}


def run(docs: int, workdir: str) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from filters.dedup import DedupConfig
    from pipeline import dedup
    words = vocabulary()
    stages = [dedup.UrlDedup(), dedup.ExactDedup(), dedup.MinHashDedup(DedupConfig())]
    options = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    out = os.path.join(workdir, "counts.jsonl")
    started = time.monotonic()
    pipeline = beam.Pipeline(options=options)
    items = (pipeline
             | beam.Create(range(docs // PER_CHUNK))
             | beam.Reshuffle()
             | beam.FlatMap(chunk_docs, words))
    if hasattr(dedup, "DecideByKeys"):           # staged: keys and verdicts only
        from pipeline.staging import StageChunks
        work = os.path.join(workdir, "work")
        items = (items | StageChunks(work, dedup.key_spec(stages)) | dedup.DecideByKeys(stages, work, False))
    else:                                        # before: each stage groups the documents
        for stage in stages:
            items = items | stage.name >> stage
    (items
     | beam.Map(lambda item: (f"{item['stage']}/{item['reason']}" if item["kind"] == "dropped" else item["kind"], 1))
     | beam.CombinePerKey(sum)
     | beam.Map(json.dumps)
     | beam.io.WriteToText(out, shard_name_template=""))
    result = pipeline.run()
    result.wait_until_finish()
    wall = time.monotonic() - started
    counts = dict(json.loads(line) for line in open(out))
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace("refinery"))
    shuffled = {c.key.metric.name.removeprefix("shuffle/"): c.committed or c.attempted
                for c in query["counters"] if c.key.metric.name.startswith("shuffle/")}
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return {"docs": docs, "wall_s": round(wall, 1), "docs_per_s": round(docs / wall),
            "peak_rss_mib": round(peak), "counts": dict(sorted(counts.items())), "shuffle_bytes": shuffled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--tree", type=Path, help="run another checkout's dedup on the same documents")
    args = parser.parse_args()
    if args.docs < PER_CHUNK or args.docs % PER_CHUNK:
        parser.error(f"--docs must be a positive multiple of {PER_CHUNK}")
    if args.tree and not os.environ.get("REFINERY_TREE"):
        env = {**os.environ, "REFINERY_TREE": str(args.tree.resolve()), "PYTHONPATH": str(args.tree.resolve())}
        raise SystemExit(subprocess.call([sys.executable, __file__, "--docs", str(args.docs)], env=env,
                                         cwd=args.tree.resolve()))
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(run(args.docs, workdir)))


if __name__ == "__main__":
    main()
