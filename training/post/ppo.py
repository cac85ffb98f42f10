"""`refinery ppo`: RLHF by PPO against a reward model (Ouyang et al. 2022; the "N implementation details" recipe).

```
refinery ppo --model out/sft --reward-model out/reward --output out/ppo
refinery ppo --model out/sft --reward-model out/reward --prompts prompts.jsonl --set ppo.iterations=100
refinery ppo --resume out/ppo                      # after a crash: continues from the last checkpoint
```
PPO runs through the shared loop (training/loop.py), so it has exact resume, DDP, bf16 and compile like every
objective. Each iteration's first update samples replies to a batch of prompts with the policy as it is then
(KV cache), scores each finished conversation with the reward model, and builds per-token rewards:
−kl_coef · k1(log π, log π_ref) against the frozen starting model, plus the score on the reply's last token —
normalised by the mean and standard deviation of the reward model's scores on the starting model's replies
(`ppo.normalize_reward`). GAE (γ, λ) on the value head (training/post/heads.py, sharing the policy's trunk) and
whitened advantages; then `ppo_epochs` passes of minibatches, one optimiser step each, of the clipped policy
and value losses (training/losses.py). Held-out prompts (fixed seeds) give the reward model's mean score, the
exact KL(π ‖ π_ref) per reply (over the vocabulary at each step, summed over the reply) and the mean reply
length before training and every `ppo.eval_every` iterations; when that KL passes `ppo.kl_bound` the run stops
and the last checkpoint, the last weights within the bound, is the result. Prompts: anything
`training/post/conversation.py` reads as prompts; every 10th is held out.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from training.checkpoint import latest_checkpoint
from training.config import ConfigError, at_least, load_config, read_yaml, within
from training.generate import generate
from training.lm import recorded_tokenizer
from training.loop import OptimConfig, RunConfig, read_log, train
from training.losses import IGNORE, gae, kl_k1, ppo_policy_loss, ppo_value_loss, token_logprobs, whiten
from training.post.chat import chat_prompt, reply_closing, stop_ids
from training.post.conversation import pad_id, read_prompts
from training.post.heads import ScalarHead
from training.post.lora import AdaptersOff, LoraOptions, with_lora
from training.post.policy import finish, load_policy
from training.post.reward import load_reward_model


@dataclass(frozen=True)
class PromptData:
    prompts: tuple[str, ...] = ()      # files; `refinery ppo` defaults to the contexts of hh-rlhf's test files
    held_out_every: int = 10
    held_out_prompts: int = 32
    limit: int = 0                     # use only the first N prompts (0 = all)
    max_prompt_tokens: int = 128       # longer prompts keep their end

    def __post_init__(self):
        at_least(self, 2, "held_out_every")
        at_least(self, 1, "held_out_prompts", "max_prompt_tokens")
        at_least(self, 0, "limit")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        at_least(self, 1, "max_new_tokens")
        at_least(self, 0, "temperature", "top_k")
        within(self, 0.0, 1.0, "top_p", low_open=True)


@dataclass(frozen=True)
class PPOParams:
    iterations: int = 40
    rollouts: int = 16                 # prompts answered per iteration
    minibatch: int = 8                 # rollouts per optimiser step
    ppo_epochs: int = 2
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    value_clip: float = 0.2
    vf_coef: float = 0.1
    kl_bound: float = 8.0              # nats per reply on held-out prompts; training stops past it
    normalize_reward: bool = True      # scores as (s - mean) / std of the starting policy's replies
    eval_every: int = 10               # iterations

    def __post_init__(self):
        for name in ("iterations", "rollouts", "minibatch", "ppo_epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.lam <= 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"need 0 <= lam <= 1 and 0 < gamma <= 1, got lam {self.lam}, gamma {self.gamma}")
        if self.kl_bound <= 0:
            raise ValueError(f"ppo.kl_bound must be > 0, got {self.kl_bound}")
        at_least(self, 0.0, "kl_coef", "clip", "value_clip", "vf_coef")
        if self.clip <= 0:
            raise ValueError(f"ppo.clip must be > 0 (0 allows no change of the policy), got {self.clip}")
        if self.minibatch > self.rollouts:
            raise ValueError(f"ppo.minibatch ({self.minibatch}) must be at most ppo.rollouts ({self.rollouts})")

    @property
    def updates(self) -> int:
        """Optimiser steps per iteration."""
        return self.ppo_epochs * math.ceil(self.rollouts / self.minibatch)


@dataclass(frozen=True)
class PPOConfig:
    model: str = "out/sft"             # the policy's start and the KL reference
    reward_model: str = "out/reward"
    data: PromptData = field(default_factory=PromptData)
    sampling: Sampling = field(default_factory=Sampling)
    ppo: PPOParams = field(default_factory=PPOParams)
    lora: LoraOptions = field(default_factory=LoraOptions)
    # plain AdamW at a constant rate (no weight decay, β2 0.999: the usual PPO settings)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0, schedule="constant",
                                                                   beta2=0.999, weight_decay=0.0, grad_clip=1.0))
    # steps, batch_size, log/eval/checkpoint_every follow from the ppo section (see `loop_run`)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/ppo", eval_at_start=True))


_FLAT = {**{k: f"data.{k}" for k in ("prompts", "held_out_every", "held_out_prompts", "limit", "max_prompt_tokens")},
         **{k: f"sampling.{k}" for k in ("max_new_tokens", "temperature", "top_k", "top_p")},
         **{f.name: f"ppo.{f.name}" for f in PPOParams.__dataclass_fields__.values()},
         "lr": "optim.lr", "grad_clip": "optim.grad_clip", "seed": "run.seed", "threads": "run.threads",
         "out_dir": "run.out_dir"}


def load_ppo_config(path=None, overrides=(), base: dict | None = None) -> PPOConfig:
    """The config, refusing the flat keys of the first PPO config with the key that replaced each."""
    data = read_yaml(path) if path is not None else dict(base or {})
    given = [o.partition("=")[0] for o in overrides] + list(data)
    old = [k for k in given if k in _FLAT]
    if old:
        raise ConfigError("ppo config keys are in sections now: " +
                          ", ".join(f"{k} is {_FLAT[k]}" for k in dict.fromkeys(old)))
    return load_config(PPOConfig, None, overrides, base=data)


def loop_run(cfg: PPOConfig) -> RunConfig:
    """The loop's run config: a step is one minibatch update; evaluations and checkpoints every eval_every
    iterations (so a resumed run starts at an iteration's first update), one log line per iteration."""
    p, per_step = cfg.ppo, cfg.run.grad_accum
    if p.updates % per_step:
        raise ConfigError(f"run.grad_accum {per_step} must divide the updates per iteration ({p.updates})")
    every = p.eval_every * p.updates // per_step
    return replace(cfg.run, steps=p.iterations * p.updates // per_step, batch_size=p.minibatch, log_every=p.updates,
                   eval_every=every, checkpoint_every=every, eval_at_start=True)


@torch.no_grad()
def score_replies(reward_model, rows: list[dict], tokenizer) -> torch.Tensor:
    """The reward model's score of each conversation closed as in training: the reply without the stop token it
    ended with, then what the chat format puts after a reply (ours: <|end|> EOS; SmolLM2: <|im_end|> newline)."""
    closing, stops = reply_closing(tokenizer), stop_ids(tokenizer)
    seqs = []
    for row in rows:
        reply = list(row["reply"])
        if reply and reply[-1] in stops:
            reply = reply[:-1]
        seqs.append((row["prompt"] + reply + closing)[-reward_model.cfg.max_seq_len:])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id(tokenizer), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
    device = next(reward_model.parameters()).device
    return reward_model(ids.to(device), torch.tensor([len(s) for s in seqs], device=device)).float()


def collate_rollouts(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+reply ids (B, W) and, aligned on the reply (B, R): the position whose logits predict
    reply token j, the token (IGNORE past the reply) and the mask."""
    width = max(len(r["prompt"]) + len(r["reply"]) for r in rows)
    longest = max(len(r["reply"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), longest), dtype=torch.long)
    tokens = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for b, row in enumerate(rows):
        p, r = len(row["prompt"]), len(row["reply"])
        ids[b, :p + r] = torch.tensor(row["prompt"] + row["reply"])
        positions[b, :r] = torch.arange(p - 1, p - 1 + r)
        tokens[b, :r] = torch.tensor(row["reply"])
    return {"input": ids, "positions": positions, "tokens": tokens, "mask": tokens != IGNORE}


def reply_logprobs(logits: torch.Tensor, positions, tokens) -> torch.Tensor:
    """log p(reply token j) (B, R) from full-sequence logits (B, W, V)."""
    picked = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))       # (B, R, V)
    return token_logprobs(picked, tokens)


class Rollouts:
    """The loop's batches: at an iteration's first update, rollouts by the policy as it is then, with their old
    log-probs, values, rewards and advantages; each update takes one minibatch of them."""

    def __init__(self, cfg: PPOConfig, policy: ScalarHead, reference, reward_model, tokenizer, prompts: list[list[int]],
                 normalization: tuple[float, float]):
        self.cfg, self.policy, self.reference, self.reward_model = cfg, policy, reference, reward_model
        self.tokenizer, self.prompts, self.shift, self.scale = tokenizer, prompts, *normalization
        self.stops, self.iteration, self.data = stop_ids(tokenizer), 0, None

    @torch.no_grad()
    def sample(self, model, prompts: list[list[int]], seeds: list[int]) -> list[dict]:
        s = self.cfg.sampling
        model.eval()
        return [{"prompt": p, "reply": generate(model, p, s.max_new_tokens, s.temperature, s.top_k, s.top_p,
                                                eos_id=self.stops, seed=seed)} for p, seed in zip(prompts, seeds)]

    def draw(self, iteration: int) -> tuple[list[list[int]], list[int]]:
        """The prompts and sampling seeds of an iteration (0: the reward normalisation's)."""
        rng = np.random.default_rng([self.cfg.run.seed, iteration])
        picks = rng.choice(len(self.prompts), size=min(self.cfg.ppo.rollouts, len(self.prompts)), replace=False)
        return [self.prompts[i] for i in picks], [int(s) for s in rng.integers(0, 2 ** 31, len(picks))]

    def frozen_on(self, device) -> None:
        """The reference and reward models beside the policy (the loop moves the policy to its device)."""
        self.reference.to(device)
        self.reward_model.to(device)

    @torch.no_grad()
    def prepare(self, iteration: int) -> None:
        cfg, p = self.cfg, self.cfg.ppo
        device = next(self.policy.parameters()).device
        self.frozen_on(device)
        rows = self.sample(self.policy.backbone, *self.draw(iteration))
        batch = {k: v.to(device) for k, v in collate_rollouts(rows, pad_id(self.tokenizer)).items()}
        positions, tokens, mask = batch["positions"], batch["tokens"], batch["mask"]
        logits, values = self.policy(batch["input"])
        old_logp = reply_logprobs(logits, positions, tokens)                          # (B, R)
        old_values = values.gather(1, positions) * mask
        ref_logp = reply_logprobs(self.reference(batch["input"]).logits, positions, tokens)
        scores = score_replies(self.reward_model, rows, self.tokenizer)               # (B,)
        kl = kl_k1(old_logp, ref_logp) * mask
        rewards = -p.kl_coef * kl
        rewards[torch.arange(len(rows), device=device), mask.sum(-1) - 1] += (scores - self.shift) / self.scale
        advantages, returns = gae(rewards, old_values, p.gamma, p.lam)
        generator = torch.Generator().manual_seed(cfg.run.seed)
        self.data = {**batch, "old_logp": old_logp, "old_values": old_values, "returns": returns,
                     "advantages": whiten(advantages, mask) * mask,
                     "orders": [torch.randperm(len(rows), generator=generator) for _ in range(p.ppo_epochs)],
                     "stats": {"score": scores.mean(), "kl": kl.sum(-1).mean(),
                               "reply_tokens": mask.sum(-1).float().mean(),
                               "iteration": torch.tensor(float(iteration))}}
        self.iteration = iteration

    def batch(self, step: int, index: int, per_step: int = 1) -> dict:
        p = self.cfg.ppo
        iteration, update = divmod(step * per_step + index, p.updates)
        if self.iteration != iteration + 1 or self.data is None:
            self.prepare(iteration + 1)                              # iterations count from 1
            self.policy.train()
        epoch, k = divmod(update, p.updates // p.ppo_epochs)
        pick = self.data["orders"][epoch][k * p.minibatch:(k + 1) * p.minibatch]
        keys = ("input", "positions", "tokens", "mask", "old_logp", "old_values", "returns", "advantages")
        return {**{key: self.data[key][pick] for key in keys}, **self.data["stats"]}


def ppo_objective(p: PPOParams):
    def objective(model, batch):
        logits, values = model(batch["input"])
        logp = reply_logprobs(logits, batch["positions"], batch["tokens"])
        m = batch["mask"]
        pg = ppo_policy_loss(logp, batch["old_logp"], batch["advantages"], m, p.clip)
        vf = ppo_value_loss(values.gather(1, batch["positions"]), batch["old_values"], batch["returns"], m,
                            p.value_clip)
        clipped = ((torch.exp(logp.detach() - batch["old_logp"]) - 1).abs() > p.clip) & m
        stats = {k: batch[k] for k in ("score", "kl", "reply_tokens", "iteration")}
        return pg + p.vf_coef * vf, {"policy_loss": pg.detach(), "value_loss": vf.detach(),
                                     "clip_fraction": clipped.sum() / m.sum().clamp(min=1), **stats}
    return objective


@torch.no_grad()
def held_out(rollouts: Rollouts, model: ScalarHead, prompts: list[list[int]]) -> dict:
    """Mean reward-model score, exact KL to the reference (Σ_v π(v)·(log π(v) − log π_ref(v)) at each step of the
    reply, summed over it: never negative, unlike the sampled k1 the reward uses) and reply length."""
    device = next(model.parameters()).device
    rollouts.frozen_on(device)
    rows = rollouts.sample(model.backbone, prompts, [rollouts.cfg.run.seed * 100_003 + i for i in range(len(prompts))])
    batch = {k: v.to(device) for k, v in collate_rollouts(rows, pad_id(rollouts.tokenizer)).items()}
    index = batch["positions"][..., None].expand(-1, -1, model.cfg.vocab_size)
    logp = torch.log_softmax(model(batch["input"])[0].gather(1, index).float(), -1)               # (B, R, V)
    ref = torch.log_softmax(rollouts.reference(batch["input"]).logits.gather(1, index).float(), -1)
    step_kl = (logp.exp() * (logp - ref)).sum(-1)                                                  # (B, R)
    return {"score": float(score_replies(rollouts.reward_model, rows, rollouts.tokenizer).mean()),
            "kl": float((step_kl * batch["mask"]).sum(-1).mean()),
            "reply_tokens": float(batch["mask"].sum(-1).float().mean())}


def split_prompts(cfg: PPOConfig, tokenizer, max_seq_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """(training, held-out) prompt ids: every `held_out_every`-th prompt held out, each cut to keep its end."""
    if not cfg.data.prompts:
        raise ValueError("data.prompts: no prompt files given")
    prompts = read_prompts(list(cfg.data.prompts))
    if cfg.data.limit:
        prompts = prompts[:cfg.data.limit]
    room = min(cfg.data.max_prompt_tokens, max_seq_len - cfg.sampling.max_new_tokens)
    if room < 1:
        raise ValueError(f"sampling.max_new_tokens {cfg.sampling.max_new_tokens} leaves no room for a prompt in the "
                         f"model's context of {max_seq_len}")
    encoded = [chat_prompt(tokenizer, p)[-room:] for p in prompts]
    held = [p for i, p in enumerate(encoded) if i % cfg.data.held_out_every == 0][:cfg.data.held_out_prompts]
    train_prompts = [p for i, p in enumerate(encoded) if i % cfg.data.held_out_every != 0]
    if not held or not train_prompts:
        raise ValueError(f"need training and held-out prompts, got {len(train_prompts)} and {len(held)}")
    return train_prompts, held


def train_ppo(cfg: PPOConfig, resume: bool = False, log=print) -> dict:
    policy = load_policy(cfg.model)
    reward_model = load_reward_model(cfg.reward_model)
    if reward_model.cfg.vocab_size != policy.model.cfg.vocab_size:
        raise ValueError(f"reward model vocabulary {reward_model.cfg.vocab_size:,} != policy's "
                         f"{policy.model.cfg.vocab_size:,}: they must share the tokenizer")
    ours, theirs = recorded_tokenizer(cfg.model), recorded_tokenizer(cfg.reward_model)
    if ours and theirs and ours != theirs:   # same size, other pieces: its scores would read other words
        raise ValueError(f"the reward model {cfg.reward_model} was trained with the tokenizer of sha256 "
                         f"{theirs[:12]}…, the policy {cfg.model} with {ours[:12]}…: they must share the tokenizer")
    for p in reward_model.parameters():
        p.requires_grad_(False)
    if cfg.lora.enabled:                 # the reference: the policy's own backbone with its adapters off
        model = with_lora(ScalarHead(policy.model), cfg.lora, train_in_full=("head",))
        reference = AdaptersOff(model, policy.model)
    else:
        reference = copy.deepcopy(policy.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        model = ScalarHead(policy.model)
    train_prompts, held = split_prompts(cfg, policy.tokenizer, policy.model.cfg.max_seq_len)
    cfg = replace(cfg, ppo=replace(cfg.ppo, rollouts=min(cfg.ppo.rollouts, len(train_prompts))))
    rollouts = Rollouts(cfg, model, reference, reward_model, policy.tokenizer, train_prompts, (0.0, 1.0))
    calibration = None
    if cfg.ppo.normalize_reward:        # the reference is the starting policy: the same numbers on a resume
        scores = score_replies(reward_model, rollouts.sample(reference, *rollouts.draw(0)), policy.tokenizer)
        rollouts.shift, rollouts.scale = float(scores.mean()), float(scores.std().clamp(min=1e-6))
        calibration = {"mean": rollouts.shift, "std": rollouts.scale, "replies": len(scores)}
        log(f"[ppo] reward normalisation: mean {rollouts.shift:+.4f}, std {rollouts.scale:.4f} over "
            f"{len(scores)} replies of the starting policy")
    log(f"[ppo] {len(train_prompts):,} training and {len(held)} held-out prompts")

    def evaluate(m):
        result = {"iteration": rollouts.iteration, **held_out(rollouts, m, held)}
        return {**result, "stop": f"held-out KL {result['kl']:.2f} > bound {cfg.ppo.kl_bound}"} \
            if result["kl"] > cfg.ppo.kl_bound else result

    run = loop_run(cfg)

    def after(m):
        _, evals = read_log(f"{run.out_dir}/log.jsonl")
        kept = json.loads((latest_checkpoint(run.out_dir) / "state.json").read_text())["step"]
        if kept != evals[-1]["step"]:            # stopped by the KL bound: the result is the last checkpoint
            m = copy.deepcopy(m)
            m.load_state_dict(torch.load(latest_checkpoint(run.out_dir) / "model.pt", map_location="cpu",
                                         weights_only=True))
        finish(policy, m, run.out_dir)
        within = [e for e in evals if e["step"] == kept and e["kl"] <= cfg.ppo.kl_bound]
        stopped = next((e for e in evals if e["kl"] > cfg.ppo.kl_bound), None)
        strip = lambda e: {k: e[k] for k in ("score", "kl", "reply_tokens")}
        return {"iterations": cfg.ppo.iterations, "kl_bound": cfg.ppo.kl_bound, "reward_normalization": calibration,
                "stopped_at": stopped["iteration"] if stopped else None, "held_out_before": strip(evals[0]),
                "held_out_after": strip(within[-1]), "kept_iteration": within[-1]["iteration"]}

    config = {"model": cfg.model, "reward_model": cfg.reward_model, "data": asdict(cfg.data),
              "sampling": asdict(cfg.sampling), "ppo": asdict(cfg.ppo), "lora": asdict(cfg.lora),
              "optim": asdict(cfg.optim), "run": asdict(run)}
    return train(model, rollouts, ppo_objective(cfg.ppo), cfg.optim, run, evaluate=evaluate, config=config,
                 resume=resume, after=after, inputs=[cfg.model, cfg.reward_model, *cfg.data.prompts],
                 provenance={**policy.provenance, "reward_model": cfg.reward_model})
