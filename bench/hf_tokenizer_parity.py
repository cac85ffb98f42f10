"""An exported model's tokenizer in transformers against ours, on more text than the test reads.

`refinery export` writes our sentencepiece BPE as a `tokenizers` BPE (training/hf.py). This encodes with both
(`AutoTokenizer.from_pretrained(DIR)` and our `tokenizer.model` in DIR) and counts texts whose ids differ, or
whose decoding is not the text: the scrapinghub benchmark's 181 articles, 300 raw trafilatura-eval HTML pages
(odd whitespace, markup, a literal "<s>") and the whole wikitext-2 test set as one string.

    refinery export --model out/train --output out/hf-model
    python bench/hf_tokenizer_parity.py out/hf-model
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared_data import shared_data_dir  # noqa: E402
from training.tokenizer import Tokenizer  # noqa: E402


def texts(data: Path) -> list[str]:
    truth = json.loads((data / "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json").read_text())
    found = [v["articleBody"] for v in truth.values()]
    for path in sorted((data / "extraction/trafilatura-eval/html").glob("*.gz"))[:300]:
        found.append(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
    found.append((data / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8"))
    return found


def main(folder: str) -> int:
    from transformers import AutoTokenizer
    ours, theirs = Tokenizer(folder), AutoTokenizer.from_pretrained(folder)
    sample = texts(shared_data_dir())
    ids = sum(ours.encode(t) != theirs.encode(t) for t in sample)
    decoded = sum(theirs.decode(theirs.encode(t)) != t for t in sample)
    print(f"{len(sample)} texts, {sum(map(len, sample)):,} characters: ids differ in {ids}, "
          f"decoding differs in {decoded}")
    return 1 if ids or decoded else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]) if len(sys.argv) == 2 else "usage: python bench/hf_tokenizer_parity.py HF_DIR")
