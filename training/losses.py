"""Objectives as pure functions of tensors, each citing where it comes from; the loop calls them through
small objective callables (training/pretrain.py and, later, post-training)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100     # label value that contributes no loss (PyTorch's cross_entropy default)


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean cross-entropy (nats per predicted token) of logits (B, T, V) against targets (B, T), computed in
    float32 whatever the autocast dtype (bf16 logits lose too much precision in log-softmax)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=ignore_index)


def moe_loss(balance: torch.Tensor | None, z: torch.Tensor | None, balance_coef: float, z_coef: float):
    """Switch Transformer's auxiliary loss α · E · Σ f_i P_i (Fedus et al. 2021, eq. 4) plus ST-MoE's router
    z-loss (Zoph et al. 2022, eq. 5); zero for dense models."""
    if balance is None:
        return 0.0
    return balance_coef * balance + z_coef * z
