"""`refinery ppo`: RLHF by PPO against a reward model (Ouyang et al. 2022; the "N implementation details" recipe).

```
refinery ppo --model out/sft --reward-model out/reward --output out/ppo
refinery ppo --model out/sft --reward-model out/reward --prompts prompts.jsonl --set iterations=100 --set kl_coef=0.1
```
Each iteration: sample replies to a batch of prompts with our generation (KV cache); score each finished
conversation with the reward model; per-token reward = −kl_coef · (log π − log π_ref) (the k1 estimator against
the frozen starting model), plus the score on the reply's last token — normalised by the mean and standard
deviation of the reward model's scores on the starting policy's replies (`normalize_reward`); GAE (γ, λ) on a value head that shares
the policy's trunk; whitened advantages; `ppo_epochs` passes of clipped policy and value losses over minibatches.
Every `eval_every` iterations, replies to held-out prompts (fixed seeds) give the reward model's mean score, the
mean KL(π ‖ π_ref) per reply (exact over the vocabulary at each step, summed over the reply) and the mean reply
length; when that KL passes `kl_bound` training stops and the
last weights within the bound are kept. Prompts: the conversations before the final reply of preference pairs
(default hh-rlhf's test files; every 10th held out), or JSONL rows {"prompt"} / {"messages"}.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from training.config import apply_overrides, from_dict, read_yaml
from training.losses import gae, ppo_policy_loss, ppo_value_loss, whiten


class PolicyWithValue(nn.Module):
    """The language model and a scalar value head (zero-initialised) on its final normed hidden states."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.cfg = backbone.cfg
        self.value_head = nn.Linear(backbone.cfg.dim, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, idx):
        hidden, _ = self.backbone.hidden_states(idx)
        normed = self.backbone.norm(hidden)                                   # (B, T, D)
        return self.backbone.lm_head(normed), self.value_head(normed)[..., 0]  # (B, T, V), (B, T)


def read_prompts(paths: list[str | Path]) -> list[list[dict]]:
    """Conversations to reply to: the context of preference pairs, or JSONL {"prompt"} / {"messages"} rows."""
    from training.reward import read_pairs
    prompts = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no prompts at {path}")
        if path.suffix == ".gz" or '"chosen"' in path.open(encoding="utf-8").readline():
            prompts += [chosen[:-1] for chosen, _ in read_pairs([path])]
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            if "messages" in row:
                messages = row["messages"]
                prompts.append(messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages)
            elif "prompt" in row:
                prompts.append([{"role": "user", "content": row["prompt"]}])
            else:
                raise ValueError(f"{path}, line {i + 1}: expected prompt, messages or chosen/rejected; got {sorted(row)}")
    return [p for p in prompts if p and p[-1]["role"] == "user"]


