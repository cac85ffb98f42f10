"""An LSTM language model with the Transformer's interface, so scaling sweeps compare the two families on one
plot (Kaplan et al. 2020, fig. 7, did the same: LSTMs fall behind transformers as they grow, most on late
tokens of long contexts)."""
from __future__ import annotations

import torch.nn as nn

from training.model import ModelConfig, ModelOutput


class LSTMLanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.lstm = nn.LSTM(cfg.dim, cfg.dim, num_layers=cfg.n_layers, batch_first=True)
        self.norm = nn.LayerNorm(cfg.dim)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=cfg.init_std)

    def hidden_states(self, idx, cache=None, key_mask=None):
        if cache is not None:
            raise ValueError("the LSTM baseline has no KV cache")
        out, _ = self.lstm(self.embed(idx))                   # (B, T, D)
        return out, []

    def logits(self, hidden):
        return self.lm_head(self.norm(hidden))

    def forward(self, idx, cache=None, key_mask=None) -> ModelOutput:
        hidden, _ = self.hidden_states(idx, cache, key_mask)
        return ModelOutput(logits=self.logits(hidden))

    def num_params(self, embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embedding else n - self.embed.weight.numel()

    def active_params(self) -> int:
        return self.num_params(embedding=False)

    def flops_per_token(self, seq_len: int) -> float:
        """6 · matmul parameters (the 4 gates' input and recurrent weights, the output projection)."""
        tied = self.cfg.vocab_size * self.cfg.dim if self.cfg.tie_embeddings else 0
        return 6 * (self.active_params() + tied)
