"""Tokenizer: bytes per token and speed of our sentencepiece BPE against Hugging Face `tokenizers` BPE.

Both are trained on the same curated text (a curated dataset's `data/` folder, by default the sample crawl's)
for each vocabulary size, in this process; then each encodes English and German curated documents and the
wikitext-2 test set. HF's is a byte-level BPE (GPT-2's pre-tokenizer), the usual alternative.

    make sample && pip install tokenizers                # the baseline, for this benchmark only
    python bench/bench_tokenizer.py [--data out/sample/data] [--vocab 8000 16000 32000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.shared_data import shared_data_dir              # noqa: E402
from training.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer   # noqa: E402


def texts_by_set(data: str) -> dict[str, list[str]]:
    import pyarrow.dataset as pads
    table = pads.dataset(data, format="parquet").to_table(columns=["text", "language"])
    rows = list(zip(table.column("text").to_pylist(), table.column("language").to_pylist()))
    wiki = (shared_data_dir() / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8")
    return {"curated en": [t for t, lang in rows if lang == "en"],
            "curated de": [t for t, lang in rows if lang == "de"],
            "wikitext-2 test": [p for p in wiki.split("\n") if p.strip()]}


def train_hf(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>", "<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="out/sample/data", help="a curated dataset's data folder")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 16000, 32000])
    args = parser.parse_args()
    sets = texts_by_set(args.data)
    import pyarrow.dataset as pads
    train_texts = pads.dataset(args.data, format="parquet").to_table(columns=["text"]).column("text").to_pylist()
    size = {name: sum(len(t.encode()) for t in texts) for name, texts in sets.items()}
    print(f"# bench_tokenizer on {os.cpu_count()} cores; training text: {len(train_texts):,} curated documents, "
          f"{sum(len(t.encode()) for t in train_texts) / 1e6:.1f} MB; "
          + ", ".join(f"{n}: {len(sets[n]):,} texts, {size[n] / 1e6:.2f} MB" for n in sets))
    print("\n| vocab | tokenizer | train s | " + " | ".join(f"{n} bytes/token" for n in sets) + " | encode MB/s |")
    print("|---:|---|---:|" + "---:|" * len(sets) + "---:|")
    for vocab in args.vocab:
        with tempfile.TemporaryDirectory() as directory:
            started = time.perf_counter()
            train_tokenizer([args.data], directory, TokenizerConfig(vocab_size=vocab), log=lambda *_: None)
            ours_train = time.perf_counter() - started
            ours = Tokenizer(directory)
            started = time.perf_counter()
            hf = train_hf(train_texts, vocab)
            hf_train = time.perf_counter() - started
            for name, train_s, encode in (("sentencepiece (ours)", ours_train, ours.encode_batch),
                                          ("HF tokenizers byte-level BPE", hf_train,
                                           lambda texts: [e.ids for e in hf.encode_batch(texts)])):
                ratios, seconds = [], 0.0
                for set_name, texts in sets.items():
                    started = time.perf_counter()
                    encoded = encode(texts)
                    seconds += time.perf_counter() - started
                    ratios.append(size[set_name] / sum(len(ids) for ids in encoded))
                speed = sum(size.values()) / 1e6 / seconds
                print(f"| {vocab:,} | {name} | {train_s:.1f} | " + " | ".join(f"{r:.2f}" for r in ratios)
                      + f" | {speed:.1f} |")


if __name__ == "__main__":
    main()
