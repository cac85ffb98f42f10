"""`refinery dpo`: direct preference optimisation of one of our checkpoints on chosen/rejected pairs.

```
refinery dpo --model out/sft --output out/dpo                                   # hh-rlhf's four test files
refinery dpo --model out/sft --pairs labels.jsonl --output out/dpo --set beta=0.1 --set length_normalized=true
```
The reference is the starting model; its log-probs of every pair are computed once, before training, and kept
with the pair. Only the final assistant reply is scored (the shared conversation before it is context), summed
over its tokens — or averaged (`length_normalized`, the SimPO / R-DPO remedy for DPO's drift to long replies).
`variant: ipo` swaps the sigmoid loss for IPO's squared one. Reported on the held-out pairs (every 10th):
reward accuracy and margin (β·[(π_c − ref_c) − (π_r − ref_r)]), the policy's own log-prob margin
log π(c) − log π(r) before and after, and the mean length of sampled replies to held-out prompts before and after.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from training.config import at_least, load_config
from training.loop import OptimConfig, RunConfig, eval_ends, train
from training.losses import dpo_loss, sequence_logprobs
from training.post.batches import EpochBatches
from training.post.chat import reply, stop_ids
from training.post.conversation import encode_reply
from training.post.lora import LoraOptions, with_lora
from training.post.policy import finish, load_policy
from training.post.reward import PreferenceData, split_pairs
from training.post.sft import collate


def collate_preferences(examples: list[dict], pad_id: int) -> dict[str, np.ndarray]:
    """Chosen rows, then rejected rows (shifted inputs/targets), with their reference log-probs."""
    batch = collate([e["chosen"] for e in examples] + [e["rejected"] for e in examples], pad_id)
    batch["ref_chosen"] = np.array([e["ref"][0] for e in examples], dtype=np.float32)
    batch["ref_rejected"] = np.array([e["ref"][1] for e in examples], dtype=np.float32)
    return batch


def _logprobs(model, batch: dict, average: bool) -> torch.Tensor:
    logits = model(batch["input"]).logits
    return sequence_logprobs(logits, batch["target"], average=average)


@torch.no_grad()
def reference_logprobs(model, examples: list[dict], pad_id: int, average: bool, rows: int = 8) -> None:
    """Fill each example's "ref" with (log π_ref(chosen), log π_ref(rejected)): once, before training."""
    device = next(model.parameters()).device
    model.eval()
    for i in range(0, len(examples), rows):
        chunk = examples[i:i + rows]
        batch = collate([e["chosen"] for e in chunk] + [e["rejected"] for e in chunk], pad_id)
        batch = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        logps = _logprobs(model, batch, average).cpu().tolist()
        for j, example in enumerate(chunk):
            example["ref"] = (logps[j], logps[len(chunk) + j])


def dpo_objective(beta: float, variant: str, average: bool):
    def objective(model, batch):
        logps = _logprobs(model, batch, average)
        half = logps.shape[0] // 2
        loss, chosen_reward, rejected_reward = dpo_loss(logps[:half], logps[half:], batch["ref_chosen"],
                                                        batch["ref_rejected"], beta, variant)
        return loss, {"reward_accuracy": (chosen_reward > rejected_reward).float().mean(),
                      "reward_margin": (chosen_reward - rejected_reward).mean()}
    return objective


@torch.no_grad()
def preference_metrics(model, examples: list[dict], pad_id: int, beta: float, average: bool, rows: int = 8) -> dict:
    """Held-out reward accuracy (a tie counts half) and margins; the policy's own log-prob margin."""
    device = next(model.parameters()).device
    rewards, policy_margins = [], []
    for i in range(0, len(examples), rows):
        chunk = examples[i:i + rows]
        batch = collate([e["chosen"] for e in chunk] + [e["rejected"] for e in chunk], pad_id)
        batch = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
        logps = _logprobs(model, batch, average).cpu()
        half = len(chunk)
        ref = torch.tensor([e["ref"] for e in chunk])
        rewards += (beta * ((logps[:half] - ref[:, 0]) - (logps[half:] - ref[:, 1]))).tolist()
        policy_margins += (logps[:half] - logps[half:]).tolist()
    rewards = np.array(rewards)
    return {"reward_accuracy": float(np.mean(rewards > 0) + 0.5 * np.mean(rewards == 0)) if len(rewards) else 0.0,
            "reward_margin": float(rewards.mean()) if len(rewards) else 0.0,
            "logp_margin": float(np.mean(policy_margins)) if policy_margins else 0.0,
            "logp_margin_accuracy": float(np.mean(np.array(policy_margins) > 0)) if policy_margins else 0.0}


@torch.no_grad()
def reply_lengths(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, temperature: float,
                  seed: int) -> dict:
    """Mean length (tokens) of sampled replies to `prompts`, each prompt with its own fixed seed, and the share
    that ended with a stop token."""
    model.eval()
    lengths, stopped = [], 0
    for i, messages in enumerate(prompts):
        text, ids = reply(model, tokenizer, messages, max_new_tokens, temperature, 0, 1.0, seed=seed + i)
        lengths.append(len(ids))
        stopped += bool(ids) and ids[-1] in stop_ids(tokenizer)
    return {"mean_reply_tokens": float(np.mean(lengths)) if lengths else 0.0,
            "stopped_share": stopped / max(1, len(prompts)), "prompts": len(prompts)}


@dataclass(frozen=True)
class LengthCheck:
    prompts: int = 32                  # held-out prompts whose sampled replies are measured before and after
    max_new_tokens: int = 96
    temperature: float = 0.7
    seed: int = 0

    def __post_init__(self):
        at_least(self, 0, "prompts", "temperature", "seed")
        at_least(self, 1, "max_new_tokens")


