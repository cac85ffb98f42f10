"""`refinery reward`: a reward model — the transformer with a scalar head — trained on preference pairs with
the Bradley–Terry loss (training/losses.py), reported as held-out pairwise accuracy with a 95 % interval.

```
refinery reward --model out/sft --output out/reward                       # hh-rlhf's four test files
refinery reward --model out/train --pairs pairs.jsonl --output out/reward --set run.steps=300
```
Pairs: anything `training/post/conversation.py` reads as pairs. Every 10th pair is held out. The score is read
at the last real token (the EOS that ends the conversation); inputs longer than `seq_len` keep their end, where
the replies differ.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.architectures import build
from training.checkpoint import find_checkpoint, model_state
from training.config import MAX_CONTEXT, at_least, at_most, load_config
from training.files import read_json_object
from training.hf import config_from_hf, from_hf_state_dict, imported, load_model
from training.loop import OptimConfig, RunConfig, eval_ends, train
from training.losses import reward_loss
from training.model import ModelConfig
from training.post.batches import EpochBatches
from training.post.conversation import TRUNCATIONS, encode_conversation, read_pairs, truncated
from training.post.heads import ScalarHead
from training.post.lora import LoraOptions, with_lora
from training.post.policy import finish, load_policy


def load_reward_model(path: str | Path) -> ScalarHead:
    """A `refinery reward` run (or one of its checkpoints), or an HF `LlamaForSequenceClassification` folder
    with one label (what `refinery reward` leaves in RUN/model for an imported model), as a ScalarHead model."""
    hf = imported(path)
    if hf is not None and (hf / "adapter_config.json").is_file():       # a LoRA reward run's adapters and head
        from safetensors.torch import load_file  # optional ([hf] extra): only for Hugging Face folders
        head = load_file(str(hf / "adapter_model.safetensors")).get("base_model.model.score.weight")
        if head is None:
            raise ValueError(f"{hf}: LoRA adapters without a reward head (score); train one with `refinery reward`")
        model = ScalarHead(load_model(hf), bias=False)
        model.head.weight.data.copy_(head.reshape(1, -1))
        return model.eval()
    if hf is not None and hf.is_dir():
        from safetensors.torch import load_file  # optional ([hf] extra): only for Hugging Face folders
        config = read_json_object(hf / "config.json")
        labels = config.get("num_labels") or len(config.get("id2label") or {"0": "score"})
        if "LlamaForSequenceClassification" not in config.get("architectures", []) or labels != 1:
            raise ValueError(f"{hf}: not a reward model (expected LlamaForSequenceClassification with one label, "
                             f"got {', '.join(config.get('architectures') or ['no architecture'])}); train one with "
                             f"`refinery reward`")
        state = {}
        for f in sorted(hf.glob("*.safetensors")):
            state.update(load_file(str(f)))
        cfg = config_from_hf(config)
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])   # the head it does not have
        model = ScalarHead(from_hf_state_dict(state, cfg), bias=False)
        model.head.weight.data.copy_(state["score.weight"].reshape(1, cfg.dim))
        return model.eval()
    path = find_checkpoint(path)
    run_config = next((folder / "config.json" for folder in path.parents if (folder / "config.json").is_file()), None)
    if run_config is not None and "ppo" in read_json_object(run_config):
        raise ValueError(f"{path}: a PPO policy (its head is a value function), not a reward model")
    state = model_state(path)
    if "head.weight" not in state:
        raise ValueError(f"{path}: not a reward model (no scalar head); train one with `refinery reward`")
    model = ScalarHead(build(ModelConfig(**json.loads((path / "model.json").read_text()))), bias="head.bias" in state)
    model.load_state_dict(state)
    return model.eval()


def encode_pair_side(tokenizer, messages, seq_len: int, truncation: str = "keep_end") -> list[int] | None:
    """The conversation's ids, cut to `seq_len` as `truncation` says (None: dropped)."""
    ids, _ = encode_conversation(tokenizer, messages, 10 ** 9)
    keep = truncated(ids, seq_len, truncation)
    return None if keep is None else ids[keep]


