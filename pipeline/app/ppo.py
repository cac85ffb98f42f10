"""`refinery ppo`: RLHF by PPO against a reward model, through the shared loop (training/post/ppo.py).

```
refinery ppo --model out/sft --reward-model out/reward --output out/ppo
refinery ppo --resume out/ppo
```
"""
from __future__ import annotations

import dataclasses
import json

from pipeline.app.common import HH_RLHF, MODELS, add_config_options, add_run_options, run_config, shared_paths
from training.post.ppo import load_ppo_config, train_ppo


def configure(parser) -> None:
    parser.description = ("PPO of a model (ours, an HF Llama folder or a GGUF file; --lora for adapters) against a "
                          "`refinery reward` model: sampled replies, per-token "
                          "k1 KL penalty to the starting model, GAE, whitened advantages, clipped policy and value "
                          "losses, in the loop every objective shares (resume, DDP, bf16). Held-out prompts' mean "
                          "reward score, KL and reply length are measured before, during and after.")
    add_run_options(parser, MODELS + "; also the KL reference")
    parser.add_argument("--reward-model", metavar="REWARD_RUN")
    parser.add_argument("--prompts", action="append", default=[], metavar="FILE",
                        help="preference pairs (their context is the prompt) or JSONL {prompt}/{messages}; "
                             "default hh-rlhf's test files")
    add_config_options(parser, "--set ppo.iterations=100 --set ppo.kl_coef=0.05 --set optim.lr=1e-5 "
                               "--set ppo.kl_bound=8")


def main(args, beam_args: list[str]) -> int:
    flags = [f"model={args.model}", f"run.out_dir={args.output}"]
    if args.reward_model:
        flags.append(f"reward_model={args.reward_model}")
    if args.prompts:
        flags.append("data.prompts=" + json.dumps(args.prompts))
    cfg = run_config(load_ppo_config, args, [*flags, *args.set])
    if not cfg.data.prompts:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prompts=tuple(shared_paths(HH_RLHF))))
    summary = train_ppo(cfg, resume=bool(args.resume))
    before, after = summary["held_out_before"], summary["held_out_after"]
    print(f"[ppo] held-out reward score {before['score']:+.3f} -> {after['score']:+.3f}, KL {after['kl']:.3f} "
          f"(bound {summary['kl_bound']}), reply length {before['reply_tokens']:.1f} -> {after['reply_tokens']:.1f} "
          f"tokens; {cfg.run.out_dir}")
    return 0
