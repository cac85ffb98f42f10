"""The model: a decoder-only transformer of the Llama family, optionally with mixture-of-experts MLPs.

RMSNorm before each block, rotary position embeddings (the "rotate half" layout of Llama / HF transformers, so
imported weights need no permutation), grouped-query attention through `scaled_dot_product_attention`, a
SwiGLU MLP (Shazeer 2020) or a top-k routed mixture of SwiGLU experts (Switch Transformer, Fedus et al. 2021;
router z-loss from ST-MoE, Zoph et al. 2022), tied or untied embeddings.

Shapes: B batch, T time (tokens), D model width, H query heads, K key/value heads, S head size, E experts,
N tokens in a flattened batch (B·T), V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.config import MAX_CONTEXT, at_least, at_most


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 8_000
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4            # grouped-query attention: each K/V head serves n_heads / n_kv_heads queries
    head_dim: int = 0              # 0: dim // n_heads
    hidden_dim: int = 0            # SwiGLU width; 0: 8/3 · dim rounded up to multiple_of (Llama)
    multiple_of: int = 64
    max_seq_len: int = 256         # RoPE tables are built this long; longer inputs are refused
    rope_theta: float = 10_000.0   # Llama 2; raise it for long-context continual pretraining
    norm_eps: float = 1e-5
    tie_embeddings: bool = True    # small models: the embedding is most of the parameters
    init_std: float = 0.02         # GPT-2; output projections get init_std / sqrt(2 · n_layers)
    n_experts: int = 0             # 0: dense MLP; otherwise every MLP is a mixture of this many experts
    top_k: int = 2                 # experts per token (Mixtral: 2 of 8)
    balance_coef: float = 0.01     # Switch Transformer's alpha for the load-balancing loss
    z_loss_coef: float = 0.001     # ST-MoE's router z-loss coefficient
    arch: str = "transformer"      # or "lstm": the recurrent baseline for scaling comparisons (training/lstm.py)

    def __post_init__(self):
        at_least(self, 0, "vocab_size", "head_dim", "hidden_dim", "n_experts")
        at_least(self, 1, "dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "max_seq_len")
        at_most(self, MAX_CONTEXT, "max_seq_len")
        at_least(self, 0.0, "balance_coef", "z_loss_coef", "init_std")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError(f"rope_theta and norm_eps must be > 0, got {self.rope_theta}, {self.norm_eps}")
        if self.dim % self.n_heads and not self.head_dim:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads}) or set head_dim")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.arch not in ("transformer", "lstm"):
            raise ValueError(f"arch must be transformer or lstm, got {self.arch!r}")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must be in 1..n_experts ({self.n_experts}), got {self.top_k}")

    @property
    def head_size(self) -> int:
        return self.head_dim or self.dim // self.n_heads

    @property
    def mlp_dim(self) -> int:
        if self.hidden_dim:
            return self.hidden_dim
        width = int(8 * self.dim / 3)
        return self.multiple_of * math.ceil(width / self.multiple_of)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # in float32 as Llama does, then back to the input's dtype
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rope_tables(head_size: int, length: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (length, head_size): frequencies repeated for both halves of a head."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32, device=device) / head_size)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)   # (T, S/2)
    angles = torch.cat([angles, angles], dim=-1)                                                 # (T, S)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x (B, heads, T, S) rotated by position; cos/sin (T, S), or (B, 1, T, S) for positions per row. The first
    and second halves of a head pair up."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Keys and values of the tokens seen so far, per layer, for generation one token at a time."""

    def __init__(self, n_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k, v):
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_size = cfg.n_heads, cfg.n_kv_heads, cfg.head_size
        self.q = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_size, bias=False)
        self.k = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_size, bias=False)
        self.v = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_size, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.head_size, cfg.dim, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | None = None, key_mask=None, past: int = 0):
        """`past`: how many tokens the cache held before this call."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_size).transpose(1, 2)       # (B, H, T, S)
        k = self.k(x).view(B, T, self.n_kv_heads, self.head_size).transpose(1, 2)    # (B, K, T, S)
        v = self.v(x).view(B, T, self.n_kv_heads, self.head_size).transpose(1, 2)    # (B, K, T, S)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)                                          # (B, K, past+T, S)
        if self.n_kv_heads != self.n_heads:
            repeat = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(repeat, dim=1)                                    # (B, H, past+T, S)
            v = v.repeat_interleave(repeat, dim=1)
        mask, causal = None, True
        if past or key_mask is not None:
            # explicit mask: query i (at position past+i) sees keys 0..past+i, and only unpadded ones
            keys = k.shape[2]
            mask = torch.ones(T, keys, dtype=torch.bool, device=x.device).tril(diagonal=past)   # (T, past+T)
            if key_mask is not None:
                mask = mask[None, None] & key_mask[:, None, None, :].bool()           # (B, 1, T, past+T)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, H, T, S)
        y = y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_size)           # (B, T, H·S)
        return self.o(y)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


@dataclass
class MoEStats:
    """What a mixture layer reports for one forward pass (all scalars except `load`)."""
    balance: torch.Tensor    # Switch: E · Σ_i f_i · P_i, 1.0 when perfectly balanced
    z: torch.Tensor          # ST-MoE: mean over tokens of logsumexp(router logits)²
    load: torch.Tensor       # (E,) share of routed token slots per expert × E (1.0 = uniform)


class MixtureOfExperts(nn.Module):
    """Top-k routing over SwiGLU experts; gates renormalised over the chosen k (Mixtral)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.n_experts, cfg.top_k
        self.router = nn.Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.dim, cfg.mlp_dim) for _ in range(cfg.n_experts))

    def forward(self, x) -> tuple[torch.Tensor, MoEStats]:
        B, T, D = x.shape
        flat = x.reshape(B * T, D)                                                    # (N, D)
        logits = self.router(flat).float()                                            # (N, E)
        probs = logits.softmax(dim=-1)                                                # (N, E)
        top_p, top_i = probs.topk(self.top_k, dim=-1)                                 # (N, k)
        gates = (top_p / top_p.sum(dim=-1, keepdim=True)).to(x.dtype)                # (N, k)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            # every expert runs, on no tokens if none chose it, so DDP sees each parameter in every step
            token, slot = torch.where(top_i == e)                                     # (n_e,), (n_e,)
            out.index_add_(0, token, expert(flat[token]) * gates[token, slot, None])
        # Switch Transformer eq. 4-6: f_i = share of token slots routed to i, P_i = mean router probability
        routed = F.one_hot(top_i, self.n_experts).sum(dim=1).float()                   # (N, E)
        f = routed.mean(dim=0) / self.top_k                                           # (E,)
        P = probs.mean(dim=0)                                                         # (E,)
        stats = MoEStats(balance=self.n_experts * (f * P).sum(),
                         z=torch.logsumexp(logits, dim=-1).pow(2).mean(),
                         load=(f * self.n_experts).detach())
        return out.view(B, T, D), stats


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MixtureOfExperts(cfg) if cfg.n_experts else SwiGLU(cfg.dim, cfg.mlp_dim)

    def forward(self, x, cos, sin, layer, cache=None, key_mask=None, past=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, cache, key_mask, past)
        h = self.mlp(self.mlp_norm(x))
        if isinstance(h, tuple):
            h, stats = h
            return x + h, stats
        return x + h, None


