"""What `refinery curate` puts through each shuffle, per document, on the sample crawl (or any input).

Every shuffle of the curation graph has a counting step in front of it (`pipeline/stage.py` `Measured`): with
REFINERY_SHUFFLE_BYTES=1 it adds up the elements going in and their size under Beam's FastPrimitivesCoder
(the coder the DirectRunner and Dataflow use for these untyped elements). The run here is the default config
in a child process; the table gives bytes per page read and per document entering dedup, and the largest
process's peak RSS (the job's and its workers').

    python bench/bench_shuffle.py
    python bench/bench_shuffle.py --tree ../other-checkout    # a checkout with the same counting steps
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.shared_data import shared_data_dir      # noqa: E402

CHILD = """
import json, sys
from pipeline.config import load_config
from pipeline.curate import curate, expand_inputs
result = curate(expand_inputs([sys.argv[1]]), sys.argv[2], load_config(None), progress=False)
print("COUNTERS " + json.dumps(result.counters))
"""


def measure(tree: Path, inputs: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "REFINERY_SHUFFLE_BYTES": "1", "PYTHONPATH": str(tree)}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", CHILD, inputs, f"{tmp}/out"], cwd=tree, env=env,
                              capture_output=True, text=True)
        wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"curate failed in {tree}:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("COUNTERS "))
    counters = json.loads(line.removeprefix("COUNTERS "))
    return {"counters": counters, "wall_s": wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def table(result: dict) -> tuple[list[tuple], dict]:
    counters = result["counters"]
    pages = counters["read/pages"]
    # the documents staged (this checkout), or what the last per-document stage kept (a checkout before staging)
    into_dedup = counters.get("stage/docs") or counters.get("pii/kept")
    names = sorted({k.removeprefix("shuffle/").rsplit("/", 1)[0] for k in counters if k.startswith("shuffle/")})
    rows = []
    for name in names:
        size, n = counters.get(f"shuffle/{name}/bytes", 0), counters.get(f"shuffle/{name}/elements", 0)
        rows.append((name, n, size, size / pages, size / into_dedup))
    before_write = sum(r[2] for r in rows if r[0] != "write/by_file")
    summary = {"pages": pages, "into_dedup": into_dedup, "kept": counters.get("mix/kept"),
               "bytes_before_write_per_dedup_doc": round(before_write / into_dedup),
               "write_bytes_per_dedup_doc": round(sum(r[2] for r in rows if r[0] == "write/by_file") / into_dedup),
               "wall_s": round(result["wall_s"], 1), "peak_rss_mb": round(result["peak_rss_mb"])}
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--input", default=str(shared_data_dir() / "warc/sample-crawl/*.warc.gz"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows, summary = table(measure(args.tree.resolve(), args.input))
    print(f"{'shuffle':<28} {'elements':>10} {'bytes':>13} {'B/page':>8} {'B/doc into dedup':>17}")
    for name, n, size, per_page, per_doc in rows:
        print(f"{name:<28} {n:>10,} {size:>13,} {per_page:>8,.0f} {per_doc:>17,.0f}")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