def batch_rows(rows: list[dict], pad_id: int):
    """Right-padded prompt+reply ids (B, W) and reply-aligned gather positions, reply tokens and mask (B, R):
    position j of row b is the one whose logits predict reply token j."""
    width = max(len(r["prompt"]) + len(r["reply"]) for r in rows)
    longest = max(len(r["reply"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    tokens = torch.zeros((len(rows), longest), dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for b, row in enumerate(rows):
        p, r = len(row["prompt"]), len(row["reply"])
        ids[b, :p + r] = torch.tensor(row["prompt"] + row["reply"])
        positions[b, :r] = torch.arange(p - 1, p - 1 + r)
        tokens[b, :r] = torch.tensor(row["reply"])
        mask[b, :r] = True
    return ids, positions, tokens, mask


def reply_logprobs(logits: torch.Tensor, positions, tokens) -> torch.Tensor:
    """log p(reply token j) (B, R) from full-sequence logits (B, W, V)."""
    picked = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))       # (B, R, V)
    return torch.log_softmax(picked.float(), dim=-1).gather(-1, tokens[..., None])[..., 0]


@torch.no_grad()
def score_replies(reward_model, rows: list[dict], tokenizer) -> torch.Tensor:
    """The reward model's score of each conversation closed as in training (reply, <|end|>, EOS)."""
    end, eos = tokenizer.roles["<|end|>"], tokenizer.eos_id
    seqs = []
    for row in rows:
        reply = list(row["reply"])
        if reply and reply[-1] == eos:
            reply = reply[:-1]
        if not reply or reply[-1] != end:
            reply.append(end)
        seqs.append((row["prompt"] + reply + [eos])[-reward_model.cfg.max_seq_len:])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
    return reward_model(ids, torch.tensor([len(s) for s in seqs])).float()


@dataclass(frozen=True)
class PPOConfig:
    model: str = "out/sft"             # the policy's start and the KL reference
    reward_model: str = "out/reward"
    prompts: tuple[str, ...] = ()      # empty: the contexts of hh-rlhf's four test files
    held_out_every: int = 10
    held_out_prompts: int = 32
    limit: int = 0                     # use only the first N prompts (0 = all)
    max_prompt_tokens: int = 128       # longer prompts keep their end
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    iterations: int = 40
    rollouts: int = 16                 # prompts answered per iteration
    minibatch: int = 8
    ppo_epochs: int = 2
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    kl_bound: float = 8.0              # nats per reply on held-out prompts; training stops past it
    normalize_reward: bool = True      # scores as (s - mean) / std of the starting policy's replies
    lr: float = 1e-5
    grad_clip: float = 1.0
    eval_every: int = 10
    seed: int = 0
    threads: int = 0
    out_dir: str = "out/ppo"

    def __post_init__(self):
        if self.rollouts < 1 or self.minibatch < 1 or self.iterations < 1:
            raise ValueError("rollouts, minibatch and iterations must be >= 1")
        if not 0 <= self.lam <= 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"need 0 <= lam <= 1 and 0 < gamma <= 1, got lam {self.lam}, gamma {self.gamma}")


def load_ppo_config(path=None, overrides=()) -> PPOConfig:
    data = read_yaml(path) if path else {}
    return from_dict(PPOConfig, apply_overrides(data, list(overrides)), where=str(path or "config"))


class PPOTrainer:
    def __init__(self, cfg: PPOConfig, policy: PolicyWithValue, reference, reward_model, tokenizer):
        self.cfg, self.policy, self.reference, self.reward_model, self.tokenizer = \
            cfg, policy, reference, reward_model, tokenizer
        self.optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0)
        from training.chat import stop_ids
        self.stops = stop_ids(tokenizer)
        self.score_shift, self.score_scale = 0.0, 1.0

    def calibrate(self, prompts: list[list[int]], seeds: list[int]) -> dict:
        """The reward model's mean and spread on the starting policy's replies: rewards are used as
        (s − mean) / std, so a reward model whose scores differ by hundredths still outweighs the KL penalty
        (the reward normalisation of Ouyang et al. and of "N implementation details")."""
        scores = score_replies(self.reward_model, self.rollout(prompts, seeds), self.tokenizer)
        self.score_shift, self.score_scale = float(scores.mean()), float(scores.std().clamp(min=1e-6))
        return {"mean": self.score_shift, "std": self.score_scale, "replies": len(prompts)}

    def prompt_ids(self, messages) -> list[int]:
        from training.chat import chat_prompt
        room = min(self.cfg.max_prompt_tokens, self.policy.cfg.max_seq_len - self.cfg.max_new_tokens)
        return chat_prompt(self.tokenizer, messages)[-room:]

    @torch.no_grad()
    def rollout(self, prompts: list[list[int]], seeds: list[int]) -> list[dict]:
        from training.generate import generate
        self.policy.eval()
        cfg = self.cfg
        return [{"prompt": p, "reply": generate(self.policy.backbone, p, cfg.max_new_tokens, cfg.temperature,
                                                cfg.top_k, cfg.top_p, eos_id=self.stops, seed=s)}
                for p, s in zip(prompts, seeds)]

    @torch.no_grad()
    def measure(self, rows: list[dict]) -> dict:
        """Reward-model score, KL to the reference and length of each reply. The KL is exact at each step of the
        reply — Σ_v π(v)·(log π(v) − log π_ref(v)) over the whole vocabulary — summed over the reply's tokens:
        never negative, unlike the sampled k1 estimate the reward uses."""
        ids, positions, tokens, mask = batch_rows(rows, self.tokenizer.pad_id)
        logits, _ = self.policy(ids)
        index = positions[..., None].expand(-1, -1, logits.shape[-1])
        logp = torch.log_softmax(logits.gather(1, index).float(), -1)                          # (B, R, V)
        ref = torch.log_softmax(self.reference(ids).logits.gather(1, index).float(), -1)
        step_kl = (logp.exp() * (logp - ref)).sum(-1)                                           # (B, R)
        return {"score": score_replies(self.reward_model, rows, self.tokenizer),
                "kl": (step_kl * mask).sum(-1), "length": mask.sum(-1).float()}

    def evaluate(self, prompts: list[list[int]]) -> dict:
        rows = self.rollout(prompts, [self.cfg.seed * 100_003 + i for i in range(len(prompts))])
        m = self.measure(rows)
        return {"score": float(m["score"].mean()), "kl": float(m["kl"].mean()), "reply_tokens": float(m["length"].mean())}

    def step(self, rows: list[dict]) -> dict:
        """One PPO update on a batch of rollouts."""
        cfg = self.cfg
        ids, positions, tokens, mask = batch_rows(rows, self.tokenizer.pad_id)
        with torch.no_grad():
            self.policy.eval()
            logits, values = self.policy(ids)
            old_logp = reply_logprobs(logits, positions, tokens)                     # (B, R)
            old_values = values.gather(1, positions) * mask
            ref_logp = reply_logprobs(self.reference(ids).logits, positions, tokens)
            scores = score_replies(self.reward_model, rows, self.tokenizer)           # (B,)
            kl = (old_logp - ref_logp) * mask
            rewards = -cfg.kl_coef * kl
            last = mask.sum(-1) - 1
            rewards[torch.arange(len(rows)), last] += (scores - self.score_shift) / self.score_scale
            advantages, returns = gae(rewards, old_values, cfg.gamma, cfg.lam)
            advantages = whiten(advantages, mask) * mask
        self.policy.train()
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0}
        updates = 0
        generator = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rows), generator=generator)
            for start in range(0, len(rows), cfg.minibatch):
                pick = order[start:start + cfg.minibatch]
                logits, values = self.policy(ids[pick])
                logp = reply_logprobs(logits, positions[pick], tokens[pick])
                new_values = values.gather(1, positions[pick])
                m = mask[pick]
                pg = ppo_policy_loss(logp, old_logp[pick], advantages[pick], m, cfg.clip)
                vf = ppo_value_loss(new_values, old_values[pick], returns[pick], m, cfg.value_clip)
                loss = pg + cfg.vf_coef * vf
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
                self.optimizer.step()
                ratio = torch.exp(logp.detach() - old_logp[pick])
                clipped = ((ratio - 1).abs() > cfg.clip) & m
                stats["policy_loss"] += pg.item()
                stats["value_loss"] += vf.item()
                stats["clip_fraction"] += float(clipped.sum() / m.sum().clamp(min=1))
                updates += 1
        stats = {k: v / max(1, updates) for k, v in stats.items()}
        return {"score": float(scores.mean()), "kl": float(kl.sum(-1).mean()),
                "reply_tokens": float(mask.sum(-1).float().mean()), **stats}


