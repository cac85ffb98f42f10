"""`refinery train`: pretrain the model on token shards.

```
refinery train --config configs/train-sample.yaml                     # out/train: log, checkpoints, loss.png
refinery train --config configs/train-sample.yaml --set run.steps=50 --set model.n_experts=4
refinery train --resume out/train                                     # after a crash or preemption
torchrun --nproc_per_node 2 -m pipeline.app.cli train --config ...         # DDP (gloo on CPU, NCCL on GPUs)
```
The config has four sections, `model` (training/model.py), `data` (training/data.py), `optim` and `run`
(training/loop.py); `--set section.key=value` overrides any key. The model's vocabulary comes from the
tokenizer saved beside the shards. Held-out loss and bits-per-byte are logged every `run.eval_every` steps,
beside the unigram baseline's.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from training.architectures import build
from training.config import ConfigError, apply_overrides, from_dict, read_yaml
from training.data import DataConfig, PretrainBatches
from training.heldout import unigram_loss, windows_loss
from training.hf import load_model
from training.lm import recorded_tokenizer
from training.loop import OptimConfig, RunConfig, decay_start, train
from training.losses import moe_loss, next_token_loss
from training.model import ModelConfig, Transformer
from training.tokenizer import Tokenizer


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=lambda: ModelConfig(vocab_size=0))   # 0: the tokenizer's
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def load_train_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> TrainConfig:
    """A TrainConfig from YAML (or `base`, a saved config.json) with `--set` overrides applied; a model section
    without vocab_size takes the tokenizer's (0), not ModelConfig's default."""
    data = read_yaml(path) if path is not None else dict(base or {})
    data = apply_overrides(data, list(overrides))
    data.setdefault("model", {}).setdefault("vocab_size", 0)
    return from_dict(TrainConfig, data, where=str(path or "config"))


def pretrain_objective(cfg: ModelConfig):
    """Next-token cross-entropy, plus the MoE balancing and z losses when the MLPs are mixtures."""
    def objective(model, batch):
        out = model(batch["input"])
        ce = next_token_loss(out.logits, batch["target"])
        metrics = {"ce": ce.detach()}
        if out.moe:
            metrics.update(moe_balance=out.balance_loss.detach(), moe_z=out.z_loss.detach(),
                           expert_load=out.expert_load)
        return ce + moe_loss(out.balance_loss, out.z_loss, cfg.balance_coef, cfg.z_loss_coef), metrics
    return objective


def tokens_tokenizer(tokens_dir: str):
    """The tokenizer of a token folder (`refinery tokenize` keeps a copy in it); a missing folder is named."""
    if not Path(tokens_dir).is_dir():
        raise FileNotFoundError(f"data.tokens: no such folder {tokens_dir} (make one with `refinery tokenize`)")
    here = Path(tokens_dir) / "tokenizer"
    if (here / "tokenizer.model").is_file():
        return Tokenizer(str(here))
    summary = Path(tokens_dir) / "tokens.json"
    if summary.is_file():                  # token folders written before the tokenizer was copied beside them
        return Tokenizer(json.loads(summary.read_text())["tokenizer"])
    raise FileNotFoundError(f"{tokens_dir}: no tokenizer/ folder (run `refinery tokenize` again)")


def build_model(cfg: TrainConfig) -> Transformer:
    """A fresh model, or the weights of run.init_from with the context extended to data.seq_len."""
    if cfg.run.init_from:
        model = load_model(cfg.run.init_from)
        if model.cfg.vocab_size != cfg.model.vocab_size:
            raise ConfigError(f"run.init_from has a vocabulary of {model.cfg.vocab_size:,}, the tokens "
                              f"{cfg.model.vocab_size:,}")
        if cfg.model.max_seq_len > model.cfg.max_seq_len or cfg.model.rope_theta != model.cfg.rope_theta:
            model.extend_context(max(cfg.model.max_seq_len, model.cfg.max_seq_len), cfg.model.rope_theta)
        return model
    return build(cfg.model)


def pretrain(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train as `cfg` says; returns the run summary (RUN/summary.json) with the unigram baseline."""
    tokenizer = tokens_tokenizer(cfg.data.tokens)
    vocab = cfg.model.vocab_size or tokenizer.vocab_size
    if vocab < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size {vocab:,} is smaller than the tokenizer's {tokenizer.vocab_size:,}")
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=vocab,
                                     max_seq_len=max(cfg.model.max_seq_len, cfg.data.seq_len)))
    batches = PretrainBatches(cfg.data, cfg.run.batch_size, decay_start(cfg.optim, cfg.run.steps), tokenizer.eos_id)
    if batches.main.tokenizer_sha256 != tokenizer.sha256:
        raise ValueError(f"{cfg.data.tokens}: the shards were made by another tokenizer than tokenizer/")
    if cfg.run.init_from:               # the same size is not the same tokenizer: ids would mean other pieces
        recorded = recorded_tokenizer(cfg.run.init_from)
        if recorded and recorded != tokenizer.sha256:
            raise ConfigError(f"run.init_from {cfg.run.init_from} was trained with the tokenizer of sha256 "
                              f"{recorded[:12]}…, the tokens in {cfg.data.tokens} with {tokenizer.sha256[:12]}…")
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg)
    token_bytes = tokenizer.token_bytes()
    windows = batches.main.val_windows(cfg.data.val_tokens)
    baseline = unigram_loss(batches.main.unigram_counts(), windows, token_bytes) if windows else None

    def evaluate(m):
        if not windows:
            return {}
        result = windows_loss(m, windows, token_bytes, rows=cfg.run.batch_size)
        return {"val_loss": result["loss"], "bpb": result["bpb"],
                "domains_bpb": {d: v["bpb"] for d, v in result["domains"].items()}}

    params = model.num_params()
    print(f"[train] model {params / 1e6:.2f} M parameters ({model.active_params() / 1e6:.2f} M non-embedding "
          f"active), {cfg.run.steps:,} steps x {cfg.run.batch_size * cfg.run.grad_accum} x "
          f"{cfg.data.seq_len} tokens; {batches.main.train_tokens:,} training tokens in "
          f"{len(batches.main.streams)} domains")
    if baseline:
        print(f"[train] held out: {baseline['tokens']:,} tokens; unigram baseline {baseline['bpb']:.4f} bits/byte")
    config = {"model": asdict(cfg.model), "data": asdict(cfg.data), "optim": asdict(cfg.optim),
              "run": asdict(cfg.run)}
    provenance = {"tokenizer_sha256": tokenizer.sha256, "tokens": cfg.data.tokens, "init_from": cfg.run.init_from}
    summary = train(model, batches, pretrain_objective(cfg.model), cfg.optim, cfg.run, evaluate=evaluate,
                    config=config, resume=resume, flops_per_token=model.flops_per_token(cfg.data.seq_len),
                    inputs=[cfg.data.tokens, cfg.data.decay_tokens, cfg.run.init_from], provenance=provenance,
                    after=lambda m: {"unigram_bpb": baseline["bpb"] if baseline else None,
                                     "non_embedding_params": m.num_params(embedding=False)},
                    baselines={"unigram": baseline["bpb"]} if baseline else None)
    return summary
