"""`refinery reward`: a reward model — the transformer with a scalar head — trained on preference pairs with
the Bradley–Terry loss (training/losses.py), reported as held-out pairwise accuracy with a 95 % interval.

```
refinery reward --model out/sft --output out/reward                       # hh-rlhf's four test files
refinery reward --model out/train --pairs pairs.jsonl --output out/reward --set run.steps=300
```
Pairs: JSONL rows `{"chosen", "rejected"}` as Anthropic's hh-rlhf writes them ("\\n\\nHuman: …\\n\\nAssistant: …")
or `{"prompt", "chosen", "rejected"}`. Every 10th pair is held out. The score is read at the last real token
(the EOS that ends the conversation); inputs longer than `seq_len` keep their end, where the replies differ.
"""
from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from training.config import apply_overrides, from_dict, read_yaml
from training.losses import reward_loss
from training.loop import OptimConfig, RunConfig, train

HH_RLHF = ("preference/hh-rlhf/harmless-base/test.jsonl.gz", "preference/hh-rlhf/helpful-base/test.jsonl.gz",
           "preference/hh-rlhf/helpful-online/test.jsonl.gz",
           "preference/hh-rlhf/helpful-rejection-sampled/test.jsonl.gz")
_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_dialogue(text: str) -> list[dict]:
    """hh-rlhf's "\\n\\nHuman: …\\n\\nAssistant: …" as messages."""
    parts = _TURN.split(text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages


def read_pairs(paths: list[str | Path]) -> list[tuple[list[dict], list[dict]]]:
    pairs = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no preference pairs at {path}")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if not line.strip():
                    continue
                row = json.loads(line)
                if row.get("label") in ("tie", "skip"):      # `refinery label` records these too; not pairs
                    continue
                if "chosen" not in row or "rejected" not in row:
                    raise ValueError(f"{path}, line {i + 1}: expected chosen and rejected, got {sorted(row)}")
                if "prompt" in row:
                    prompt = [{"role": "user", "content": row["prompt"]}]
                    pairs.append((prompt + [{"role": "assistant", "content": row["chosen"]}],
                                  prompt + [{"role": "assistant", "content": row["rejected"]}]))
                else:
                    pairs.append((parse_dialogue(row["chosen"]), parse_dialogue(row["rejected"])))
    return pairs


class RewardModel(nn.Module):
    """A language-model backbone and a linear head on its final (normed) hidden state at the last real token."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.cfg = backbone.cfg
        self.head = nn.Linear(backbone.cfg.dim, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, lengths):
        hidden, _ = self.backbone.hidden_states(idx)                              # (B, T, D)
        last = hidden[torch.arange(idx.shape[0], device=idx.device), lengths - 1]   # (B, D)
        return self.head(self.backbone.norm(last))[:, 0]                          # (B,)


def load_reward_model(path: str | Path) -> RewardModel:
    """A `refinery reward` run (or one of its checkpoints) as a RewardModel."""
    from training.checkpoint import resolve
    from training.model import ModelConfig, build
    path = resolve(path)
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    if "head.weight" not in state:
        raise ValueError(f"{path}: not a reward model (no scalar head); train one with `refinery reward`")
    model = RewardModel(build(ModelConfig(**json.loads((path / "model.json").read_text()))))
    model.load_state_dict(state)
    return model.eval()


def _encode(tokenizer, messages, seq_len: int) -> list[int]:
    from training.sft import encode_conversation
    ids, _ = encode_conversation(tokenizer, messages, 10 ** 9)
    return ids[-seq_len:]


def collate_pairs(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, np.ndarray]:
    """Chosen rows then rejected rows, right-padded; lengths mark the last real token."""
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = s
    return {"input": ids, "lengths": np.array([len(s) for s in seqs], dtype=np.int64)}


class PairBatches:
    def __init__(self, pairs, rows: int, pad_id: int, seed: int, per_step: int = 1):
        self.pairs, self.rows, self.pad_id, self.seed, self.per_step = pairs, rows, pad_id, seed, per_step

    def batch(self, step: int, index: int):
        n = len(self.pairs)
        start = (step * self.per_step + index) * self.rows
        picks = []
        for slot in range(start, start + self.rows):
            epoch, position = divmod(slot, n)
            picks.append(self.pairs[np.random.default_rng([self.seed, epoch]).permutation(n)[position]])
        return collate_pairs(picks, self.pad_id)


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
        batch = collate_pairs(pairs[i:i + rows], pad_id)
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
    pairs: tuple[str, ...] = ()        # empty: hh-rlhf's four test files from the shared data folder
    seq_len: int = 256
    held_out_every: int = 10
    limit: int = 0                     # use only the first N pairs (0 = all)
    seed: int = 0


def split_pairs(data: PreferenceData):
    """(training, held-out) conversation pairs: every `held_out_every`-th pair (by position) held out."""
    from pipeline.shared_data import shared_data_dir
    pairs = read_pairs(list(data.pairs) or [shared_data_dir() / p for p in HH_RLHF])
    if data.limit:
        pairs = pairs[:data.limit]
    held = [p for i, p in enumerate(pairs) if i % data.held_out_every == 0]
    train_pairs = [p for i, p in enumerate(pairs) if i % data.held_out_every != 0]
    return train_pairs, held


@dataclass(frozen=True)
class RewardConfig:
    model: str = "out/train"
    center_coef: float = 0.0           # η of the centring term; TRL suggests 0.01
    data: PreferenceData = field(default_factory=PreferenceData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/reward", steps=200, batch_size=8,
                                                              eval_every=50, checkpoint_every=100))


def load_reward_config(path=None, overrides=()) -> RewardConfig:
    data = read_yaml(path) if path else {}
    return from_dict(RewardConfig, apply_overrides(data, list(overrides)), where=str(path or "config"))


def train_reward(cfg: RewardConfig, log=print) -> dict:
    import os

    from training.checkpoint import load_model_weights
    from training.lm import _our_tokenizer
    from training.tokenizer import Tokenizer
    backbone = load_model_weights(cfg.model)
    if backbone.cfg.max_seq_len < cfg.data.seq_len:
        backbone.extend_context(cfg.data.seq_len)
    tokenizer = Tokenizer(str(_our_tokenizer(Path(cfg.model))))
    train_pairs, held = ([(_encode(tokenizer, c, cfg.data.seq_len), _encode(tokenizer, r, cfg.data.seq_len))
                          for c, r in part] for part in split_pairs(cfg.data))
    model = RewardModel(backbone)
    before = pairwise_accuracy(model, held, tokenizer.pad_id)
    log(f"[reward] {len(train_pairs):,} training and {len(held):,} held-out pairs; held-out accuracy before "
        f"{before['accuracy']:.3f}")

    def evaluate(m):
        result = pairwise_accuracy(m, held, tokenizer.pad_id)
        return {"pair_accuracy": result["accuracy"], "ci95_low": result["ci95"][0], "ci95_high": result["ci95"][1],
                "mean_margin": result["mean_margin"]}

    per_step = cfg.run.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    config = {"model": cfg.model, "center_coef": cfg.center_coef, "data": asdict(cfg.data),
              "optim": asdict(cfg.optim), "run": asdict(cfg.run)}
    summary = train(model, PairBatches(train_pairs, cfg.run.batch_size, tokenizer.pad_id, cfg.data.seed, per_step),
                    reward_objective(cfg.center_coef), cfg.optim, cfg.run, evaluate=evaluate, config=config)
    if summary:
        summary["held_out_before"] = before
        summary["held_out_after"] = pairwise_accuracy(model, held, tokenizer.pad_id)
        (Path(cfg.run.out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