@dataclass(frozen=True)
class DPOConfig:
    model: str = "out/sft"
    beta: float = 0.1
    variant: str = "sigmoid"           # sigmoid (DPO) | ipo
    length_normalized: bool = False    # mean instead of summed log-probs over the reply
    data: PreferenceData = field(default_factory=PreferenceData)
    lora: LoraOptions = field(default_factory=LoraOptions)
    lengths: LengthCheck = field(default_factory=LengthCheck)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/dpo", steps=200, batch_size=8,
                                                              eval_every=50, checkpoint_every=100,
                                                              eval_at_start=True))

    def __post_init__(self):
        if self.variant not in ("sigmoid", "ipo"):
            raise ValueError(f"variant must be sigmoid or ipo, got {self.variant!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def load_dpo_config(path=None, overrides=(), base: dict | None = None) -> DPOConfig:
    return load_config(DPOConfig, path, overrides, base)


def load_preference_split(tokenizer, data: PreferenceData):
    """(train, held-out, skipped) — examples {"chosen": (ids, labels), "rejected": …, "prompt": messages}, every
    `held_out_every`-th pair held out; skipped: {"no_final_reply": pairs without a final reply on both sides,
    "too_long": pairs dropped by data.truncation (drop, or keep_start cutting a whole reply), "same_reply": pairs
    whose chosen and rejected are the same}."""
    skipped = {"no_final_reply": 0, "too_long": 0, "same_reply": 0}

    def encode(pairs):
        out = []
        for chosen, rejected in pairs:
            if not _ends_with_replies(chosen, rejected):
                skipped["no_final_reply"] += 1
                continue
            sides = [encode_reply(tokenizer, side, data.seq_len, data.truncation) for side in (chosen, rejected)]
            if None in sides:
                skipped["too_long"] += 1
                continue
            out.append({"chosen": sides[0], "rejected": sides[1], "prompt": chosen[:-1]})
        return out
    train_pairs, held_pairs, skipped["same_reply"] = split_pairs(data)
    train_set, held = encode(train_pairs), encode(held_pairs)
    return train_set, held, skipped


def _ends_with_replies(chosen: list[dict], rejected: list[dict]) -> bool:
    """DPO compares two final replies; a pair whose side ends on a user turn (2 of hh-rlhf's 8,552) has none."""
    return bool(chosen and rejected) and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"


def train_dpo(cfg: DPOConfig, resume: bool = False, log=print) -> dict:
    policy = load_policy(cfg.model, cfg.data.seq_len)
    model, tokenizer, pad, average = policy.model, policy.tokenizer, policy.pad_id, cfg.length_normalized
    train_set, held, skipped = load_preference_split(tokenizer, cfg.data)
    if not held or not train_set:
        raise ValueError(f"{len(train_set)} training and {len(held)} held-out pairs left: lower "
                         f"data.held_out_every, add pairs" + (", or raise data.seq_len" if skipped["too_long"] else ""))
    reference_logprobs(model, train_set + held, pad, average)
    check = cfg.lengths
    prompts = [e["prompt"] for e in held[:check.prompts]]
    lengths_before = reply_lengths(model, tokenizer, prompts, check.max_new_tokens, check.temperature, check.seed)
    too_long = (f", {skipped['too_long']} longer than {cfg.data.seq_len} tokens dropped "
                f"(data.truncation={cfg.data.truncation})" if skipped["too_long"] else "")
    same = f", {skipped['same_reply']} with the same chosen and rejected left out" if skipped["same_reply"] else ""
    log(f"[dpo] {len(train_set):,} training and {len(held):,} held-out pairs ({skipped['no_final_reply']} without a "
        f"final reply on both sides, skipped{too_long}{same}); reference log-probs computed; sampled replies "
        f"{lengths_before['mean_reply_tokens']:.1f} tokens")

    def evaluate(m):
        return preference_metrics(m, held, pad, cfg.beta, average)

    def after(m):
        finish(policy, m, cfg.run.out_dir)
        first, last = eval_ends(cfg.run.out_dir)
        m.cpu()
        return {"pairs": {"train": len(train_set), "held_out": len(held), "skipped_no_final_reply": skipped["no_final_reply"],
                          "skipped_too_long": skipped["too_long"],
                          "skipped_same_reply": skipped["same_reply"]},
                "held_out_before": {k: first[k] for k in ("reward_accuracy", "reward_margin", "logp_margin",
                                                          "logp_margin_accuracy") if k in first},
                "held_out_after": {k: last[k] for k in ("reward_accuracy", "reward_margin", "logp_margin",
                                                        "logp_margin_accuracy") if k in last},
                "lengths_before": lengths_before,
                "lengths_after": reply_lengths(m, tokenizer, prompts, check.max_new_tokens, check.temperature,
                                               check.seed)}

    config = {"model": cfg.model, "beta": cfg.beta, "variant": cfg.variant,
              "length_normalized": cfg.length_normalized, "data": asdict(cfg.data), "lora": asdict(cfg.lora),
              "lengths": asdict(cfg.lengths),
              "optim": asdict(cfg.optim), "run": asdict(cfg.run)}
    model.train()
    batches = EpochBatches(train_set, cfg.run.batch_size, lambda rows: collate_preferences(rows, pad), cfg.data.seed,
                           cfg.data.shuffle)
    if cfg.lora.enabled:        # the reference log-probs above are the starting model's: adapters start at zero
        model = with_lora(model, cfg.lora)
    return train(model, batches, dpo_objective(cfg.beta, cfg.variant, average), cfg.optim, cfg.run,
                 evaluate=evaluate, config=config, resume=resume, after=after, inputs=[cfg.model, *cfg.data.pairs],
                 provenance=policy.provenance)