def _split_prompts(cfg: PPOConfig):
    from pipeline.shared_data import shared_data_dir
    from training.reward import HH_RLHF
    prompts = read_prompts(list(cfg.prompts) or [shared_data_dir() / p for p in HH_RLHF])
    if cfg.limit:
        prompts = prompts[:cfg.limit]
    held = [p for i, p in enumerate(prompts) if i % cfg.held_out_every == 0][:cfg.held_out_prompts]
    train_prompts = [p for i, p in enumerate(prompts) if i % cfg.held_out_every != 0]
    if not held or not train_prompts:
        raise ValueError(f"need training and held-out prompts, got {len(train_prompts)} and {len(held)}")
    return train_prompts, held


def train_ppo(cfg: PPOConfig, log=print) -> dict:
    from training.loop import torch_threads
    with torch_threads(cfg.threads):
        return _train_ppo(cfg, log)


def _train_ppo(cfg: PPOConfig, log=print) -> dict:
    from training.checkpoint import load_model_weights, save_checkpoint
    from training.lm import _our_tokenizer, copy_tokenizer
    from training.reward import load_reward_model
    from training.tokenizer import Tokenizer
    torch.manual_seed(cfg.seed)
    backbone = load_model_weights(cfg.model)
    tokenizer_dir = _our_tokenizer(Path(cfg.model))
    tokenizer = Tokenizer(str(tokenizer_dir))
    reward_model = load_reward_model(cfg.reward_model)
    if reward_model.cfg.vocab_size != backbone.cfg.vocab_size:
        raise ValueError(f"reward model vocabulary {reward_model.cfg.vocab_size:,} != policy's "
                         f"{backbone.cfg.vocab_size:,}: they must share the tokenizer")
    reference = copy.deepcopy(backbone).eval()
    for p in list(reference.parameters()) + list(reward_model.parameters()):
        p.requires_grad_(False)
    policy = PolicyWithValue(backbone)
    trainer = PPOTrainer(cfg, policy, reference, reward_model, tokenizer)
    train_prompts, held = _split_prompts(cfg)
    train_ids = [trainer.prompt_ids(p) for p in train_prompts]
    held_ids = [trainer.prompt_ids(p) for p in held]
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log_path = out / "log.jsonl"
    log_path.unlink(missing_ok=True)

    def write(record):
        with open(log_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    calibration = None
    if cfg.normalize_reward:
        rng = np.random.default_rng([cfg.seed, 0])
        picks = rng.choice(len(train_ids), size=min(cfg.rollouts, len(train_ids)), replace=False)
        calibration = trainer.calibrate([train_ids[i] for i in picks],
                                        [int(s) for s in rng.integers(0, 2 ** 31, len(picks))])
        log(f"[ppo] reward normalisation: mean {calibration['mean']:+.4f}, std {calibration['std']:.4f} over "
            f"{calibration['replies']} replies of the starting policy")
    before = trainer.evaluate(held_ids)
    write({"iteration": 0, "eval": True, **before})
    log(f"[ppo] {len(train_ids):,} training and {len(held_ids)} held-out prompts; held-out score {before['score']:+.3f}"
        f", KL {before['kl']:.3f}, {before['reply_tokens']:.1f} tokens per reply")
    kept, kept_eval, stopped = copy.deepcopy(backbone.state_dict()), before, None
    started = time.perf_counter()
    from tqdm import tqdm
    bar = tqdm(range(1, cfg.iterations + 1), desc="ppo", unit="it", dynamic_ncols=True)
    for it in bar:
        rng = np.random.default_rng([cfg.seed, it])
        picks = rng.choice(len(train_ids), size=min(cfg.rollouts, len(train_ids)), replace=False)
        rows = trainer.rollout([train_ids[i] for i in picks], [int(s) for s in rng.integers(0, 2 ** 31, len(picks))])
        record = {"iteration": it, **trainer.step(rows)}
        write(record)
        bar.set_postfix({"score": f"{record['score']:+.3f}", "kl": f"{record['kl']:.2f}"}, refresh=False)
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            result = trainer.evaluate(held_ids)
            write({"iteration": it, "eval": True, **result})
            bar.write(f"[eval] iteration {it}: score {result['score']:+.3f}, KL {result['kl']:.3f}, "
                      f"{result['reply_tokens']:.1f} tokens")
            if result["kl"] > cfg.kl_bound:
                stopped = it
                bar.write(f"[ppo] held-out KL {result['kl']:.2f} > bound {cfg.kl_bound}: stopping; keeping the "
                          f"weights of iteration {kept_eval.get('iteration', 0)}")
                break
            kept, kept_eval = copy.deepcopy(backbone.state_dict()), {"iteration": it, **result}
    bar.close()
    backbone.load_state_dict(kept)
    save_checkpoint(out, backbone, None, {"step": kept_eval.get("iteration", 0), "tokens": 0}, keep=1)
    copy_tokenizer(tokenizer_dir, out)
    summary = {"iterations": cfg.iterations, "stopped_at": stopped, "kl_bound": cfg.kl_bound,
               "wall_s": round(time.perf_counter() - started, 1), "held_out_before": before,
               "held_out_after": {k: v for k, v in kept_eval.items() if k != "iteration"},
               "kept_iteration": kept_eval.get("iteration", 0), "reward_normalization": calibration}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
