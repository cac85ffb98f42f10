"""`refinery publish` and `refinery verify`: a dataset card and a manifest, and a check of both.

```
refinery publish out/sample --license odc-by --name "webrefinery sample"
refinery verify out/sample          # any folder refinery wrote: a dataset, a token folder, a run, an export
```
`publish` writes, in the dataset folder: one Parquet file per domain under `domains/<domain>/` (so the card can
offer one config per domain; the `default` config is `data/*.parquet`), `README.md` (the Hugging Face dataset
card: YAML metadata, then the funnel and the config used), and updates the dataset's `manifest.json` (size and
sha256 of every file). `verify` checks any artifact folder against its manifest (training/artifacts.py) —
missing, changed, truncated or unlisted files — and, by kind, decodes every Parquet file of a dataset and scans
every shard of a token folder (header, tokenizer, ids below the vocabulary).
"""
from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from pipeline import corpus
from pipeline.curate import curation_stats, write_dataset_manifest
from pipeline.dataset import SCHEMA, dataset_files
from training.artifacts import ArtifactError, problems, read_manifest, safe_name, stray_files
from training.files import write_atomic
from training.shards import ShardError, read_header, scan_shard

CARD = "README.md"
CORPUS_PLOT = "corpus.png"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if n < limit:
            return label
    return "n>100M"


def publish(dataset_dir: str, license: str = "other", name: str | None = None) -> dict:
    root = Path(dataset_dir)
    stats_path = root / "stats.json"
    if not stats_path.is_file():
        raise FileNotFoundError(f"{stats_path} not found: publish a folder `refinery curate` wrote")
    if not curation_stats(root):
        raise ArtifactError(f"{stats_path}: not the stats.json `refinery curate` writes (unreadable JSON, or no "
                            f"records_in, kept, shards and config in it)")
    stats = json.loads(stats_path.read_text())
    table = pads.dataset(dataset_files(str(root)), format="parquet").to_table()
    languages = Counter(x for x in table.column("language").to_pylist() if x) if "language" in table.column_names \
        else Counter()
    domains = sorted({d or "other" for d in table.column("domain").to_pylist()}) \
        if "domain" in table.column_names else []
    parts = {domain: f"domains/{safe_name(domain, 'domain label')}/part-0.parquet" for domain in domains}
    _refuse_others(root, [CARD, CORPUS_PLOT, *parts.values()])
    for domain in domains:                     # one file per domain, for one config per domain
        part = table.filter(pc.equal(pc.fill_null(table.column("domain"), "other"), domain))
        buffer = io.BytesIO()
        pq.write_table(part, buffer, compression="zstd")
        write_atomic(root / parts[domain], buffer.getvalue())
    meta = {"license": license, "pretty_name": name or root.name,
            "language": [lang for lang, _ in languages.most_common()],
            "size_categories": [_size_category(table.num_rows)],
            "task_categories": ["text-generation"], "tags": ["web", "common-crawl", "webrefinery"],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}],
                         "default": True}]
            + [{"config_name": d, "data_files": [{"split": "train", "path": f"domains/{d}/*.parquet"}]}
               for d in domains]}
    card = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip(), "---", "",
            f"# {meta['pretty_name']}", "",
            f"Curated by webrefinery from {stats.get('inputs', '?')} WARC files: {table.num_rows:,} documents "
            f"kept of {stats['records_in']:,} WARC records read.", "",
            "## Funnel", "", "| stage | dropped | reasons |", "|---|---:|---|"]
    for stage in stats.get("stages", []):
        reasons = stats["dropped"].get(stage, {})
        card.append(f"| {stage} | {sum(reasons.values()):,} | "
                    + ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) + " |")
    card += ["", "Skipped records: " + ", ".join(f"{r} {n:,}" for r, n in stats.get("skipped", {}).items()),
             "Errors: " + (", ".join(f"{r} {n:,}" for r, n in stats.get("errors", {}).items()) or "none")]
    card += corpus_section(root, stats.get("corpus") if not stats.get("corpus", {}).get("files_without_statistics")
                           else None, table)
    card += ["", "## Columns", "", ", ".join(f"`{c}`" for c in table.column_names), "",
             "Lineage: `warc_file`, `warc_record_id` and `warc_offset` locate each document's WARC record.", "",
             "## Config used", "", "```yaml", yaml.safe_dump(stats.get("config", {}), sort_keys=False).strip(),
             "```", ""]
    write_atomic(root / CARD, "\n".join(card))
    write_dataset_manifest(root, stats.get("config", {}), (CARD, CORPUS_PLOT, *parts.values()))
    return {"documents": table.num_rows, "domains": domains, "files": len(read_manifest(root)["files"])}


