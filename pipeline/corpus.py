"""Corpus statistics of a curated dataset, as datatrove's stats blocks and FineWeb's dataset card give them.

The writer computes a block per input file from the documents it writes (`file_stats`); the blocks add up
exactly (`merge`), so `stats.json`'s `corpus` covers every input however the work was split:

- `languages` / `domains`: per value, `docs`, `words` (whitespace-separated tokens) and `chars`;
- `words_histogram`: documents by length in words, in power-of-two bins (`"64"` counts 64–127 words), over
  all documents and per language (`words_histogram_by_language`);
- `quality_score` / `language_score`: documents per score bin of width 0.05 (`"0.85"` counts [0.85, 0.90));
- `duplicate_clusters`: kept documents by the size of the duplicate cluster they survived (1 + the exact and
  near duplicates dedup removed in their favour).

`refinery publish` puts the tables and `corpus.png` on the dataset card; the run report shows the same.
"""
from __future__ import annotations

import io
from collections import Counter, defaultdict

SCORE_BIN = 0.05


def length_bin(n: int) -> int:
    """The power-of-two bin of `n` (0 for 0)."""
    return 0 if n <= 0 else 1 << (n.bit_length() - 1)


def score_bin(score: float) -> str:
    return f"{min(int(score / SCORE_BIN + 1e-9), int(1 / SCORE_BIN) - 1) * SCORE_BIN:.2f}"


def file_stats(docs: list[dict]) -> dict:
    """The statistics block of the documents one input file keeps."""
    languages, domains = defaultdict(Counter), defaultdict(Counter)
    words_histogram, by_language = Counter(), defaultdict(Counter)
    quality, language_score, clusters = Counter(), Counter(), Counter()
    for doc in docs:
        text = doc.get("text") or ""
        words, chars = len(text.split()), len(text)
        language, domain = doc.get("language") or "unknown", doc.get("domain") or "unlabelled"
        for table, key in ((languages, language), (domains, domain)):
            table[key].update(docs=1, words=words, chars=chars)
        words_histogram[str(length_bin(words))] += 1
        by_language[language][str(length_bin(words))] += 1
        if doc.get("quality_score") is not None:
            quality[score_bin(doc["quality_score"])] += 1
        if doc.get("language_score") is not None:
            language_score[score_bin(doc["language_score"])] += 1
        clusters[str(1 + (doc.get("duplicates_removed") or 0))] += 1
    return {"docs": len(docs), "languages": {k: dict(v) for k, v in languages.items()},
            "domains": {k: dict(v) for k, v in domains.items()}, "words_histogram": dict(words_histogram),
            "words_histogram_by_language": {k: dict(v) for k, v in by_language.items()},
            "quality_score": dict(quality), "language_score": dict(language_score),
            "duplicate_clusters": dict(clusters)}


def _add(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value


def _ordered(block: dict) -> dict:
    """Tables by size (largest first), histograms by bin."""
    out = {"docs": block.get("docs", 0)}
    for key in ("languages", "domains"):
        out[key] = dict(sorted(block.get(key, {}).items(), key=lambda kv: (-kv[1]["docs"], kv[0])))
    for key in ("words_histogram", "quality_score", "language_score", "duplicate_clusters"):
        out[key] = dict(sorted(block.get(key, {}).items(), key=lambda kv: float(kv[0])))
    out["words_histogram_by_language"] = {
        lang: dict(sorted(h.items(), key=lambda kv: int(kv[0])))
        for lang, h in sorted(block.get("words_histogram_by_language", {}).items(),
                              key=lambda kv: -sum(kv[1].values()))}
    return out


def merge(blocks: list[dict]) -> dict:
    """The sum of per-file blocks."""
    total: dict = {}
    for block in blocks:
        _add(total, block)
    return _ordered(total)


def summary(corpus: dict) -> str:
    """Two lines for the end of a run: the languages and the lengths of the documents kept."""
    docs, words = corpus.get("docs", 0), sum(r["words"] for r in corpus.get("languages", {}).values())
    if not docs:
        return "corpus: no document kept"
    languages = ", ".join(f"{name} {r['docs']:,} ({r['docs'] / docs:.0%})"
                          for name, r in list(corpus["languages"].items())[:6])
    histogram = corpus.get("words_histogram", {})
    return (f"corpus: {docs:,} documents, {words:,} words (median in the {quantile_of_bins(histogram, 0.5):,}+ "
            f"bin, 90 % below {2 * quantile_of_bins(histogram, 0.9):,}); languages: {languages}")


def quantile_of_bins(histogram: dict[str, int], q: float) -> int:
    """The lower edge of the bin holding the q-quantile of a words histogram."""
    n, seen = sum(histogram.values()), 0
    for edge, count in sorted(histogram.items(), key=lambda kv: int(kv[0])):
        seen += count
        if seen >= q * n:
            return int(edge)
    return 0


def table_rows(corpus: dict, key: str, limit: int = 20) -> list[list]:
    """[name, documents, share of documents, words, share of words, mean words] for `languages`/`domains`."""
    rows, docs = corpus.get(key, {}), corpus.get("docs") or 1
    words = sum(r["words"] for r in rows.values()) or 1
    return [[name, r["docs"], f"{r['docs'] / docs:.1%}", r["words"], f"{r['words'] / words:.1%}",
             round(r["words"] / r["docs"]) if r["docs"] else 0]
            for name, r in list(rows.items())[:limit]]


def figure(corpus: dict):
    """A matplotlib figure: length histogram (top languages), quality and language scores, cluster sizes."""
    import matplotlib      # heavy, and only for the card and the report
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt      # heavy, and only for the card and the report
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    left, middle, right = axes
    by_language = list(corpus.get("words_histogram_by_language", {}).items())[:4]
    for lang, histogram in by_language or [("all", corpus.get("words_histogram", {}))]:
        if histogram:
            edges = [1 << k for k in range(max(1, int(min(histogram, key=int))).bit_length() - 1,
                                           max(1, int(max(histogram, key=int))).bit_length() + 1)]
            left.stairs([histogram.get(str(e), 0) + (histogram.get("0", 0) if e == 1 else 0) for e in edges[:-1]],
                        edges, label=lang)
    left.set(xscale="log", xlabel="words per document (power-of-two bins)", ylabel="documents",
             title="document length")
    left.legend(fontsize=8)
    for name, style in (("quality_score", "-"), ("language_score", "--")):
        histogram = corpus.get(name, {})
        if histogram:
            low, high = (round(float(f(histogram, key=float)) / SCORE_BIN) for f in (min, max))
            middle.stairs([histogram.get(f"{k * SCORE_BIN:.2f}", 0) for k in range(low, high + 1)],
                          [k * SCORE_BIN for k in range(low, high + 2)], linestyle=style,
                          label=name.replace("_", " "))
    middle.set(xlabel="score (bins of 0.05)", ylabel="documents", title="scores")
    if corpus.get("quality_score") or corpus.get("language_score"):
        middle.legend(fontsize=8)
    clusters = corpus.get("duplicate_clusters", {})
    right.bar([str(k) for k in clusters], list(clusters.values()))
    right.set(yscale="log", xlabel="cluster size (1 = no duplicate removed)", ylabel="kept documents",
              title="duplicate clusters")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_png(corpus: dict) -> bytes:
    """`figure(corpus)` as PNG bytes (the figure closed)."""
    import matplotlib.pyplot as plt      # heavy, and only for the card and the report
    fig = figure(corpus)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
