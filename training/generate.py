"""Sampling from the model with a KV cache: temperature, top-k, top-p (nucleus), stop at EOS.

Each prompt is run once (prefill), then one token at a time against the cache. Sampling uses its own
`torch.Generator`, so a seed gives the same text whatever else the process draws.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from training.model import KVCache


GREEDY_BELOW = 1e-30      # logits / 1e-30 stay finite in float32; 1e-300 would be 0 there, and 0 / 0 is nan


def greedy(temperature: float) -> bool:
    return temperature < GREEDY_BELOW


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Logits (…, V) with temperature applied and everything outside the top-k / the smallest set whose
    probability reaches top-p (Holtzman et al. 2020) set to −inf; temperature 0 keeps only the argmax (as does one
    so small that dividing by it would overflow: sampling there is greedy anyway)."""
    if greedy(temperature):
        keep = logits == logits.max(dim=-1, keepdim=True).values
        return logits.masked_fill(~keep, float("-inf"))
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs            # mass of the tokens ranked above each one
        drop_sorted = before >= top_p                    # the first token is always kept
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model, prompt: list[int], max_new_tokens: int = 64, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_id: int | Iterable[int] | None = 3, seed: int | None = None) -> list[int]:
    """New token ids after `prompt` (the stop token, if produced, included and last). `eos_id`: one stop id or
    several (a chat reply ends at `<|end|>` or EOS)."""
    stops = {eos_id} if isinstance(eos_id, int) else set(eos_id or ())
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    device = next(model.parameters()).device
    room = model.cfg.max_seq_len - len(prompt)
    if room <= 0:
        raise ValueError(f"prompt of {len(prompt)} tokens leaves no room in a context of {model.cfg.max_seq_len}")
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    cache = KVCache(model.cfg.n_layers)
    logits = model(torch.tensor([prompt], device=device), cache=cache).logits[0, -1]
    out = []
    for _ in range(min(max_new_tokens, room)):
        filtered = filter_logits(logits.float(), temperature, top_k, top_p)
        if greedy(temperature):
            token = int(filtered.argmax())
        else:
            token = int(torch.multinomial(filtered.softmax(-1), 1, generator=generator))
        out.append(token)
        if token in stops or len(prompt) + len(out) >= model.cfg.max_seq_len:
            break
        logits = model(torch.tensor([[token]], device=device), cache=cache).logits[0, -1]
    return out
