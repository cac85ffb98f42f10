"""A language model with a scalar head: the reward model's score and PPO's value function are one module."""
from __future__ import annotations

import torch
import torch.nn as nn


class ScalarHead(nn.Module):
    """The backbone and a linear head (zero-initialised, so it starts at 0) on its final normed hidden states.

    `model(idx, lengths)`: the score at each row's last real token, (B,) — a reward model.
    `model(idx)`: (logits (B, T, V), values (B, T)) — PPO's policy with its value head on the shared trunk.
    """

    def __init__(self, backbone, bias: bool = True):
        super().__init__()
        self.backbone = backbone
        self.cfg = backbone.cfg
        self.head = nn.Linear(backbone.cfg.dim, 1, bias=bias)     # imported models: none, as Llama's `score`
        nn.init.zeros_(self.head.weight)
        if bias:
            nn.init.zeros_(self.head.bias)

    def forward(self, idx, lengths=None):
        hidden, _ = self.backbone.hidden_states(idx)                               # (B, T, D)
        if lengths is not None:
            last = hidden[torch.arange(idx.shape[0], device=idx.device), lengths - 1]   # (B, D)
            return self.head(self.backbone.norm(last))[:, 0]                       # (B,)
        normed = self.backbone.norm(hidden)                                        # (B, T, D)
        return self.backbone.lm_head(normed), self.head(normed)[..., 0]            # (B, T, V), (B, T)
