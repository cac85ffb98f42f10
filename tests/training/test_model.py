"""The transformer: causality, the KV cache, grouped-query attention, RoPE, mixture-of-experts routing."""
import math

import pytest
import torch

from training.model import KVCache, ModelConfig, MixtureOfExperts, Transformer, apply_rope, collapsed_experts, \
    rope_tables

TINY = ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)


def test_a_token_never_sees_the_future():
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    x = torch.randint(0, 512, (2, 32))
    changed = x.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 512
    with torch.no_grad():
        a, b = model(x).logits, model(changed).logits
    assert torch.equal(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_cached_decoding_equals_the_full_forward(kv_heads):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**TINY.__dict__, "n_kv_heads": kv_heads})).eval()
    x = torch.randint(0, 512, (3, 24))
    with torch.no_grad():
        full = model(x).logits
        cache = KVCache(TINY.n_layers)
        parts = [model(x[:, :10], cache=cache).logits]                 # prompt, then one token at a time,
        parts += [model(x[:, i:i + 1], cache=cache).logits for i in range(10, 20)]
        parts.append(model(x[:, 20:], cache=cache).logits)             # then a chunk
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_padding_mask_leaves_real_tokens_unchanged():
    torch.manual_seed(0)
    model = Transformer(TINY).eval()
    x = torch.randint(1, 512, (1, 12))
    padded = torch.cat([x, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 4)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(padded, key_mask=mask).logits[:, :12], model(x).logits, atol=1e-5)


def test_rope_rotates_pairs_by_position_and_keeps_norms():
    cos, sin = rope_tables(8, 16, 10_000.0)
    x = torch.randn(1, 1, 16, 8)
    y = apply_rope(x, cos, sin)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.allclose(y[..., 0, :], x[..., 0, :])                 # position 0 is not rotated
    # dot products depend only on the distance between positions
    q, k = torch.randn(8), torch.randn(8)
    qs, ks = q.expand(1, 1, 16, 8), k.expand(1, 1, 16, 8)
    rq, rk = apply_rope(qs, cos, sin)[0, 0], apply_rope(ks, cos, sin)[0, 0]
    assert math.isclose(float(rq[5] @ rk[3]), float(rq[12] @ rk[10]), rel_tol=1e-4)


def test_parameter_counts_and_flops():
    model = Transformer(TINY)
    per_layer = 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * TINY.mlp_dim + 2 * 64
    assert TINY.mlp_dim == 192                                        # 8/3 · 64 = 170.7, up to a multiple of 64
    assert model.num_params() == 512 * 64 + 2 * per_layer + 64        # tied output projection counted once
    assert model.active_params() == 2 * per_layer + 64
    assert model.flops_per_token(32) == 6 * (2 * per_layer + 64 + 512 * 64) + 12 * 2 * 4 * 16 * 32


def test_bad_shapes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        ModelConfig(n_heads=8, n_kv_heads=3)
    with pytest.raises(ValueError, match="top_k"):
        ModelConfig(n_experts=2, top_k=3)
    with pytest.raises(ValueError, match="max_seq_len"):
        Transformer(TINY)(torch.zeros(1, 65, dtype=torch.long))


def test_moe_routes_each_token_to_top_k_experts_with_renormalised_gates():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=512, dim=32, n_layers=1, n_heads=4, n_kv_heads=4, n_experts=4, top_k=2)
    moe = MixtureOfExperts(cfg)
    x = torch.randn(2, 5, 32)
    out, stats = moe(x)
    # the same computed token by token
    flat = x.reshape(10, 32)
    probs = moe.router(flat).softmax(-1)
    expected = torch.zeros_like(flat)
    for n in range(10):
        p, i = probs[n].topk(2)
        for gate, e in zip(p / p.sum(), i):
            expected[n] += gate * moe.experts[int(e)](flat[n:n + 1])[0]
    assert torch.allclose(out.reshape(10, 32), expected, atol=1e-5)
    assert math.isclose(float(stats.load.sum()), 4.0, rel_tol=1e-5)   # loads are × uniform: they sum to E
    # Switch eq. 4: E · Σ_i f_i · P_i with f_i the share of the 20 routed slots, P_i the mean probability
    chosen = probs.topk(2, dim=-1).indices
    f = torch.stack([(chosen == e).sum() for e in range(4)]).float() / 20
    assert math.isclose(float(stats.balance.detach()), float(4 * (f * probs.mean(0)).sum()), rel_tol=1e-5)
    assert torch.allclose(stats.load, f * 4)


def test_collapsed_experts_lists_the_starved_ones():
    load = torch.tensor([[1.9, 2.05, 0.05, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert collapsed_experts(load) == [(0, 2, pytest.approx(0.05)), (0, 3, 0.0)]
    assert collapsed_experts(load, min_load=0.01) == [(0, 3, 0.0)]
