"""`refinery contamination`: Oren et al.'s sharded order test of whether a model saw a benchmark file.

```
refinery contamination --model out/train --benchmark ../shared/data/mc/copa.jsonl
```
"""
from __future__ import annotations

import json

from tqdm import tqdm

from pipeline.app.common import at_least_two, open_unit_interval, positive_int
from training.artifacts import json_with, prepare_file
from training.eval.contamination import OrderTestConfig, lm_logprob, order_test, read_examples
from training.files import write_atomic
from training.lm import load_lm


def configure(parser) -> None:
    parser.description = ("Compare the log-likelihood of a benchmark's examples in their canonical order with shuffled "
                          "orders, shard by shard; a one-sided t-test over shards gives a p-value (small: the model "
                          "prefers the file's own order, i.e. it has seen the file).")
    parser.add_argument("--model", required=True, metavar="MODEL", help="run folder, checkpoint, HF folder or GGUF")
    parser.add_argument("--benchmark", required=True, metavar="FILE", help="one example per line (JSONL, CSV, text)")
    parser.add_argument("--shards", type=at_least_two, default=20)
    parser.add_argument("--permutations", type=positive_int, default=10)
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N examples")
    parser.add_argument("--tokenizer", metavar="DIR")
    parser.add_argument("--other-tokenizer", action="store_true",
                        help="use --tokenizer even if it is not the one the model was trained with (sha256)")
    parser.add_argument("--alpha", type=open_unit_interval, default=0.05, help="significance level for the verdict")
    parser.add_argument("--output", metavar="FILE.json")
    parser.add_argument("--no-progress", action="store_true")


def main(args, beam_args: list[str]) -> int:
    cfg = OrderTestConfig(shards=args.shards, permutations=args.permutations)
    if args.output:
        prepare_file(args.output, [args.benchmark, args.model, args.tokenizer or ""], json_with("p_value", "benchmark"),
                     "contamination result")
    examples = read_examples(args.benchmark)[:args.limit]
    if len(set(examples)) < 2:
        raise ValueError(f"{args.benchmark}: every example is identical: there is no order to test")
    lm = load_lm(args.model, tokenizer=args.tokenizer, other_tokenizer=args.other_tokenizer)
    bar = None if args.no_progress else tqdm(total=cfg.shards, desc="shards", unit="shard")
    result = order_test(lm_logprob(lm), examples, cfg, progress=bar.update if bar else None)
    if bar:
        bar.close()
    result.update(model=str(args.model), benchmark=str(args.benchmark), alpha=args.alpha,
                  contaminated=result["p_value"] < args.alpha)
    verdict = "contaminated" if result["contaminated"] else "no evidence of contamination"
    print(f"[contamination] {args.benchmark}: {verdict} (p = {result['p_value']:.3g}, t = {result['t']:.2f}, "
          f"mean log-prob gain of the canonical order {result['mean_logprob_gain']:.3f} nats over "
          f"{result['shards']} shards x {result['permutations']} permutations)")
    if args.output:
        write_atomic(args.output, json.dumps(result, indent=1))
    return 0
