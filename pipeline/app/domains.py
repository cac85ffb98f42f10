"""`refinery domains train`: the fastText domain classifier the mix stage uses (pipeline/mix.py, docs/mix.md).

```
refinery domains train --input out/sample --output out/models/domain.bin
```
"""
from __future__ import annotations

from pipeline.app.common import dataset_data
from pipeline.mix import train_domain_classifier


def configure(parser) -> None:
    parser.description = ("Train a fastText domain classifier (news, reference, forum, blog, commerce, code) on the "
                          "documents of curated datasets that the URL rules label; `refinery curate --domain-model` "
                          "then labels the rest with it.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train on curated Parquet datasets (url and text columns)")
    train.add_argument("--input", action="append", required=True, metavar="DATASET_DIR",
                       help="a curated dataset folder (or its data/, or a Parquet file); repeatable")
    train.add_argument("--output", required=True, metavar="MODEL.bin")


def main(args, beam_args: list[str]) -> int:
    result = train_domain_classifier([dataset_data(p) for p in args.input], args.output)
    print(f"[domains] held-out accuracy {result['held_out_accuracy']} on {result['held_out']} documents; "
          f"model {args.output}")
    return 0