def _refuse_others(root: Path, names: list[str]) -> None:
    """Publish replaces its card, plot and per-domain files, and nothing else: a file of those names that the
    dataset's manifest does not list as it is (a README.md of the user's, say) is refused, before any write."""
    manifest = read_manifest(root) if (root / "manifest.json").is_file() else {"files": {}}
    for name in names:
        if (root / name).exists() and (name not in manifest["files"] or problems(root, manifest, [name])):
            raise ArtifactError(f"{root / name}: not a file refinery publish wrote (or changed since); nothing is "
                                f"replaced: move it away, then publish again")


def corpus_section(root: Path, stats: dict | None, table) -> list[str]:
    """The card's corpus statistics (pipeline/corpus.py) and ROOT/corpus.png; from stats.json's `corpus`, or
    from the data itself for a dataset curated before it had one."""
    source = "by the writer from every document kept (stats.json, `corpus`)"
    if not stats:
        stats, source = corpus.merge([corpus.file_stats(table.to_pylist())]), "from the documents in data/"
    write_atomic(root / CORPUS_PLOT, corpus.plot_png(stats))
    lines = ["", "## Corpus statistics", "",
             f"Words are whitespace-separated tokens. Computed {source}.", "",
             f"![document length, scores and duplicate clusters]({CORPUS_PLOT})", ""]
    for key, title in (("languages", "language"), ("domains", "domain")):
        lines += [f"| {title} | documents | share | words | share of words | mean words |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {docs:,} | {share} | {words:,} | {word_share} | {mean:,} |"
                  for name, docs, share, words, word_share, mean in corpus.table_rows(stats, key)]
        lines.append("")
    histogram = stats.get("words_histogram", {})
    lines.append("Documents by length in words: " + ", ".join(f"{int(edge):,}+ {n:,}" for edge, n in histogram.items()))
    clusters = stats.get("duplicate_clusters", {})
    lines += ["", "Kept documents by duplicate-cluster size: " + ", ".join(f"{k}: {n:,}" for k, n in clusters.items())]
    return lines


def verify(directory: str) -> list[str]:
    """Every problem found, one line each; an empty list means the folder is intact. Any artifact folder: every
    file its manifest lists (size, sha256) and none it does not; a dataset: every Parquet file decoded and its
    columns; a token folder: every shard's header, its tokenizer and its ids below the vocabulary."""
    root = Path(directory)
    if not root.is_dir():
        return [f"{directory}: not a folder"]
    try:
        manifest = read_manifest(root)
    except ArtifactError as e:
        return [str(e)]
    found = [p.replace(str(root) + "/", "") for p in problems(root, manifest)]
    found += [f"{rel}: not in the manifest" for rel in stray_files(root, manifest)]
    if manifest["kind"] == "dataset":
        found += _parquet_problems(root, manifest)
    elif manifest["kind"] == "tokens":
        found += _shard_problems(root, manifest)
    return found


def _parquet_problems(root: Path, manifest: dict) -> list[str]:
    found = []
    for rel in sorted(r for r in manifest["files"] if r.endswith(".parquet") and (root / r).is_file()):
        try:
            schema = pq.read_table(root / rel).schema          # every page decoded: a flipped byte shows here
        except Exception as e:                     # any way a Parquet file can be broken
            found.append(f"{rel}: not readable Parquet ({type(e).__name__}: {str(e)[:120]})")
            continue
        if rel.startswith(("data/", "domains/")):
            missing = [f.name for f in SCHEMA if f.name not in schema.names]
            if missing:
                found.append(f"{rel}: columns missing: {', '.join(missing)}")
    return found


def _shard_problems(root: Path, manifest: dict) -> list[str]:
    found = []
    vocab, tokenizer = manifest["provenance"].get("vocab_size"), manifest["provenance"].get("tokenizer_sha256")
    for rel in sorted(r for r in manifest["files"] if r.endswith(".bin") and (root / r).is_file()):
        try:
            header = read_header(root / rel)
            _, largest = scan_shard(root / rel)
        except ShardError as e:
            found.append(str(e).replace(str(root) + "/", ""))
            continue
        if tokenizer and header.tokenizer_sha256 != tokenizer:
            found.append(f"{rel}: made by another tokenizer than the folder's ({header.tokenizer_sha256[:12]}…)")
        if vocab and largest >= vocab:
            found.append(f"{rel}: token id {largest:,} is not below the vocabulary ({vocab:,})")
    return found
