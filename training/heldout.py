"""Held-out loss and bits-per-byte on token windows during pretraining, and the unigram baseline.

bits per byte = Σ NLL (nats) / Σ UTF-8 bytes of the predicted tokens / ln 2 (lm-evaluation-harness's
definition), so models with different tokenizers compare. Bytes come from the tokenizer's `token_bytes()`.
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F


def _summarise(nll: dict, count: dict, nbytes: dict) -> dict:
    total_nll, total_tokens, total_bytes = sum(nll.values()), sum(count.values()), sum(nbytes.values())
    out = {"loss": total_nll / max(1, total_tokens), "bpb": total_nll / max(1, total_bytes) / math.log(2),
           "tokens": int(total_tokens), "bytes": int(total_bytes)}
    out["domains"] = {d: {"loss": nll[d] / count[d], "bpb": nll[d] / max(1, nbytes[d]) / math.log(2),
                          "tokens": int(count[d])} for d in sorted(nll)}
    return out


@torch.no_grad()
def windows_loss(model, windows: list[tuple[str, np.ndarray]], token_bytes: np.ndarray, rows: int = 16) -> dict:
    """Loss (nats/token) and bits-per-byte of `model` on (domain, window) pairs: each window's tokens after
    the first are predicted from those before."""
    device = next(model.parameters()).device
    nll, count, nbytes = defaultdict(float), defaultdict(int), defaultdict(int)
    for i in range(0, len(windows), rows):
        chunk = windows[i:i + rows]
        names = [d for d, _ in chunk]
        seqs = torch.from_numpy(np.stack([w for _, w in chunk])).to(device)            # (B, T+1)
        logits = model(seqs[:, :-1]).logits.float()                                     # (B, T, V)
        losses = F.cross_entropy(logits.transpose(1, 2), seqs[:, 1:], reduction="none")  # (B, T)
        targets = seqs[:, 1:].cpu().numpy()
        for name, row_loss, row_targets in zip(names, losses.sum(dim=1).tolist(), targets):
            nll[name] += row_loss
            count[name] += row_targets.size
            nbytes[name] += int(token_bytes[row_targets].sum())
    return _summarise(nll, count, nbytes)


def unigram_loss(counts: np.ndarray, windows: list[tuple[str, np.ndarray]], token_bytes: np.ndarray) -> dict:
    """The same numbers for a unigram model of the training tokens (add-one smoothing over the vocabulary)."""
    vocab = len(token_bytes)
    counts = np.pad(counts, (0, max(0, vocab - len(counts))))[:vocab].astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    nll, count, nbytes = defaultdict(float), defaultdict(int), defaultdict(int)
    for name, window in windows:
        targets = window[1:]
        nll[name] += float(-logp[targets].sum())
        count[name] += targets.size
        nbytes[name] += int(token_bytes[targets].sum())
    return _summarise(nll, count, nbytes)
