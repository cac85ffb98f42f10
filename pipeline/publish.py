"""`refinery publish` and `refinery verify`: a dataset card and a manifest, and a check of both.

```
refinery publish out/sample --license odc-by --name "webrefinery sample"
refinery verify out/sample          # also works on a token folder (shard headers)
```
`publish` writes, in the dataset folder: one Parquet file per domain under `domains/<domain>/` (so the card can
offer one config per domain; the `default` config is `data/*.parquet`), `README.md` (the Hugging Face dataset
card: YAML metadata, then the funnel and the config used) and `manifest.json` (size and sha256 of every file).
`verify` re-hashes every file of the manifest, re-reads every Parquet file's schema and every token shard's
header, and reports what is missing, changed, unreadable or not in the manifest.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from pipeline.dataset import SCHEMA
from training.shards import ShardError, read_header

MANIFEST, CARD = "manifest.json", "README.md"
_SKIP = {MANIFEST}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    stats = json.loads(stats_path.read_text())
    table = pads.dataset(str(root / "data"), format="parquet").to_table()
    languages = Counter(x for x in table.column("language").to_pylist() if x) if "language" in table.column_names \
        else Counter()
    domains = sorted({d or "other" for d in table.column("domain").to_pylist()}) \
        if "domain" in table.column_names else []
    for domain in domains:                     # one file per domain, for one config per domain
        part = table.filter(pc.equal(pc.fill_null(table.column("domain"), "other"), domain))
        target = root / "domains" / domain / "part-0.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pq.write_table(part, buffer, compression="zstd")
        target.write_bytes(buffer.getvalue())
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
             "Errors: " + (", ".join(f"{r} {n:,}" for r, n in stats.get("errors", {}).items()) or "none"), "",
             "## Languages", "", "| language | documents |", "|---|---:|"]
    card += [f"| {lang} | {n:,} |" for lang, n in languages.most_common(20)]
    card += ["", "## Columns", "", ", ".join(f"`{c}`" for c in table.column_names), "",
             "Lineage: `warc_file`, `warc_record_id` and `warc_offset` locate each document's WARC record.", "",
             "## Config used", "", "```yaml", yaml.safe_dump(stats.get("config", {}), sort_keys=False).strip(),
             "```", ""]
    (root / CARD).write_text("\n".join(card), encoding="utf-8")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _SKIP
                   and not p.relative_to(root).parts[0].startswith("_"))
    manifest = {"files": {str(p.relative_to(root)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                          for p in files}}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return {"documents": table.num_rows, "domains": domains, "files": len(files)}


def verify(directory: str) -> list[str]:
    """Every problem found, one line each; an empty list means the folder is intact."""

    root = Path(directory)
    if not root.is_dir():
        return [f"{directory}: not a folder"]
    problems = []
    manifest_path = root / MANIFEST
    listed = {}
    if manifest_path.is_file():
        try:
            listed = json.loads(manifest_path.read_text())["files"]
        except (ValueError, KeyError) as e:
            problems.append(f"{MANIFEST}: unreadable ({e})")
        for rel, entry in sorted(listed.items()):
            path = root / rel
            if not path.is_file():
                problems.append(f"{rel}: missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(f"{rel}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
            elif _sha256(path) != entry["sha256"]:
                problems.append(f"{rel}: sha256 differs from the manifest (changed or corrupt)")
        for path in sorted(root.rglob("*")):
            rel = str(path.relative_to(root))
            if path.is_file() and rel not in listed and path.name not in _SKIP and not rel.startswith("_"):
                problems.append(f"{rel}: not in the manifest")
    for path in sorted(root.rglob("*.parquet")):
        rel = str(path.relative_to(root))
        try:
            schema = pq.read_table(path).schema          # every page decoded: a flipped byte shows here
        except Exception as e:                     # any way a Parquet file can be broken
            problems.append(f"{rel}: not readable Parquet ({type(e).__name__}: {str(e)[:120]})")
            continue
        if rel.startswith(("data/", "domains/")):
            missing = [f.name for f in SCHEMA if f.name not in schema.names]
            if missing:
                problems.append(f"{rel}: columns missing: {', '.join(missing)}")
    for path in sorted(root.rglob("*.bin")):
        try:
            read_header(path)
        except ShardError as e:
            problems.append(str(e).replace(str(root) + "/", ""))
    if not listed and not any(root.rglob("*.parquet")) and not any(root.rglob("*.bin")):
        problems.append(f"{directory}: no manifest, no Parquet files, no token shards")
    return problems
