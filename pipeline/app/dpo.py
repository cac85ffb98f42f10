"""`refinery dpo`: direct preference optimisation (DPO / IPO) on preference pairs (training/post/dpo.py).

```
refinery dpo --model out/sft --output out/dpo --set beta=0.1
```
"""
from __future__ import annotations

from pipeline.app.preference import add_preference_options, preference_config
from training.post.dpo import load_dpo_config, train_dpo


def configure(parser) -> None:
    parser.description = ("DPO of a model (ours, an HF Llama folder or a GGUF file; --lora for adapters) against "
                          "itself as the frozen reference (its log-probs "
                          "computed once). Reports held-out reward accuracy and margins, the policy's log-prob margin, "
                          "and the mean length of sampled replies to held-out prompts before and after.")
    add_preference_options(parser, "--set beta=0.1 --set variant=ipo --set length_normalized=true "
                                   "--set run.steps=300")


def main(args, beam_args: list[str]) -> int:
    cfg = preference_config(load_dpo_config, args)
    summary = train_dpo(cfg, resume=bool(args.resume))
    if summary:
        before, after = summary["held_out_before"], summary["held_out_after"]
        print(f"[dpo] held-out reward accuracy {after['reward_accuracy']:.3f}, margin {after['reward_margin']:+.4f}; "
              f"log-prob margin {before['logp_margin']:+.3f} -> {after['logp_margin']:+.3f}; reply length "
              f"{summary['lengths_before']['mean_reply_tokens']:.1f} -> "
              f"{summary['lengths_after']['mean_reply_tokens']:.1f} tokens; {cfg.run.out_dir}")
    return 0
