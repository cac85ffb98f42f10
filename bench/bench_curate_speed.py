"""Wall time of `refinery curate` on the sample crawl against the floor measured in the same run.

The floor is plain `trafilatura.extract` over the same HTML pages (read beforehand, not timed): a sequential
loop divided by the cores the pipeline may use, and the same calls in a pool of that many processes. Goals
(issue #20): extraction only <= 1.1 x the pool's wall time, the default config <= 1.25 x. Runs curate twice:
extraction only (the plumbing) and the full default chain of filters.

Our extraction child evaluates trafilatura's pruning rules in Python (pipeline/fastxpath.py: the same elements,
less CPU), so a second pool runs the same calls with those rules installed: against it the ratio is what the
plumbing (reading, Beam, staging, writing) costs on its own.

The pipeline runs and the baselines alternate in rounds and medians are reported: on a shared 2-vCPU machine
the speed of the same loop drifts by tens of percent over minutes, so one of each is not a comparison.

    python bench/bench_curate_speed.py [--repeat R] [--limit-files N] [--workers N] [--config FILE ...]
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import trafilatura

from pages import read_pages, sample_crawl_paths
from pipeline.warc import Page


def _extract(page: tuple[bytes, str]) -> bool:
    return trafilatura.extract(page[0], url=page[1], favor_precision=True, include_comments=False) is not None


def _quiet(fast: bool = False) -> None:
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    if fast:
        from pipeline import fastxpath
        fastxpath.install()


def parallel_floor(pages: list[Page], workers: int, fast: bool = False) -> float:
    """Plain trafilatura.extract over the pages in `workers` processes: what these cores do without us (with
    fast: with pipeline.fastxpath's rules, as our extraction child runs them)."""
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_quiet, initargs=(fast,)) as pool:
        pool.map(_extract, [(b"<html><body><p>warm up</p></body></html>", None)] * workers)
        started = time.perf_counter()
        pool.map(_extract, [(p.body, p.url) for p in pages], chunksize=10)
        return time.perf_counter() - started


def run_curate(paths: list[str], config: str, workers: int) -> tuple[float, dict]:
    output = tempfile.mkdtemp(prefix="bench-curate-")
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.app.cli", "curate", "--input", ",".join(paths), "--output", output,
                        "--config", config, "--no-progress", f"--direct_num_workers={workers}"],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        with open(os.path.join(output, "stats.json")) as fh:
            return wall, json.load(fh)
    finally:
        shutil.rmtree(output, ignore_errors=True)


def sequential(pages: list[Page]) -> float:
    started = time.perf_counter()
    for page in pages:
        trafilatura.extract(page.body, url=page.url, favor_precision=True, include_comments=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-files", type=int, default=None, help="use only the first N WARC files")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="pipeline workers (default: cores)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each round runs every measurement once, in turn, and medians are reported "
                             "(this machine's speed drifts by tens of percent over minutes)")
    parser.add_argument("--config", action="append", default=[],
                        help="run curate with this config (repeatable; default: configs/extract-only.yaml and "
                             "configs/sample.yaml)")
    args = parser.parse_args()
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    paths = sample_crawl_paths()[:args.limit_files]
    pages = read_pages(paths)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    configs = args.config or [os.path.join(root, "configs/extract-only.yaml"), os.path.join(root, "configs/sample.yaml")]

    times = {"sequential": [], "pool": [], "pool_fastxpath": [], **{c: [] for c in configs}}
    kept = {}
    for round_ in range(args.repeat):
        for config in configs:
            wall, stats = run_curate(paths, config, args.workers)
            times[config].append(wall)
            kept[config] = (stats["kept"], stats["balanced"])
        times["sequential"].append(sequential(pages))
        times["pool"].append(parallel_floor(pages, args.workers))
        times["pool_fastxpath"].append(parallel_floor(pages, args.workers, fast=True))
        print(f"round {round_ + 1}: " + ", ".join(f"{os.path.basename(k)} {v[-1]:.1f} s" for k, v in times.items()),
              flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    floor_s = median["sequential"] / args.workers

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, trafilatura {trafilatura.__version__}; medians of {args.repeat}")
    print(f"pages: {len(pages)} from {len(paths)} WARC files")
    print(f"trafilatura.extract sequential: {median['sequential']:.1f} s = "
          f"{len(pages) / median['sequential']:.1f} pages/s per core; floor (/ {args.workers} workers) {floor_s:.1f} s")
    print(f"plain trafilatura.extract in a pool of {args.workers} processes: {median['pool']:.1f} s "
          f"(speed-up {median['sequential'] / median['pool']:.2f} on {args.workers} cores)")
    print(f"the same pool with pipeline.fastxpath installed: {median['pool_fastxpath']:.1f} s "
          f"({median['pool_fastxpath'] / median['pool']:.2f} of the plain pool)")
    for config in configs:
        wall = median[config]
        print(f"refinery curate --config {os.path.basename(config)}: {wall:.1f} s wall = {len(pages) / wall:.1f} "
              f"pages/s, kept {kept[config][0]} (identity {'holds' if kept[config][1] else 'FAILS'}); "
              f"ratio to floor {wall / floor_s:.2f}, to the process pool {wall / median['pool']:.2f}, "
              f"to the pool with fastxpath {wall / median['pool_fastxpath']:.2f}")


if __name__ == "__main__":
    main()
