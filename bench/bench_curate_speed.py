"""Wall time of `refinery curate` on the sample crawl against the floor measured in the same run.

The floor is a sequential loop of plain `trafilatura.extract` over the same HTML pages (read beforehand, not
timed), divided by the cores the pipeline may use. Goal: pipeline wall time <= 1.3 x floor. Runs curate twice:
extraction only (the plumbing) and the full default chain of filters.

    python bench/bench_curate_speed.py [--limit-files N] [--workers N] [--config FILE ...]
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import trafilatura

from pipeline.shared_data import shared_data_dir
from pipeline.warc import Page, ReadConfig, plan_chunks, read_chunk


def read_pages(paths: list[str]) -> list[Page]:
    pages = []
    for path in paths:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
        for chunk in plan_chunks(path, os.path.getsize(path), head, 1 << 40):
            pages.extend(o for o in read_chunk(chunk, ReadConfig()) if isinstance(o, Page))
    return pages


def _extract(page: tuple[bytes, str]) -> bool:
    return trafilatura.extract(page[0], url=page[1], favor_precision=True, include_comments=False) is not None


def _quiet() -> None:
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)


def parallel_floor(pages: list[Page], workers: int) -> float:
    """Plain trafilatura.extract over the pages in `workers` processes: what these cores do without us."""
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_quiet) as pool:
        pool.map(_extract, [(b"<html><body><p>warm up</p></body></html>", None)] * workers)
        started = time.perf_counter()
        pool.map(_extract, [(p.body, p.url) for p in pages], chunksize=10)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-files", type=int, default=None, help="use only the first N WARC files")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="pipeline workers (default: cores)")
    parser.add_argument("--config", action="append", default=[],
                        help="run curate with this config (repeatable; default: configs/extract-only.yaml and "
                             "configs/sample.yaml)")
    args = parser.parse_args()
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    paths = sorted(glob.glob(str(shared_data_dir() / "warc/sample-crawl/*.warc.gz")))[:args.limit_files]
    pages = read_pages(paths)

    started = time.perf_counter()
    for page in pages:
        trafilatura.extract(page.body, url=page.url, favor_precision=True, include_comments=False)
    trafilatura_s = time.perf_counter() - started
    floor_s = trafilatura_s / args.workers
    parallel_s = parallel_floor(pages, args.workers)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, trafilatura {trafilatura.__version__}")
    print(f"pages: {len(pages)} from {len(paths)} WARC files")
    print(f"trafilatura.extract sequential: {trafilatura_s:.1f} s = {len(pages) / trafilatura_s:.1f} pages/s per core")
    print(f"floor (sequential / {args.workers} workers): {floor_s:.1f} s")
    print(f"plain trafilatura.extract in a pool of {args.workers} processes: {parallel_s:.1f} s "
          f"(speed-up {trafilatura_s / parallel_s:.2f} on {args.workers} cores)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for config in args.config or [os.path.join(root, "configs/extract-only.yaml"), os.path.join(root, "configs/sample.yaml")]:
        output = tempfile.mkdtemp(prefix="bench-curate-")
        try:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline.cli", "curate", "--input", ",".join(paths),
                            "--output", output, "--config", config, "--no-progress",
                            f"--direct_num_workers={args.workers}"], check=True, stdout=subprocess.DEVNULL)
            pipeline_s = time.perf_counter() - started
            with open(os.path.join(output, "stats.json")) as fh:
                stats = json.load(fh)
        finally:
            shutil.rmtree(output, ignore_errors=True)
        print(f"refinery curate --config {os.path.basename(config)}: {pipeline_s:.1f} s wall = "
              f"{len(pages) / pipeline_s:.1f} pages/s, kept {stats['kept']} "
              f"(identity {'holds' if stats['balanced'] else 'FAILS'}); ratio to floor {pipeline_s / floor_s:.2f}"
              f" (goal <= 1.30), to the process pool {pipeline_s / parallel_s:.2f}")


if __name__ == "__main__":
    main()
