"""What the filters cost, how they agree with datatrove's, and the UT1 domain blocklist's memory and speed.

All on the sample crawl, in one run:
1. cost: each filter's time per document next to trafilatura's extraction time on the same pages (goal: the
   whole chain under 15 % of extraction);
2. agreement: our Gopher repetition / Gopher quality / C4 / FineWeb / URL rules and datatrove's on the same
   extracted texts, each applied to every document (not chained), keep/drop compared;
3. blocklist: datatrove's UT1 list (4.5 M domains) as our DomainSet (sorted 64-bit hashes) against a
   Python set: build time, memory, lookups per second.

    pip install datatrove==0.10.1 spacy tldextract pyahocorasick     # the baselines, for this benchmark only
    python bench/bench_filters.py [--limit N] [--blocklist PATH]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import random
import time
import tracemalloc
from collections import Counter

from filters import c4, decontam, fineweb, gopher, language, nsfw, url
from filters.pii import redact_pii
from pipeline.extraction import ExtractConfig, extract_page
from pipeline.resources import BadWords, Benchmarks, StopWords, UrlLists, blocklist_domains, language_model_path
from pages import read_pages, sample_crawl_paths
from pipeline.warc import Page


def random_pages(limit: int | None) -> list[Page]:
    pages = read_pages(sample_crawl_paths())
    random.Random(0).shuffle(pages)
    return pages[:limit]


def timed(label, fn, items, totals):
    started = time.perf_counter()
    results = [fn(item) for item in items]
    totals[label] = time.perf_counter() - started
    return results


def cost(pages, docs, totals):
    import fasttext
    model = fasttext.load_model(language_model_path(language.LanguageConfig()))
    stop_words = StopWords()()
    bad_words = BadWords(nsfw.NsfwConfig())()
    lists = UrlLists(url.UrlConfig())()
    index = Benchmarks(decontam.DecontamConfig())()
    timed("url", lambda p: url.check_url(p.url, resources=lists), pages, totals)
    live = list(docs)
    langs = timed("language", lambda d: language.predict_language(model, d["text"]), live, totals)
    for d, (lang, score) in zip(live, langs):
        d["language"] = lang
    live = [d for d, (lang, score) in zip(live, langs) if language.check_language(lang, score) is None]
    chain = [
        ("gopher_repetition", lambda d: gopher.check_gopher_repetition(d["text"], language=d["language"])),
        ("gopher_quality", lambda d: gopher.check_gopher_quality(d["text"], language=d["language"],
                                                                 resources=stop_words)),
        ("c4", lambda d: c4.clean_c4(d["text"], language=d["language"])[1]),
        ("fineweb", lambda d: fineweb.check_fineweb(d["text"], language=d["language"])),
        ("nsfw", lambda d: nsfw.check_nsfw(d["text"], language=d["language"], resources=bad_words)),
        ("pii", lambda d: None if redact_pii(d["text"]) else None),
        ("decontam", lambda d: decontam.check_contamination(d["text"], resources=index)),
    ]
    # document by document through the chain, as the pipeline runs it (filters share the cached word split)
    for name, _ in chain:
        totals[name] = 0.0
    survivors = 0
    for d in live:
        for name, check in chain:
            started = time.perf_counter()
            reason = check(d)
            totals[name] += time.perf_counter() - started
            if reason is not None:
                break
        else:
            survivors += 1
    live = [None] * survivors
    return len(live)


def agreement(pages, docs):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, URLFilter)
    lists = UrlLists(url.UrlConfig())()
    pairs = [
        ("gopher_repetition", lambda d: gopher.check_gopher_repetition(d["text"], language=d["language"]),
         GopherRepetitionFilter()),
        ("gopher_quality", lambda d: gopher.check_gopher_quality(d["text"], language=d["language"]),
         GopherQualityFilter()),
        ("c4 (datatrove defaults)", lambda d: c4.clean_c4(d["text"], language=d["language"])[1], C4QualityFilter()),
        ("c4 (datatrove, paper's 5 words/3 sentences)", lambda d: c4.clean_c4(d["text"], language=d["language"])[1],
         C4QualityFilter(min_words_per_line=5, min_num_sentences=3)),
        ("fineweb", lambda d: fineweb.check_fineweb(d["text"], language=d["language"]), FineWebQualityFilter()),
    ]
    english = [d for d in docs if d["language"] == "en"]
    print(f"\nagreement with datatrove 0.10.1 on {len(english)} English documents (each filter on all of them)")
    print(f"{'filter':<46} {'agree':>6} {'both keep':>9} {'both drop':>9} {'only ours drops':>15} "
          f"{'only theirs drops':>17}")
    for name, ours, theirs in pairs:
        counts = Counter()
        for i, d in enumerate(english):
            ours_drop = ours(d) is not None
            result = theirs.filter(Document(text=d["text"], id=str(i), metadata={}))
            theirs_drop = not (result is True or (isinstance(result, tuple) and result[0]))
            counts[(ours_drop, theirs_drop)] += 1
        _print_row(name, counts, len(english))
    theirs = URLFilter()
    counts = Counter()
    for i, p in enumerate(pages):
        ours_drop = url.check_url(p.url, resources=lists) is not None
        result = theirs.filter(Document(text="", id=str(i), metadata={"url": p.url}))
        counts[(ours_drop, not (result is True or (isinstance(result, tuple) and result[0])))] += 1
    _print_row(f"url ({len(pages)} pages)", counts, len(pages))


def _print_row(name, counts, n):
    agree = counts[(False, False)] + counts[(True, True)]
    print(f"{name:<46} {agree / n:>6.1%} {counts[(False, False)]:>9} {counts[(True, True)]:>9} "
          f"{counts[(True, False)]:>15} {counts[(False, True)]:>17}")


def blocklist(path, pages):
    hosts = [url.host_of(p.url) or "example.org" for p in pages]
    hosts = (hosts * (100_000 // max(1, len(hosts)) + 1))[:100_000]
    tracemalloc.start()
    started = time.perf_counter()
    as_set = {d.strip().lower() for d in blocklist_domains(path) if d.strip()}
    set_s = time.perf_counter() - started
    set_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    started = time.perf_counter()
    domains = url.DomainSet(blocklist_domains(path))
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    hits_set = sum(h in as_set for h in hosts)
    set_lookup = time.perf_counter() - started
    started = time.perf_counter()
    hits_ours = sum(h in domains for h in hosts)
    ours_lookup = time.perf_counter() - started
    print(f"\nUT1 blocklist {os.path.basename(path)}: {len(domains):,} domains")
    print(f"  Python set : build {set_s:5.1f} s, memory {set_bytes / 2**20:7.1f} MiB, "
          f"{len(hosts) / set_lookup:>12,.0f} lookups/s, {hits_set} hits")
    print(f"  DomainSet  : build {ours_s:5.1f} s, memory {domains.nbytes / 2**20:7.1f} MiB, "
          f"{len(hosts) / ours_lookup:>12,.0f} lookups/s, {hits_ours} hits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="use N random pages of the sample crawl")
    parser.add_argument("--blocklist", help="UT1 list (default: the one inside the installed datatrove wheel)")
    args = parser.parse_args()
    logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
    pages = random_pages(args.limit)
    totals = {}
    extracted = timed("extract (trafilatura)", lambda p: extract_page(p.body, p.content_type, p.url, ExtractConfig()),
                      pages, totals)
    docs = [{"text": e.text, "url": p.url} for p, e in zip(pages, extracted) if e is not None]
    kept = cost(pages, docs, totals)
    extraction = totals.pop("extract (trafilatura)")
    print(f"{len(pages)} pages, {len(docs)} with main text, {kept} through every filter")
    print(f"{'stage':<22} {'total s':>8} {'ms/doc':>8} {'% of extraction':>16}")
    print(f"{'extract (trafilatura)':<22} {extraction:>8.2f} {1000 * extraction / len(pages):>8.2f} {100:>15.1f}%")
    for name, seconds in totals.items():
        print(f"{name:<22} {seconds:>8.2f} {1000 * seconds / len(pages):>8.2f} {100 * seconds / extraction:>15.1f}%")
    chain = sum(totals.values())
    print(f"{'all filters':<22} {chain:>8.2f} {1000 * chain / len(pages):>8.2f} {100 * chain / extraction:>15.1f}%"
          f"   (goal < 15 %)")
    agreement(pages, docs)
    path = args.blocklist
    if path is None:
        try:
            path = str(importlib.metadata.distribution("datatrove").locate_file(
                "datatrove/assets/url_filterblacklistsv0_3_0.tar.gz"))
        except importlib.metadata.PackageNotFoundError:
            path = None
    if path and os.path.exists(path):
        blocklist(path, pages)


if __name__ == "__main__":
    main()
