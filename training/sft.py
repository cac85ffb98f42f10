"""`refinery sft`: supervised fine-tuning on conversations, loss on the assistant's tokens only.

```
refinery sft --model out/train --data ../shared/data/sft/alpaca_data_1k.json --output out/sft
refinery sft --model out/train --data chats.jsonl --set run.steps=300 --set optim.lr=1e-4
```
Data: Alpaca JSON (`instruction`, `input`, `output`), Self-Instruct seed tasks (`instruction`, `instances`),
or JSONL rows `{"messages": [{"role", "content"}, ...]}` or `{"prompt", "completion"}`. Every 10th example
(by position) is held out; the held-out answer loss is logged before training and at each evaluation.

Chat format with our tokenizer's role tokens (DESIGN: reserved by the tokenizer):
`</s> [<|system|> … <|end|>] <|user|> … <|end|> <|assistant|> … <|end|> </s>` — training documents follow an
EOS, so conversations start after one too. Labels cover each assistant reply, its `<|end|>` and the final EOS:
the EOS is never masked (otherwise the model never learns to stop) and padding uses the pad id (0), never EOS
(the TRL pitfall, trl #1623).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.config import apply_overrides, from_dict
from training.losses import IGNORE, next_token_loss
from training.loop import OptimConfig, RunConfig, train


def read_conversations(path: str | Path) -> list[list[dict]]:
    """Conversations (lists of {"role", "content"}) from any of the supported files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no SFT data at {path}")
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                    if line.strip()]
    conversations = []
    for i, row in enumerate(rows):
        if "messages" in row:
            conversations.append([{"role": m["role"], "content": m["content"]} for m in row["messages"]])
        elif "prompt" in row and "completion" in row:
            conversations.append([{"role": "user", "content": row["prompt"]},
                                  {"role": "assistant", "content": row["completion"]}])
        elif "instruction" in row and "output" in row:
            prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
            conversations.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}])
        elif "instruction" in row and "instances" in row:
            for instance in row["instances"]:
                prompt = row["instruction"] + (f"\n\n{instance['input']}" if instance.get("input") else "")
                conversations.append([{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": instance["output"]}])
        else:
            raise ValueError(f"{path}, row {i}: expected messages, prompt/completion, instruction/output or "
                             f"instruction/instances; got keys {sorted(row)}")
    return conversations


def encode_conversation(tokenizer, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """(ids, labels) with labels = ids on assistant content, its <|end|> and the final EOS, IGNORE elsewhere;
    None when the first assistant reply would not fit in `max_len`."""
    roles = tokenizer.roles
    ids, labels = [tokenizer.eos_id], [IGNORE]
    for message in messages:
        role = message["role"]
        marker = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}.get(role)
        if marker is None:
            raise ValueError(f"unknown role {role!r} (system, user or assistant)")
        body = tokenizer.encode(message["content"]) + [roles["<|end|>"]]
        ids.append(roles[marker])
        labels.append(IGNORE)
        ids.extend(body)
        labels.extend(body if role == "assistant" else [IGNORE] * len(body))
    ids.append(tokenizer.eos_id)
    labels.append(tokenizer.eos_id if messages and messages[-1]["role"] == "assistant" else IGNORE)
    if len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
        if all(label == IGNORE for label in labels):
            return None
    return ids, labels


@dataclass(frozen=True)
class SFTData:
    data: str = "../shared/data/sft/alpaca_data_1k.json"
    seq_len: int = 256                 # conversations are cut to this many tokens
    held_out_every: int = 10           # every N-th example is held out
    pack: bool = False                 # several conversations per row of seq_len (training rows only)
    seed: int = 0


@dataclass(frozen=True)
class SFTConfig:
    model: str = "out/train"           # our run/checkpoint (HF and GGUF models: their tokenizer has no role tokens)
    data: SFTData = field(default_factory=SFTData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=10))
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="out/sft", steps=200, batch_size=8,
                                                              eval_every=50, checkpoint_every=100))


class SFTBatches:
    """Right-padded batches of whole conversations, in a seeded permutation per pass: a pure function of
    (step, index), like the pretraining batches."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], rows: int, pad_id: int, seed: int,
                 micro_batches_per_step: int = 1):
        if not examples:
            raise ValueError("no training conversations")
        self.examples, self.rows, self.pad_id, self.seed = examples, rows, pad_id, seed
        self.per_step = micro_batches_per_step           # grad_accum x world size

    def batch(self, step: int, index: int) -> dict[str, np.ndarray]:
        n = len(self.examples)
        start = (step * self.per_step + index) * self.rows     # consecutive slots: whole passes over the data
        picks = []
        for slot in range(start, start + self.rows):
            epoch, position = divmod(slot, n)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            picks.append(self.examples[order[position]])
        return collate(picks, self.pad_id)


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


def load_sft_config(path=None, overrides=()) -> SFTConfig:
    from training.config import read_yaml
    data = read_yaml(path) if path else {}
    return from_dict(SFTConfig, apply_overrides(data, list(overrides)), where=str(path or "config"))


def sft(cfg: SFTConfig, log=print) -> dict:
    from training.checkpoint import load_model_weights
    from training.lm import _our_tokenizer, copy_tokenizer
    from training.tokenizer import Tokenizer
    model = load_model_weights(cfg.model)
    tokenizer_dir = _our_tokenizer(Path(cfg.model))
    tokenizer = Tokenizer(str(tokenizer_dir))
    if model.cfg.max_seq_len < cfg.data.seq_len:
        model.extend_context(cfg.data.seq_len)
    conversations = read_conversations(cfg.data.data)
    encoded = [encode_conversation(tokenizer, c, cfg.data.seq_len) for c in conversations]
    kept = [e for e in encoded if e is not None]
    held = [e for i, e in enumerate(kept) if i % cfg.data.held_out_every == 0]
    train_set = [e for i, e in enumerate(kept) if i % cfg.data.held_out_every != 0]
    before = answer_loss(model, held, tokenizer.pad_id)
    log(f"[sft] {len(train_set):,} training and {len(held):,} held-out conversations "
        f"({len(encoded) - len(kept)} too long); held-out answer loss before {before:.4f}")
    if cfg.data.pack:
        conversations_in = len(train_set)
        train_set = pack(train_set, cfg.data.seq_len)
        log(f"[sft] packed {conversations_in:,} conversations into {len(train_set):,} rows of <= {cfg.data.seq_len} "
            f"tokens")

    def evaluate(m):
        return {"answer_loss": answer_loss(m, held, tokenizer.pad_id)}

    config = {"model": cfg.model, "data": asdict(cfg.data), "optim": asdict(cfg.optim), "run": asdict(cfg.run)}
    import os
    per_step = cfg.run.grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
    summary = train(model, SFTBatches(train_set, cfg.run.batch_size, tokenizer.pad_id, cfg.data.seed, per_step),
                    sft_objective, cfg.optim, cfg.run, evaluate=evaluate, config=config)
    if summary:
        summary["answer_loss_before"] = before
        summary["answer_loss_after"] = (summary.get("final_eval") or {}).get("answer_loss")
        (Path(cfg.run.out_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
        copy_tokenizer(tokenizer_dir, cfg.run.out_dir)
    return summary
