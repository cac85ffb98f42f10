"""`refinery eval`: benchmarks and wikitext bits per byte (training/eval/, docs/eval.md).

```
refinery eval --model out/train --tasks wikitext,arc_easy,hellaswag --limit 200 --output out/eval/results.json
```
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.app.common import UsageError, at_least_two, non_negative_int, positive_int, split_list
from pipeline.shared_data import shared_data_dir
from training.eval.evaluate import markdown_table, run_eval
from training.eval.tasks import TASKS
from training.artifacts import json_with, jsonl_with, prepare_file
from training.files import write_atomic


def configure(parser) -> None:
    parser.description = ("Evaluate a model with lm-evaluation-harness conventions. MODEL: one of our run folders or "
                          "checkpoints, a Hugging Face Llama folder, or a GGUF file. Tasks: wikitext (word perplexity "
                          "and bits per byte, per article as the harness scores it), " + ", ".join(TASKS) +
                          ", and mmlu_<subject> (one MMLU subject, e.g. mmlu_anatomy, as the harness names it).")
    parser.epilog = ("Example: refinery eval --model SmolLM2-135M-Instruct.Q4_1.gguf --tasks wikitext,arc_easy,hellaswag "
                     "--limit 500 --output out/eval/smollm2.json")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--tasks", required=True, metavar="LIST", help="comma-separated task names")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="score the first N items of each task (MMLU: per subject; wikitext: its first N articles)")
    parser.add_argument("--shots", type=non_negative_int, default=0, metavar="K", help="few-shot examples (default 0)")
    parser.add_argument("--output", metavar="results.json", help="also write results (and a .md table beside)")
    parser.add_argument("--tokenizer", metavar="DIR", help="our tokenizer, when the model's run folder does not say")
    parser.add_argument("--other-tokenizer", action="store_true",
                        help="use --tokenizer even if it is not the one the model was trained with (sha256)")
    parser.add_argument("--batch-size", type=positive_int, default=16, metavar="B")
    parser.add_argument("--wikitext-mode", choices=("harness", "window"),
                        help="wikitext: harness (the default) scores each of its 62 articles on its own, detokenised, "
                             "in disjoint windows of the model's context, and reports word_perplexity, "
                             "byte_perplexity and bits_per_byte as lm-evaluation-harness does; window (the default "
                             "when --window, --stride or --text-bytes is given) scores the raw text as one in "
                             "overlapping windows")
    parser.add_argument("--window", type=at_least_two, metavar="T",
                        help="wikitext: tokens per window (default: the model's context)")
    parser.add_argument("--stride", type=positive_int, metavar="S",
                        help="wikitext: new tokens per window (default: window / 2)")
    parser.add_argument("--text-bytes", type=positive_int, metavar="B", help="wikitext: only its first B bytes")
    parser.add_argument("--log-samples", metavar="FILE.jsonl",
                        help="also write one row per multiple-choice item: its requests (context, continuation), each "
                             "choice's log-likelihood and greedy flag, the predictions and whether they were right")
    parser.add_argument("--no-prefix-cache", action="store_true",
                        help="run each (context + choice) whole instead of each context (and each prefix several "
                             "contexts share, as few-shot examples) once with what follows continuing from its keys "
                             "and values (the same scores, to within float rounding; slower)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="float32 (the default) gives lm-evaluation-harness's numbers item for item; bfloat16 "
                             "runs the matmuls in bf16 (about twice as fast on CPUs with bf16 units, e.g. AMX): "
                             "scores move by rounding, so an item whose choices are close can flip")
    parser.add_argument("--no-progress", action="store_true")


def main(args, beam_args: list[str]) -> int:
    if not split_list(args.tasks):
        raise UsageError(f"--tasks {args.tasks!r} names no task")
    samples = [] if args.log_samples else None
    inputs = [args.model, args.tokenizer or ""]
    if args.output:             # checked before any model runs: never over an input or a file eval did not write
        if args.log_samples and Path(args.log_samples).resolve() == Path(args.output).resolve():
            raise ValueError(f"--log-samples and --output are the same file ({args.output})")
        prepare_file(args.output, [*inputs, args.log_samples or ""], json_with("_meta"), "results file")
        prepare_file(Path(args.output).with_suffix(".md"), inputs,
                     lambda _: json_with("_meta")(Path(args.output)), "results table")
    if args.log_samples:
        prepare_file(args.log_samples, inputs, jsonl_with("task", "requests"), "samples file")
    results = run_eval(args.model, split_list(args.tasks), shared_data_dir(), limit=args.limit, shots=args.shots,
                       tokenizer=args.tokenizer, batch_size=args.batch_size, window=args.window, stride=args.stride,
                       text_bytes=args.text_bytes, progress=not args.no_progress,
                       other_tokenizer=args.other_tokenizer, samples=samples,
                       prefix_cache=not args.no_prefix_cache, wikitext_mode=args.wikitext_mode,
                       dtype=args.dtype)
    table = markdown_table(results)
    print(table)
    if args.output:
        out = Path(args.output)
        write_atomic(out, json.dumps(results, indent=1))
        write_atomic(out.with_suffix(".md"), table + "\n")
        print(f"[eval] {out} and {out.with_suffix('.md')}")
    if samples is not None:
        target = Path(args.log_samples)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in samples))
        print(f"[eval] {len(samples):,} items -> {target}")
    return 0
