"""`refinery quality train | eval | score`: the fastText quality classifier (pipeline/quality.py, docs/quality.md).

```
refinery quality train --output out/models/quality.bin --eval
refinery quality eval --model out/models/quality.bin
refinery quality score --model out/models/quality.bin --input docs.jsonl --output scored.jsonl
```
"""
from __future__ import annotations

import dataclasses

from filters.quality import DEFAULT_NEGATIVES, DEFAULT_POSITIVES
from pipeline import quality
from pipeline.app.common import UsageError, positive_int


def configure(parser) -> None:
    parser.description = "The model-based quality filter (DCLM-style fastText bigram classifier)."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train", help="train a classifier: positives vs negatives",
        description="Train a fastText classifier (word bigrams) on positive vs negative texts; prints precision, "
                    "recall and AUC on a held-out share and writes MODEL.bin plus MODEL.bin.json (sources, counts, "
                    "metrics). Inputs: Parquet datasets, JSONL/JSON with a text field, WARC files (whole-page text), "
                    "plain text; relative paths not found here are read from the shared data folder.",
        epilog="Defaults (docs/quality.md): positives " + ", ".join(DEFAULT_POSITIVES) +
               "; negatives " + ", ".join(DEFAULT_NEGATIVES) + ".")
    train.add_argument("--positive", action="append", metavar="PATH", help="repeatable; default: see below")
    train.add_argument("--negative", action="append", metavar="PATH", help="repeatable; default: see below")
    train.add_argument("--field", help="JSON field holding the text (default: text, articleBody, output, content)")
    train.add_argument("--output", required=True, metavar="MODEL.bin")
    train.add_argument("--epoch", type=positive_int, default=20, help="training epochs (default 20)")
    train.add_argument("--eval", action="store_true", help="also report AUC against DCLM's human labels")
    evaluate = actions.add_parser("eval", help="AUC of a model against human quality labels",
                                  description="AUC, precision and recall at 0.5 of the model's score against "
                                              "human keep/drop labels (JSONL with text and label).")
    evaluate.add_argument("--model", required=True, metavar="MODEL.bin")
    evaluate.add_argument("--labels", action="append", metavar="JSONL",
                          help="repeatable; default: DCLM's majority and agreement sets")
    score = actions.add_parser("score", help="add quality_score to each line of a JSONL file")
    score.add_argument("--model", required=True, metavar="MODEL.bin")
    score.add_argument("--input", required=True, metavar="IN.jsonl")
    score.add_argument("--output", required=True, metavar="OUT.jsonl")
    score.add_argument("--field", default="text", help="JSON field holding the text (default text)")


def main(args, beam_args: list[str]) -> int:
    if args.action == "train":
        if not 1 <= args.epoch <= 10_000:        # fastText takes a C int; thousands of passes are already a mistake
            raise UsageError(f"--epoch must be from 1 to 10,000, got {args.epoch}")
        cfg = dataclasses.replace(quality.ClassifierConfig(), epoch=args.epoch)
        result = quality.train_classifier(args.positive or list(DEFAULT_POSITIVES),
                                          args.negative or list(DEFAULT_NEGATIVES), args.output, cfg, args.field)
        h = result.holdout
        print(f"[quality] held out {h.get('documents', 0):,}: precision {h.get('precision', 0):.3f} "
              f"recall {h.get('recall', 0):.3f} AUC {h.get('auc', 0):.3f}; model {result.model_path} "
              f"({result.wall_s:.0f} s)")
        if args.eval:
            _print_eval(quality.evaluate(args.output))
    elif args.action == "eval":
        _print_eval(quality.evaluate(args.model, args.labels or list(quality.HUMAN_LABELS)))
    else:
        n = quality.score_jsonl(args.model, args.input, args.output, args.field)
        print(f"[quality] scored {n:,} documents -> {args.output}")
    return 0


def _print_eval(results: dict) -> None:
    for name, r in results.items():
        print(f"[quality] {name}: {r['documents']} documents ({r['keep']} keep): AUC {r['auc']:.3f}, "
              f"precision {r['precision']:.3f} / recall {r['recall']:.3f} at 0.5")
