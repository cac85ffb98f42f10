"""Corpus statistics (pipeline/corpus.py): what stats.json says of the curated sample crawl is what its data holds,
per-file blocks add up to the whole, and the card and the report show them."""
import json
import random
import shutil
from collections import Counter

import pyarrow.dataset as pads

from pipeline import corpus
from pipeline.app.cli import main


def kept_rows(output) -> list[dict]:
    return pads.dataset(str(output / "data"), format="parquet").to_table().to_pylist()


def test_stats_json_corpus_is_what_the_data_holds(sample_run):
    code, output = sample_run
    assert code == 0
    stats = json.loads((output / "stats.json").read_text())
    block, rows = stats["corpus"], kept_rows(output)
    assert block["docs"] == stats["kept"] == len(rows) and block["files_without_statistics"] == 0
    languages = Counter(r["language"] for r in rows)
    assert {k: v["docs"] for k, v in block["languages"].items()} == dict(languages)
    assert list(block["languages"])[0] == "en"                       # largest first
    assert sum(v["words"] for v in block["languages"].values()) == sum(len(r["text"].split()) for r in rows)
    assert sum(v["chars"] for v in block["domains"].values()) == sum(len(r["text"]) for r in rows)
    assert {k: v["docs"] for k, v in block["domains"].items()} == dict(Counter(r["domain"] for r in rows))
    assert sum(block["words_histogram"].values()) == len(rows)
    shortest = min(len(r["text"].split()) for r in rows)      # whitespace words: few in Chinese or Japanese
    assert int(next(iter(block["words_histogram"]))) == corpus.length_bin(shortest)
    assert sum(block["language_score"].values()) == len(rows)
    assert min(float(b) for b in block["language_score"]) >= 0.65     # FineWeb's cut, applied before
    clusters = block["duplicate_clusters"]
    assert sum(clusters.values()) == len(rows)
    assert sum((int(size) - 1) * n for size, n in clusters.items()) == sum(r["duplicates_removed"] for r in rows)


def test_blocks_add_up_however_the_documents_are_split(sample_run):
    rows = kept_rows(sample_run[1])
    random.Random(5).shuffle(rows)
    whole = corpus.merge([corpus.file_stats(rows)])
    parts = corpus.merge([corpus.file_stats(rows[i:i + 97]) for i in range(0, len(rows), 97)])
    assert parts == whole and whole["docs"] == len(rows)
    assert corpus.score_bin(0.0) == "0.00" and corpus.score_bin(0.999) == "0.95" and corpus.score_bin(1.0) == "0.95"
    assert [corpus.length_bin(n) for n in (0, 1, 2, 3, 64, 127, 128)] == [0, 1, 2, 2, 64, 64, 128]


def test_the_card_shows_them(sample_run, tmp_path):
    target = tmp_path / "dataset"
    shutil.copytree(sample_run[1], target)
    assert main(["publish", str(target), "--license", "odc-by"]) == 0
    card = (target / "README.md").read_text()
    stats = json.loads((target / "stats.json").read_text())["corpus"]
    english = stats["languages"]["en"]
    assert "## Corpus statistics" in card and "![document length, scores and duplicate clusters](corpus.png)" in card
    assert f"| en | {english['docs']:,} | {english['docs'] / stats['docs']:.1%} | {english['words']:,} |" in card
    assert (target / "corpus.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "corpus.png" in json.loads((target / "manifest.json").read_text())["files"]
    assert main(["verify", str(target)]) == 0
