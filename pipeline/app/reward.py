"""`refinery reward`: a Bradley-Terry reward model on preference pairs (training/post/reward.py).

```
refinery reward --model out/sft --output out/reward
```
"""
from __future__ import annotations

from pipeline.app.preference import add_preference_options, preference_config
from training.post.reward import load_reward_config, train_reward


def configure(parser) -> None:
    parser.description = ("A scalar head on a model (ours, an HF Llama folder or a GGUF file; --lora for adapters), "
                          "trained on chosen/rejected pairs (every 10th pair "
                          "held out); reports held-out pairwise accuracy with a 95 % Wilson interval.")
    add_preference_options(parser, "--set run.steps=300 --set center_coef=0.01 --set data.limit=2000")


def main(args, beam_args: list[str]) -> int:
    cfg = preference_config(load_reward_config, args)
    summary = train_reward(cfg, resume=bool(args.resume))
    if summary:
        before, after = summary["held_out_before"], summary["held_out_after"]
        print(f"[reward] held-out pairwise accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f} "
              f"(95 % CI {after['ci95'][0]:.3f}-{after['ci95'][1]:.3f}, {after['pairs']:,} pairs); "
              f"{cfg.run.out_dir}")
    return 0
