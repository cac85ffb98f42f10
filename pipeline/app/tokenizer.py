"""`refinery tokenizer train`: sentencepiece BPE on a curated dataset (training/tokenizer.py, docs/tokenizer.md).

```
refinery tokenizer train --input out/sample --vocab-size 16000 --output out/tokenizer
```
"""
from __future__ import annotations

from pipeline.app.common import dataset_data, positive_int
from training.tokenizer import TokenizerConfig, train_tokenizer


def configure(parser) -> None:
    parser.description = ("Sentencepiece BPE with byte fallback, split digits and identity normalisation "
                          "(lossless), trained on a bounded sample of curated text.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train on curated Parquet datasets")
    train.add_argument("--input", action="append", required=True, metavar="DATASET_DIR",
                       help="a curated dataset folder (or its data/, or a Parquet file); repeatable")
    train.add_argument("--vocab-size", type=positive_int, default=16_000, metavar="N", help="pieces (default 16,000)")
    train.add_argument("--sample-bytes", type=positive_int, default=200_000_000, metavar="B",
                       help="train on at most this much text (default 200 MB)")
    train.add_argument("--output", required=True, metavar="TOK_DIR")
    train.add_argument("--overwrite", action="store_true",
                       help="replace an earlier tokenizer in TOK_DIR (only the files its manifest lists are removed)")


def main(args, beam_args: list[str]) -> int:
    cfg = TokenizerConfig(vocab_size=args.vocab_size, sample_bytes=args.sample_bytes)
    info = train_tokenizer([dataset_data(p) for p in args.input], args.output, cfg, overwrite=args.overwrite)
    print(f"[tokenizer] {args.output}/tokenizer.model: {args.vocab_size:,} pieces from {info['documents']:,} "
          f"documents in {info['wall_s']} s (sha256 {info['sha256'][:12]})")
    return 0