def encode_pairs(tokenizer, pairs, data) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(encoded pairs, pairs dropped as too long) — a pair goes if either side is dropped."""
    encoded = [(encode_pair_side(tokenizer, c, data.seq_len, data.truncation),
                encode_pair_side(tokenizer, r, data.seq_len, data.truncation)) for c, r in pairs]
    kept = [(c, r) for c, r in encoded if c is not None and r is not None]
    return kept, len(encoded) - len(kept)


def collate_scored(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, np.ndarray]:
    """Chosen rows then rejected rows, right-padded; lengths mark the last real token."""
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = s
    return {"input": ids, "lengths": np.array([len(s) for s in seqs], dtype=np.int64)}


def reward_objective(center_coef: float):
    def objective(model, batch):
        scores = model(batch["input"], batch["lengths"])
        half = scores.shape[0] // 2
        chosen, rejected = scores[:half], scores[half:]
        return reward_loss(chosen, rejected, center_coef), {"accuracy": (chosen > rejected).float().mean()}
    return objective


def wilson_interval(correct: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@torch.no_grad()
def pairwise_accuracy(model, pairs, pad_id: int, rows: int = 8) -> dict:
    device = next(model.parameters()).device
    correct, margins = 0.0, []
    for i in range(0, len(pairs), rows):
        batch = collate_scored(pairs[i:i + rows], pad_id)
        scores = model(torch.from_numpy(batch["input"]).to(device), torch.from_numpy(batch["lengths"]).to(device))
        half = scores.shape[0] // 2
        diff = (scores[:half] - scores[half:]).cpu()
        correct += float((diff > 0).sum()) + 0.5 * float((diff == 0).sum())      # a tie is half right
        margins += diff.tolist()
    low, high = wilson_interval(correct, len(pairs))
    return {"accuracy": correct / max(1, len(pairs)), "ci95": [low, high], "pairs": len(pairs),
            "mean_margin": float(np.mean(margins)) if margins else 0.0}


@dataclass(frozen=True)
class PreferenceData:
    """Preference pairs for `refinery reward` and `refinery dpo`."""
    pairs: tuple[str, ...] = ()        # JSONL(.gz) files; `refinery reward` / `dpo` default to hh-rlhf's test files
    seq_len: int = 256
    held_out_every: int = 10
    limit: int = 0                     # use only the first N pairs (0 = all)
    seed: int = 0
    shuffle: bool = True               # false: the file's order every pass (as TRL with a sequential sampler)
    truncation: str = "keep_end"       # longer than seq_len: keep_end | keep_start (TRL's DPO) | drop (TRL's reward)

    def __post_init__(self):
        at_least(self, 2, "seq_len", "held_out_every")
        at_most(self, MAX_CONTEXT, "seq_len")
        at_least(self, 0, "limit", "seed")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"data.truncation must be one of {', '.join(TRUNCATIONS)}, got {self.truncation!r}")


def split_pairs(data: PreferenceData):
    """(training, held-out, same) conversation pairs: every `held_out_every`-th pair (by position) held out; a pair
    whose chosen and rejected are the same conversation states no preference (36 of hh-rlhf's 8,552) and is left
    out of both, `same` counting them."""
    if not data.pairs:
        raise ValueError("data.pairs: no preference pair files given")
    pairs = read_pairs(list(data.pairs))
    if data.limit:
        pairs = pairs[:data.limit]
    held = [p for i, p in enumerate(pairs) if i % data.held_out_every == 0 and p[0] != p[1]]
    train_pairs = [p for i, p in enumerate(pairs) if i % data.held_out_every != 0 and p[0] != p[1]]
    same = sum(chosen == rejected for chosen, rejected in pairs)
    if not held or not train_pairs:
        raise ValueError(f"need training and held-out pairs, got {len(train_pairs)} and {len(held)} "
                         f"(data.held_out_every {data.held_out_every}"
                         + (f"; {same} pairs left out as their chosen and rejected are the same" if same else "") + ")")
    return train_pairs, held, same


@dataclass(frozen=True)
class RewardConfig:
    model: str = "out/train"
    center_coef: float = 0.0           # η of the centring term; TRL suggests 0.01
    data: PreferenceData = field(default_factory=PreferenceData)
    lora: LoraOptions = field(default_factory=LoraOptions)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/reward", steps=200, batch_size=8,
                                                              eval_every=50, checkpoint_every=100,
                                                              eval_at_start=True))


def load_reward_config(path=None, overrides=(), base: dict | None = None) -> RewardConfig:
    return load_config(RewardConfig, path, overrides, base)


def train_reward(cfg: RewardConfig, resume: bool = False, log=print) -> dict:
    policy = load_policy(cfg.model, cfg.data.seq_len)
    pad = policy.pad_id
    *parts, same = split_pairs(cfg.data)
    (train_pairs, dropped_train), (held, dropped_held) = (encode_pairs(policy.tokenizer, part, cfg.data)
                                                          for part in parts)
    model = ScalarHead(policy.model, bias=policy.hf is None)
    if cfg.lora.enabled:
        model = with_lora(model, cfg.lora, train_in_full=("head",))
    if not train_pairs or not held:
        raise ValueError(f"data.truncation=drop left {len(train_pairs)} training and {len(held)} held-out pairs: "
                         f"raise data.seq_len ({cfg.data.seq_len}) or keep a side of each long pair")
    left_out = ([f"{dropped_train + dropped_held} longer than {cfg.data.seq_len} tokens, dropped"]
                if dropped_train + dropped_held else []) + \
        ([f"{same} with the same chosen and rejected, left out"] if same else [])
    log(f"[reward] {len(train_pairs):,} training and {len(held):,} held-out pairs"
        + (f" ({'; '.join(left_out)})" if left_out else ""))

    def evaluate(m):
        result = pairwise_accuracy(m, held, pad)
        return {"pair_accuracy": result["accuracy"], "ci95_low": result["ci95"][0], "ci95_high": result["ci95"][1],
                "mean_margin": result["mean_margin"]}

    def held_out(record: dict) -> dict:
        return {"accuracy": record.get("pair_accuracy"), "ci95": [record.get("ci95_low"), record.get("ci95_high")],
                "pairs": len(held), "mean_margin": record.get("mean_margin")}

    def after(m):
        finish(policy, m, cfg.run.out_dir, reward=True)
        first, last = eval_ends(cfg.run.out_dir)        # the last is the run's final evaluation, as in SFT and DPO
        return {"pairs": {"train": len(train_pairs), "held_out": len(held),
                          "skipped_too_long": dropped_train + dropped_held, "skipped_same_reply": same},
                "held_out_before": held_out(first), "held_out_after": held_out(last)}

    batches = EpochBatches(train_pairs, cfg.run.batch_size, lambda rows: collate_scored(rows, pad), cfg.data.seed,
                           cfg.data.shuffle)
    config = {"model": cfg.model, "center_coef": cfg.center_coef, "data": asdict(cfg.data), "lora": asdict(cfg.lora),
              "optim": asdict(cfg.optim), "run": asdict(cfg.run)}
    return train(model, batches, reward_objective(cfg.center_coef), cfg.optim, cfg.run, evaluate=evaluate,
                 config=config, resume=resume, after=after, inputs=[cfg.model, *cfg.data.pairs],
                 provenance=policy.provenance)
