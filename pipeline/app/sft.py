"""`refinery sft`: supervised fine-tuning, loss on the assistant's tokens (training/post/sft.py).

```
refinery sft --model out/run/train --data ../shared/data/sft/alpaca_data_1k.json --output out/sft
refinery sft --resume out/sft
```
"""
from __future__ import annotations

from pipeline.app.common import add_config_options, add_run_options, run_config
from training.post.sft import load_sft_config, sft


def configure(parser) -> None:
    parser.description = ("Fine-tune a model (ours, an HF Llama folder or a GGUF file, through its chat template; "
                          "--lora "
                          "for adapters) on Alpaca JSON, Self-Instruct seed tasks, or JSONL with "
                          "messages or prompt/completion; every 10th example is held out and its answer loss logged "
                          "before and during training.")
    add_run_options(parser)
    parser.add_argument("--data", metavar="FILE", help="the conversations")
    add_config_options(parser, "--set run.steps=300 --set optim.lr=1e-4 --set data.seq_len=512",
                       "YAML with data / optim / run sections")


def main(args, beam_args: list[str]) -> int:
    flags = [f"model={args.model}", f"run.out_dir={args.output}", *([f"data.data={args.data}"] if args.data else [])]
    cfg = run_config(load_sft_config, args, [*flags, *args.set])
    summary = sft(cfg, resume=bool(args.resume))
    if summary:
        print(f"[sft] held-out answer loss {summary['answer_loss_before']:.4f} -> {summary['answer_loss_after']:.4f} "
              f"after {summary['steps']:,} steps; {cfg.run.out_dir}")
    return 0
