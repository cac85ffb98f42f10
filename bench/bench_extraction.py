"""Extraction quality of `refinery curate` against gold main texts, next to plain `trafilatura.extract`.

Both read the same sample-crawl records: ours through the whole pipeline (WARC reader, charset decoding, the
time-bounded extractor, the Parquet writer), the baseline by calling `trafilatura.extract` on the raw payload
bytes with the same settings (favor_precision, no comments). Gold texts: the scrapinghub article-extraction
benchmark, CleanEval (final + dev) and the htmltotext benchmark, linked by the sample crawl's manifest.jsonl.

Scores are token-level (lower-cased word tokens, bag overlap) precision, recall and F1 per page, averaged over
pages (the scrapinghub benchmark's convention); a page with no output scores 0 recall.

    python bench/bench_extraction.py [--dataset DIR]    # DIR: an existing `refinery curate` output to reuse
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter, defaultdict

import pyarrow.dataset as pads
import trafilatura

from pipeline.shared_data import shared_data_dir
from pages import read_pages, sample_crawl_paths

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CLEANEVAL_MARK = re.compile(r"<(?:p|h|l)>", re.I)
SOURCES = ("scrapinghub-article-extraction-benchmark", "cleaneval-final", "cleaneval-dev",
           "htmltotext-en", "htmltotext-de", "htmltotext-hr", "htmltotext-zh")


def tokens(text: str) -> Counter:
    return Counter(t.lower() for t in _TOKEN.findall(text or ""))


def prf(predicted: str, gold: str) -> tuple[float, float, float]:
    p, g = tokens(predicted), tokens(gold)
    overlap = sum((p & g).values())
    precision = overlap / sum(p.values()) if p else 0.0
    recall = overlap / sum(g.values()) if g else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def load_gold(data, manifest: list[dict]) -> dict[str, str]:
    """record id → gold main text, for the benchmark sources above."""
    gold, tars = {}, {}
    scrapinghub = json.loads((data / "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json")
                             .read_text())
    for row in manifest:
        source, ref, rid = row["source"], row["gold"], row["record_id"].strip("<>").split(":")[-1]
        if source.startswith("scrapinghub"):
            gold[rid] = scrapinghub[ref["key"]]["articleBody"]
        elif source.startswith("cleaneval"):
            archive = tars.setdefault(ref["file"], tarfile.open(data / ref["file"]))
            text = archive.extractfile(ref["key"]).read().decode("utf-8", "replace")
            gold[rid] = _CLEANEVAL_MARK.sub(" ", text.split("\n", 1)[1] if text.startswith("URL:") else text)
        elif source.startswith("htmltotext"):
            gold[rid] = (data / ref["file"]).read_text(encoding="utf-8", errors="replace")
    return gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", help="reuse this `refinery curate` output of the sample crawl")
    args = parser.parse_args()
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    data = shared_data_dir()
    manifest = [json.loads(line) for line in open(data / "warc/sample-crawl/manifest.jsonl")]
    manifest = [m for m in manifest if m["source"] in SOURCES]
    source_of = {m["record_id"].strip("<>").split(":")[-1]: m["source"] for m in manifest}
    gold = load_gold(data, manifest)

    output = args.dataset
    if output is None:
        output = tempfile.mkdtemp(prefix="bench-extraction-")
        subprocess.run([sys.executable, "-m", "pipeline.app.cli", "curate", "--input",
                        str(data / "warc/sample-crawl/*.warc.gz"), "--output", output, "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
    table = pads.dataset(os.path.join(output, "data"), format="parquet").to_table(columns=["warc_record_id", "text"])
    ours = dict(zip(table.column("warc_record_id").to_pylist(), table.column("text").to_pylist()))

    plain = {page.record_id: trafilatura.extract(page.body, url=page.url, favor_precision=True,
                                                 include_comments=False) or ""
             for page in read_pages(sample_crawl_paths()) if page.record_id in gold}

    scores = defaultdict(lambda: {"ours": [], "plain": []})
    for rid, text in gold.items():
        group = "htmltotext" if source_of[rid].startswith("htmltotext") else source_of[rid]
        for name, system in (("ours", ours), ("plain", plain)):
            scores[group][name].append(prf(system.get(rid, ""), text))
            scores["all"][name].append(scores[group][name][-1])
    print(f"{'gold set':<42} {'pages':>5}  {'ours P / R / F1':>20}  {'plain trafilatura P / R / F1':>28}  dF1")
    for group in [g for g in scores if g != "all"] + ["all"]:
        row = [f"{group:<42} {len(scores[group]['ours']):>5}"]
        means = {}
        for name in ("ours", "plain"):
            values = scores[group][name]
            means[name] = [sum(v[i] for v in values) / len(values) for i in range(3)]
            row.append(f"{means[name][0]:.3f} / {means[name][1]:.3f} / {means[name][2]:.3f}")
        print(f"{row[0]}  {row[1]:>20}  {row[2]:>28}  {means['ours'][2] - means['plain'][2]:+.3f}")
    differing = sum(ours.get(rid, "") != plain.get(rid, "") for rid in gold)
    print(f"pages where our text differs from plain trafilatura: {differing} of {len(gold)}")


if __name__ == "__main__":
    main()
