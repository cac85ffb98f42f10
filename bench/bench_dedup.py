"""Deduplication: signature speed against datasketch, detection against the S-curve, shuffle bytes, and scale.

1. signatures: documents/s of our vectorised signature against datasketch `MinHash.update` called per shingle
   and `MinHash.update_batch`, on the same texts (the scrapinghub article bodies), same shingles, same
   112 permutations, in this process. Each side pays for its own shingling.
2. planted: every article with one (then three) mutated copies under other URLs (word-edit rates set to
   spread the 5-gram Jaccard over 0.2-1), through `MinHashDedup` on the DirectRunner with and without the signature check;
   a pair counts as detected when both end with the same survivor; detection rate per Jaccard bin against
   the theoretical S-curve, recall at J >= 0.8 and precision
   (a removal whose true J with its survivor is < 0.6 is a false positive). Writes docs/img/dedup-s-curve.png.
3. shuffle: bytes per document the MinHash stage puts through the shuffle (Beam's own coder on the elements;
   bench/bench_shuffle.py measures every shuffle of a whole curate run).
4. scale: N synthetic documents' band keys (planted clusters) through bucket grouping and connected components
   on the DirectRunner: wall time and peak RSS of the process and its workers.

    python bench/bench_dedup.py                       # 1-3
    python bench/bench_dedup.py --scale 1000000       # 4 as well (takes a while)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filters import minhash                                    # noqa: E402
from filters.dedup import DedupConfig                           # noqa: E402
from pipeline.shared_data import shared_data_dir                # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def articles() -> list[str]:
    truth = json.loads((shared_data_dir() / "extraction/scrapinghub-article-extraction-benchmark/"
                        "ground-truth.json").read_text())
    return [v["articleBody"] for v in truth.values() if len(v["articleBody"].split()) >= 50]


# ---------------------------------------------------------------------------------------------- 1. signatures

def word_shingles(text: str, n: int = 5) -> list[bytes]:
    words = minhash.normalize(text).split()
    return [" ".join(words[i:i + n]).encode() for i in range(max(1, len(words) - n + 1))]


def bench_signatures(texts: list[str], rounds: int) -> dict:
    """Docs/s of each method: the methods take turns over the same texts in each round; medians are reported."""
    from datasketch import MinHash

    def ours(text):
        minhash.signature(minhash.shingle_hashes(text), 112, 1)

    def batch(text):
        MinHash(num_perm=112, seed=1).update_batch(word_shingles(text))

    def per_shingle(text):
        m = MinHash(num_perm=112, seed=1)
        for shingle in word_shingles(text):
            m.update(shingle)

    methods = {"ours (numpy, all shingles at once)": ours, "datasketch update_batch": batch,
               "datasketch update per shingle": per_shingle}
    seconds = {name: [] for name in methods}
    for _ in range(rounds):
        for name, method in methods.items():
            started = time.perf_counter()
            for text in texts:
                method(text)
            seconds[name].append(time.perf_counter() - started)
    rates = {name: len(texts) / float(np.median(s)) for name, s in seconds.items()}
    words = sum(len(t.split()) for t in texts)
    print(f"\n## signatures: {len(texts)} articles, {words / len(texts):.0f} words each on average, "
          f"112 permutations, 1 core, median of {rounds} rounds")
    mine = rates["ours (numpy, all shingles at once)"]
    for name, rate in rates.items():
        print(f"  {name:<38} {rate:>9,.0f} docs/s   ours is {mine / rate:5.1f}x")
    return rates


# ---------------------------------------------------------------------------------------------- 2. planted

def mutate(text: str, rate: float, rng: random.Random) -> str:
    words, out = text.split(), []
    for word in words:
        if rng.random() >= rate:
            out.append(word)
        elif (edit := rng.random()) < 0.6:
            out.append(rng.choice(words))
        elif edit < 0.8:
            out.extend((word, rng.choice(words)))
    return " ".join(out)


def ngrams(text: str) -> set:
    words = minhash.normalize(text).split()
    return set(zip(*(words[i:] for i in range(5))))


def true_jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def planted_docs(texts: list[str], copies: int, seed: int = 11):
    rng = random.Random(seed)
    docs, pairs = [], []
    make = lambda i, text, url: {"kind": "doc", "id": f"<urn:uuid:{i:08d}>", "url": url, "warc_file": "planted",
                                 "warc_record_id": f"<urn:uuid:{i:08d}>", "warc_offset": i,
                                 "crawl_date": "2024-05-01", "text": text, "language": "en", "trace": []}
    for text in texts:
        original = make(len(docs), text, f"https://news.example/{len(docs)}")
        docs.append(original)
        for _ in range(copies):
            target = rng.uniform(0.2, 1.0)
            rate = 1 - (2 * target / (1 + target)) ** 0.2
            copy = make(len(docs), mutate(text, rate, rng), f"https://mirror{len(docs)}.example/")
            docs.append(copy)
            pairs.append((original["id"], copy["id"]))
    return docs, pairs


def run_dedup(docs: list[dict], cfg: DedupConfig, workdir: str) -> list[dict]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.dedup import DecideByKeys, MinHashDedup, key_spec
    from pipeline.staging import StageChunks
    out, work = os.path.join(workdir, "out.jsonl"), os.path.join(workdir, "work")
    stages = [MinHashDedup(cfg).keeping_rejected(True)]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        (p | beam.Create(docs) | StageChunks(work, key_spec(stages)) | DecideByKeys(stages, work, True)
         | beam.Map(json.dumps) | beam.io.WriteToText(out, shard_name_template=""))
    return [json.loads(line) for line in open(out)]


def planted_configs() -> list[tuple[str, DedupConfig]]:
    default = DedupConfig().verify_threshold
    configs = [("FineWeb 14x8, no check", DedupConfig(verify_threshold=0.0))]
    configs += [(f"14x8 + signature check >= {v}" + (" (default)" if v == default else ""),
                 DedupConfig(verify_threshold=v)) for v in sorted({0.6, 0.65, 0.7, default})]
    return configs


def run_planted(texts: list[str], copies: int, seeds: list[int]) -> dict:
    """Per config: (J, detected) per pair over all seeds, removals and false positives."""
    results = {}
    for seed in seeds:
        docs, pairs = planted_docs(texts, copies, seed)
        grams = {d["id"]: ngrams(d["text"]) for d in docs}
        node = {d["id"]: minhash.node_id(d["id"], d["warc_file"]) for d in docs}
        node_grams = {node[i]: g for i, g in grams.items()}
        truth = [(a, b, true_jaccard(grams[a], grams[b])) for a, b in pairs]
        for label, cfg in planted_configs():
            with tempfile.TemporaryDirectory() as workdir:
                out = run_dedup(docs, cfg, workdir)
            removed = {i["id"]: i for i in out if i["kind"] == "dropped"}
            cluster = lambda i: removed[i]["duplicate_of"] if i in removed else node[i]    # its survivor
            r = results.setdefault(label, {"detected": [], "removed": 0, "false": 0})
            r["detected"] += [(j, cluster(a) == cluster(b)) for a, b, j in truth]
            r["removed"] += len(removed)
            r["false"] += sum(true_jaccard(grams[x["id"]], node_grams[x["duplicate_of"]]) < 0.6
                              for x in removed.values())
    for r in results.values():
        high = [hit for j, hit in r["detected"] if j >= 0.8]
        r["recall_at_0.8"], r["high"] = sum(high) / len(high), len(high)
        r["precision"] = 1 - r["false"] / r["removed"]
    return results


def detection_by_bin(detected, edges):
    rates, counts = [], []
    for lo, hi in zip(edges, edges[1:]):
        hits = [hit for j, hit in detected if lo <= j < hi or (hi == 1.0 and j == 1.0)]
        rates.append(sum(hits) / len(hits) if hits else float("nan"))
        counts.append(len(hits))
    return rates, counts


def bench_planted(texts: list[str], seeds: int, plot: Path | None) -> dict:
    bands, rows = DedupConfig().bands_rows()
    edges = np.linspace(0.2, 1.0, 17)
    default = next(label for label, _ in planted_configs() if "(default)" in label)
    runs = {}
    for copies in (1, 3):
        results = run_planted(texts, copies, list(range(11, 11 + seeds)))
        runs[copies] = results
        pairs = len(results[default]["detected"])
        print(f"\n## planted near-duplicates: {len(texts)} real articles x {copies} mutated "
              f"cop{'y' if copies == 1 else 'ies'} each, {seeds} seeds: {pairs} pairs, "
              f"{results[default]['high']} with J >= 0.8")
        for label, r in results.items():
            print(f"  {label:<42} recall(J>=0.8) {r['recall_at_0.8']:.3f}  precision {r['precision']:.3f} "
                  f"({r['false']} of {r['removed']} removals with J < 0.6)")
        shown = [results["FineWeb 14x8, no check"], results[default]]
        print("  J bin        pairs   S-curve   detected (no check)   detected (default check)")
        (plain, counts), (checked, _) = (detection_by_bin(r["detected"], edges) for r in shown)
        for lo, hi, n, a, b in zip(edges, edges[1:], counts, plain, checked):
            print(f"  {lo:.2f}-{hi:.2f}   {n:>5}   {minhash.s_curve((lo + hi) / 2, bands, rows):7.3f}   "
                  f"{a:19.3f}   {b:24.3f}")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        s = np.linspace(0, 1, 201)
        ax.plot(s, minhash.s_curve(s, bands, rows), "k-", label=f"theory 1-(1-s^{rows})^{bands}")
        centres = (edges[:-1] + edges[1:]) / 2
        for copies, label, marker in ((1, "FineWeb 14x8, no check", "o"), (1, default, "s"), (3, default, "^")):
            rates, _ = detection_by_bin(runs[copies][label]["detected"], edges)
            name = label.replace(" (default)", "")
            ax.plot(centres, rates, marker, alpha=0.8, label=f"{name}, {copies} cop{'y' if copies == 1 else 'ies'}")
        for x in (0.6, 0.8):
            ax.axvline(x, color="grey", ls=":", lw=1)
        ax.set_xlabel("true Jaccard of word 5-gram sets")
        ax.set_ylabel("share of planted pairs with one survivor")
        ax.set_title("MinHash LSH on planted near-duplicates of real articles")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(plot)
        print(f"  plot: {plot.relative_to(ROOT)}")
    return runs


# ---------------------------------------------------------------------------------------------- 3. shuffle

def bench_shuffle(texts: list[str]) -> None:
    from apache_beam.coders import FastPrimitivesCoder
    coder = FastPrimitivesCoder()
    cfg = DedupConfig()
    bands, rows = cfg.bands_rows()
    bucket_bytes = sketch_bytes = 0
    for i, text in enumerate(texts):
        node = minhash.node_id(f"<urn:uuid:{i:08d}>", "f")
        sig = minhash.signature(minhash.shingle_hashes(text), bands * rows, cfg.seed)
        bucket_bytes += sum(len(coder.encode(((b, k), node))) for b, k in enumerate(minhash.band_keys(sig, bands, rows)))
        sketch_bytes += len(coder.encode((node, minhash.sketch(sig))))
    text_bytes = sum(len(t.encode()) for t in texts)
    n = len(texts)
    print(f"\n## shuffle: bytes per document through the MinHash stage's shuffles (Beam FastPrimitivesCoder), "
          f"{n} articles")
    print(f"  band entries ((band, key), node) x {bands}: {bucket_bytes / n:6.0f} B")
    print(f"  signature sketch (node, 16-bit x {bands * rows}):   {sketch_bytes / n:6.0f} B")
    print("  edges and labels: ~20 B per edge per round, only for documents that share a bucket")
    print(f"  for comparison, the document's text: {text_bytes / n:6.0f} B")


# ---------------------------------------------------------------------------------------------- 4. scale

def synthetic_entries(start: int, stop: int, bands: int, seed: int = 5):
    """Band entries for nodes [start, stop): every 10th node starts a cluster of 1-8 near copies that share a
    random subset of bands with it; the rest have unique keys. Node ids are spread over 63 bits."""
    rng = np.random.default_rng(seed + start)
    spread = lambda n: (n * 0x9E3779B97F4A7C15) & ((1 << 63) - 1)
    for node in range(start, stop):
        cluster = node - node % 10
        shared = rng.random(bands) < 0.6 if node % 10 < rng.integers(1, 9) else np.zeros(bands, bool)
        for band in range(bands):
            key = (cluster * 131 + band) if shared[band] or node == cluster else (node << 8 | band) + (1 << 50)
            yield (band, key), spread(node)


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def bench_scale(n: int, workers: int, rounds: int, check: bool) -> None:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from filters import components
    from pipeline.dedup import BucketEdgesDoFn, ConnectedComponents
    bands = DedupConfig().bands_rows()[0]
    step = 20_000
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=multi_processing",
                               f"--direct_num_workers={workers}", "--default_sdk_harness_log_level=WARNING"])
    with tempfile.TemporaryDirectory() as workdir:
        out = os.path.join(workdir, "labels")
        started = time.perf_counter()
        p = beam.Pipeline(options=options)
        (p | beam.Create([(s, min(s + step, n)) for s in range(0, n, step)])
         | "Entries" >> beam.FlatMap(lambda r: synthetic_entries(r[0], r[1], bands))
         | "GroupBuckets" >> beam.GroupByKey()
         | "BucketEdges" >> beam.ParDo(BucketEdgesDoFn())
         | "Components" >> ConnectedComponents(rounds)
         | beam.Filter(lambda nl: nl[0] != nl[1])
         | beam.Map(lambda nl: f"{nl[0]} {nl[1]}") | beam.io.WriteToText(out, shard_name_template=""))
        result = p.run()
        result.wait_until_finish()
        wall = time.perf_counter() - started
        moved = dict(tuple(map(int, line.split())) for line in open(out))
    counters = {"minhash_dedup/union_find_edges": 0}      # a counter no worker touched is absent
    counters.update({c.key.metric.name: c.committed for c in
                     result.metrics().query(MetricsFilter().with_namespace("refinery"))["counters"]})
    print(f"\n## scale: {n:,} synthetic documents x {bands} bands through buckets + connected components "
          f"({rounds} rounds), DirectRunner multi_processing, {workers} workers")
    print(f"  {wall:.0f} s, {n / wall:,.0f} documents/s, {len(moved):,} documents marked as duplicates, "
          f"peak RSS of the largest process {peak_rss_mib():,.0f} MiB")
    print("  " + ", ".join(f"{name.split('/', 1)[1]} {value:,}" for name, value in sorted(counters.items())
                           if name.startswith("minhash_dedup/")))
    if check:      # the same entries through the local driver: buckets linked to their minimum, components
        buckets = {}
        for key, node in synthetic_entries_all(n, step, bands):
            buckets.setdefault(key, []).append(node)
        edges = [(v, min(nodes)) for nodes in buckets.values() for v in nodes if v != min(nodes)]
        labels, _ = components.connected_components(edges, rounds=0)
        expected = {v: m for v, m in labels.items() if v != m}
        print(f"  local union-find over the same buckets: {'the same' if expected == moved else 'DIFFERENT'} "
              f"labels for all {len(expected):,} moved documents")


def synthetic_entries_all(n: int, step: int, bands: int):
    for start in range(0, n, step):
        yield from synthetic_entries(start, min(start + step, n), bands)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sig-rounds", dest="sig_rounds", type=int, default=5,
                        help="signature timing: rounds over the articles (median reported)")
    parser.add_argument("--seeds", type=int, default=3, help="planted: independent runs per setting")
    parser.add_argument("--plot", default=str(ROOT / "docs/img/dedup-s-curve.png"))
    parser.add_argument("--scale", type=int, default=0, metavar="N", help="also run the scale test on N documents")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=DedupConfig().rounds, help="scale: star rounds")
    parser.add_argument("--only", choices=["signatures", "planted", "shuffle", "scale"])
    args = parser.parse_args()
    texts = articles()
    print(f"# bench_dedup on {os.cpu_count()} cores, python {sys.version.split()[0]}")
    if args.only in (None, "signatures"):
        bench_signatures(texts, args.sig_rounds)
    if args.only in (None, "planted"):
        bench_planted(texts, args.seeds, Path(args.plot) if args.plot else None)
    if args.only in (None, "shuffle"):
        bench_shuffle(texts)
    if args.scale and args.only in (None, "scale"):
        bench_scale(args.scale, args.workers, args.rounds, check=args.scale <= 200_000)


if __name__ == "__main__":
    main()
