"""`refinery train`: pretrain on token shards (training/pretrain.py, docs/training.md).

```
refinery train --config configs/train-sample.yaml --set run.steps=200
refinery train --resume out/train
torchrun --nproc_per_node N -m pipeline.app.cli train --config FILE
```
"""
from __future__ import annotations

from pipeline.app.common import add_config_options, saved_config
from training.pretrain import load_train_config, pretrain


def configure(parser) -> None:
    parser.description = ("Pretrain the decoder-only transformer on the token shards of `refinery tokenize`: one loop "
                          "with AdamW, warmup + cosine or warmup-stable-decay, gradient accumulation, exact resume. "
                          "Writes RUN/log.jsonl, RUN/checkpoints/, RUN/summary.json and RUN/loss.png.")
    parser.epilog = ("Example: refinery train --config configs/train-sample.yaml --set run.steps=200. Multi-process: "
                     "torchrun --nproc_per_node N -m pipeline.app.cli train --config FILE")
    add_config_options(parser, "--set optim.lr=1e-3 --set run.steps=100",
                       "YAML with model / data / optim / run sections (configs/train-sample.yaml documents every key)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its latest intact checkpoint (its saved config, then "
                             "--set)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in run.out_dir (only the files its manifest lists are removed)")


def main(args, beam_args: list[str]) -> int:
    if args.resume:
        cfg = saved_config(args.resume, lambda _, sets, base: load_train_config(args.config, sets, base=base), args.set)
    else:
        cfg = load_train_config(args.config, [*args.set, *(["run.overwrite=true"] if args.overwrite else [])])
    summary = pretrain(cfg, resume=bool(args.resume))
    if summary:
        final = summary.get("final_eval") or {}
        line = f"[train] {summary['steps']:,} steps, {summary['tokens']:,} tokens in {summary['wall_s']} s"
        if "bpb" in final:
            line += f"; held-out {final['bpb']:.4f} bits/byte (unigram {summary['unigram_bpb']:.4f})"
        print(line + f"; {cfg.run.out_dir}/loss.png")
    return 0
