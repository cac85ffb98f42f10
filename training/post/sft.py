"""`refinery sft`: supervised fine-tuning on conversations, loss on the assistant's tokens only.

```
refinery sft --model out/run/train --data ../shared/data/sft/alpaca_data_1k.json --output out/sft
refinery sft --model out/run/train --data chats.jsonl --set run.steps=300 --set optim.lr=1e-4
```
Data: any file `training/post/conversation.py` reads (Alpaca JSON, Self-Instruct seed tasks, JSONL messages or
prompt/completion), encoded with our role tokens, labels on the replies. Every 10th example (by position) is
held out; its answer loss is logged before training and at each evaluation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from training.config import MAX_CONTEXT, at_least, at_most, load_config
from training.loop import OptimConfig, RunConfig, eval_ends, train
from training.losses import IGNORE, next_token_loss
from training.post.batches import EpochBatches
from training.post.conversation import encode_conversation, read_conversations
from training.post.lora import LoraOptions, with_lora
from training.post.policy import finish, load_policy


@dataclass(frozen=True)
class SFTData:
    data: str = ""                     # the conversations (`refinery sft --data`)
    seq_len: int = 256                 # conversations are cut to this many tokens
    held_out_every: int = 10           # every N-th example is held out
    pack: bool = False                 # several conversations per row of seq_len (training rows only)
    seed: int = 0
    shuffle: bool = True               # false: the file's order every pass (as TRL with a sequential sampler)

    def __post_init__(self):
        at_least(self, 2, "seq_len", "held_out_every")
        at_most(self, MAX_CONTEXT, "seq_len")


@dataclass(frozen=True)
class SFTConfig:
    model: str = "out/train"           # our run/checkpoint, an HF Llama folder or a GGUF file (its chat template)
    data: SFTData = field(default_factory=SFTData)
    lora: LoraOptions = field(default_factory=LoraOptions)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/sft", steps=200, batch_size=8,
                                                              eval_every=50, checkpoint_every=100,
                                                              eval_at_start=True))


def pack(examples: list[tuple[list[int], list[int]]], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """Conversations packed into rows of at most `seq_len` tokens, first-fit by decreasing length (each
    conversation whole; one ends with EOS and the next follows it without its own leading EOS). Attention is not
    masked between the conversations of a row, as in TRL's packing: fewer pad tokens, a little cross-talk."""
    rows: list[tuple[list[int], list[int]]] = []
    for ids, labels in sorted(examples, key=lambda e: -len(e[0])):
        for row_ids, row_labels in rows:
            if len(row_ids) + len(ids) - 1 <= seq_len:
                row_ids.extend(ids[1:])
                row_labels.extend(labels[1:])
                break
        else:
            rows.append((list(ids), list(labels)))
    return rows


def collate(examples, pad_id: int) -> dict[str, np.ndarray]:
    """inputs = ids[:-1], labels = labels[1:], right-padded with pad_id / IGNORE."""
    width = max(len(ids) for ids, _ in examples) - 1
    inputs = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE, dtype=np.int64)
    for row, (ids, labs) in enumerate(examples):
        inputs[row, :len(ids) - 1] = ids[:-1]
        labels[row, :len(labs) - 1] = labs[1:]
    return {"input": inputs, "target": labels}


def sft_objective(model, batch):
    out = model(batch["input"])
    loss = next_token_loss(out.logits, batch["target"])
    return loss, {"answer_tokens": (batch["target"] != IGNORE).sum().float()}


@torch.no_grad()
def answer_loss(model, examples, pad_id: int, rows: int = 8) -> float:
    """Mean NLL per answer token over `examples`."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, len(examples), rows):
        batch = collate(examples[i:i + rows], pad_id)
        inputs = torch.from_numpy(batch["input"]).to(device)
        labels = torch.from_numpy(batch["target"]).to(device)
        logits = model(inputs).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="sum")
        total += float(nll)
        count += int((labels != IGNORE).sum())
    return total / max(1, count)


def load_sft_config(path=None, overrides=(), base: dict | None = None) -> SFTConfig:
    return load_config(SFTConfig, path, overrides, base)


def sft(cfg: SFTConfig, resume: bool = False, log=print) -> dict:
    if not cfg.data.data:
        raise ValueError("data.data: no SFT data file given (refinery sft --data FILE)")
    policy = load_policy(cfg.model, cfg.data.seq_len)
    pad = policy.pad_id
    encoded = [encode_conversation(policy.tokenizer, c, cfg.data.seq_len) for c in read_conversations(cfg.data.data)]
    fitting = [e for e in encoded if e is not None]
    kept = [e for e in fitting if any(label != IGNORE for label in e[1])]     # a reply to learn from
    if not kept:
        raise ValueError(f"{cfg.data.data}: no conversation with an assistant reply to learn "
                         f"from ({len(encoded)} read, {len(encoded) - len(fitting)} longer than data.seq_len "
                         f"{cfg.data.seq_len})")
    held = [e for i, e in enumerate(kept) if i % cfg.data.held_out_every == 0]
    train_set = [e for i, e in enumerate(kept) if i % cfg.data.held_out_every != 0]
    no_reply = f", {len(fitting) - len(kept)} without an assistant reply" if len(fitting) > len(kept) else ""
    log(f"[sft] {len(train_set):,} training and {len(held):,} held-out conversations "
        f"({len(encoded) - len(fitting)} too long{no_reply})")
    if cfg.data.pack:
        conversations_in = len(train_set)
        train_set = pack(train_set, cfg.data.seq_len)
        log(f"[sft] packed {conversations_in:,} conversations into {len(train_set):,} rows of <= {cfg.data.seq_len} "
            f"tokens")

    def evaluate(model):
        return {"answer_loss": answer_loss(model, held, pad)}

    def after(model):
        finish(policy, model, cfg.run.out_dir)
        first, last = eval_ends(cfg.run.out_dir)
        return {"answer_loss_before": first.get("answer_loss"), "answer_loss_after": last.get("answer_loss")}

    batches = EpochBatches(train_set, cfg.run.batch_size, lambda rows: collate(rows, pad), cfg.data.seed,
                           cfg.data.shuffle)
    model = with_lora(policy.model, cfg.lora) if cfg.lora.enabled else policy.model
    return train(model, batches, sft_objective, cfg.optim, cfg.run, evaluate=evaluate,
                 config={"model": cfg.model, "data": asdict(cfg.data), "lora": asdict(cfg.lora),
                         "optim": asdict(cfg.optim),
                         "run": asdict(cfg.run)}, resume=resume, after=after, inputs=[cfg.model, cfg.data.data],
                 provenance=policy.provenance)