@dataclass
class ModelOutput:
    logits: torch.Tensor                       # (B, T, V)
    moe: list[MoEStats] = field(default_factory=list)   # one per layer when the MLPs are mixtures

    @property
    def balance_loss(self):
        return torch.stack([s.balance for s in self.moe]).mean() if self.moe else None

    @property
    def z_loss(self):
        return torch.stack([s.z for s in self.moe]).mean() if self.moe else None

    @property
    def expert_load(self):
        """(layers, E) or None."""
        return torch.stack([s.load for s in self.moe]) if self.moe else None


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self._set_rope(cfg.max_seq_len, cfg.rope_theta)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("attn.o.weight", "down.weight")):     # residual projections, GPT-2 scaling
                nn.init.normal_(p, std=cfg.init_std / math.sqrt(2 * cfg.n_layers))

    def _init(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)

    def _set_rope(self, length: int, theta: float):
        cos, sin = rope_tables(self.cfg.head_size, length, theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def extend_context(self, max_seq_len: int, rope_theta: float | None = None):
        """Continual pretraining at a longer context: rebuild the RoPE tables (optionally with a new base)."""
        self.cfg = replace(self.cfg, max_seq_len=max_seq_len, rope_theta=rope_theta or self.cfg.rope_theta)
        self._set_rope(max_seq_len, self.cfg.rope_theta)
        self.rope_cos, self.rope_sin = self.rope_cos.to(self.embed.weight.device), \
            self.rope_sin.to(self.embed.weight.device)

    def forward(self, idx, cache: KVCache | None = None, key_mask=None) -> ModelOutput:
        """idx (B, T) token ids; key_mask (B, past+T) 1 for real tokens, 0 for padding."""
        x, stats = self.hidden_states(idx, cache, key_mask)
        return ModelOutput(logits=self.logits(x), moe=stats)

    def logits(self, hidden):
        """(..., D) final hidden states -> (..., V): evaluation applies it only where it needs scores."""
        return self.lm_head(self.norm(hidden))

    def hidden_states(self, idx, cache: KVCache | None = None, key_mask=None, positions=None):
        """(B, T, D) hidden states before the final norm, and the MoE stats per layer. `positions` (B, T): each
        token's position, where rows of one batch continue caches of different (padded) lengths; by default
        the cache's length onwards."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        last = start + T if positions is None else int(positions.max()) + 1
        if last > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {last} tokens, the model's max_seq_len is {self.cfg.max_seq_len}")
        if positions is None:
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]   # (T, S)
        else:
            cos, sin = self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]   # (B, 1, T, S)
        x = self.embed(idx)                                                          # (B, T, D)
        stats = []
        for i, layer in enumerate(self.layers):
            x, s = layer(x, cos, sin, i, cache, key_mask, start)
            if s is not None:
                stats.append(s)
        return x, stats

    def num_params(self, embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if embedding else n - self.embed.weight.numel()

    def active_params(self) -> int:
        """Non-embedding parameters used per token (a token passes through top_k of the experts)."""
        n = self.num_params(embedding=False)
        if self.cfg.n_experts:
            per_expert = sum(p.numel() for p in self.layers[0].mlp.experts[0].parameters())
            n -= self.cfg.n_layers * per_expert * (self.cfg.n_experts - self.cfg.top_k)
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 · active params + attention 12 · layers · heads · head size · T
        (PaLM, Chowdhery et al. 2022, App. B); the tied output projection counted once."""
        cfg = self.cfg
        matmul_params = self.active_params() + (cfg.vocab_size * cfg.dim if cfg.tie_embeddings else 0)
        return 6 * matmul_params + 12 * cfg.n_layers * cfg.n_heads * cfg.head_size * seq_len


def collapsed_experts(load: torch.Tensor, min_load: float = 0.1) -> list[tuple[int, int, float]]:
    """(layer, expert, load) for every expert whose load (× uniform) is below `min_load`: routing collapse."""
    layers, experts = torch.where(load < min_load)
    return [(int(i), int(e), float(load[i, e])) for i, e in zip(layers, experts)]
