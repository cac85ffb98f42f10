"""Post-training objectives checked numerically, and sampling with the KV cache."""
import math

import pytest
import torch

from training.generate import filter_logits, generate
from training.losses import IGNORE, dpo_loss, gae, kl_k1, ppo_policy_loss, ppo_value_loss, reward_loss, \
    sequence_logprobs, whiten
from training.model import ModelConfig, Transformer


def test_dpo_with_equal_log_probs_is_log_2_and_its_gradient_favours_chosen():
    policy_c = torch.tensor([-12.0, -30.0], requires_grad=True)
    policy_r = torch.tensor([-12.0, -30.0], requires_grad=True)
    loss, chosen_reward, rejected_reward = dpo_loss(policy_c, policy_r, torch.tensor([-12.0, -30.0]),
                                                    torch.tensor([-12.0, -30.0]), beta=0.1)
    assert float(loss) == pytest.approx(math.log(2))
    assert torch.equal(chosen_reward, torch.zeros(2)) and torch.equal(rejected_reward, torch.zeros(2))
    loss.backward()
    assert (policy_c.grad < 0).all() and (policy_r.grad > 0).all()     # descent raises chosen, lowers rejected
    assert float(policy_c.grad[0]) == pytest.approx(-0.1 * 0.5 / 2)     # −β σ(0) / batch


def test_dpo_margin_and_ipo_by_hand():
    loss, c, r = dpo_loss(torch.tensor([-10.0]), torch.tensor([-14.0]), torch.tensor([-11.0]), torch.tensor([-12.0]),
                          beta=0.5)
    margin = (-10 + 11) - (-14 + 12)                                         # 3
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * margin))))
    assert float(c) == pytest.approx(0.5) and float(r) == pytest.approx(-1.0)
    ipo, _, _ = dpo_loss(torch.tensor([-10.0]), torch.tensor([-14.0]), torch.tensor([-11.0]), torch.tensor([-12.0]),
                         beta=0.5, variant="ipo")
    assert float(ipo) == pytest.approx((3 - 1 / (2 * 0.5)) ** 2)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0)


def test_reward_loss_value_gradient_sign_and_centring():
    chosen = torch.tensor([1.0, 0.5], requires_grad=True)
    rejected = torch.tensor([0.0, 1.5], requires_grad=True)
    loss = reward_loss(chosen, rejected)
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert float(loss) == pytest.approx(expected)
    loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()
    centred = reward_loss(torch.tensor([3.0]), torch.tensor([1.0]), center_coef=0.01)
    assert float(centred) == pytest.approx(-math.log(1 / (1 + math.exp(-2.0))) + 0.01 * 16)


def test_ppo_clipping_stops_the_gradient_outside_the_ratio_bounds():
    mask = torch.ones(1, 3)
    advantages = torch.tensor([[1.0, 1.0, -1.0]])
    old = torch.zeros(1, 3)
    # ratios e^0.5 = 1.65 (above 1.2, A > 0: clipped), e^0.1 = 1.105 (inside), e^-0.5 = 0.61 (below 0.8, A < 0)
    logp = torch.tensor([[0.5, 0.1, -0.5]], requires_grad=True)
    loss = ppo_policy_loss(logp, old, advantages, mask, clip=0.2)
    assert float(loss) == pytest.approx((-1.2 - math.exp(0.1) + 0.8) / 3)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 2] == 0
    assert float(logp.grad[0, 1]) == pytest.approx(-math.exp(0.1) / 3)
    # on the other side of the bound the unclipped term is the larger one and the gradient flows
    low = torch.tensor([[-0.5]], requires_grad=True)
    ppo_policy_loss(low, torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1)).backward()
    assert float(low.grad) == pytest.approx(-math.exp(-0.5))


def test_value_loss_is_clipped_around_the_old_values():
    loss = ppo_value_loss(torch.tensor([[2.0]]), torch.tensor([[1.0]]), torch.tensor([[1.0]]), torch.ones(1, 1),
                          clip=0.2)
    assert float(loss) == pytest.approx(0.5 * max((2 - 1) ** 2, (1.2 - 1) ** 2))


def test_gae_against_a_hand_computed_example():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = gae(rewards, values, gamma=1.0, lam=0.95)
    d2 = 1.0 - 0.7                       # last step: no value after it
    d1 = 0.0 + 0.7 - 0.6
    d0 = 0.0 + 0.6 - 0.5
    a2, a1 = d2, d1 + 0.95 * d2
    a0 = d0 + 0.95 * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.6, a2 + 0.7])
    assert gae(rewards, values, gamma=1.0, lam=1.0)[1][0].tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_whiten_kl_and_masked_sequence_log_probs():
    x = torch.tensor([1.0, 2.0, 3.0, 100.0])
    w = whiten(x, mask=torch.tensor([True, True, True, False]))
    assert w[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    assert kl_k1(torch.tensor([-1.0]), torch.tensor([-1.5])).item() == pytest.approx(0.5)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    labels = torch.tensor([[IGNORE, 1, 2]])                             # the prompt position is not scored
    assert float(sequence_logprobs(logits, labels)) == pytest.approx(math.log(0.8) + math.log(0.6))
    assert float(sequence_logprobs(logits, labels, average=True)) == pytest.approx((math.log(0.8) + math.log(0.6)) / 2)


def test_filters_keep_the_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_logits(logits, top_k=2)[2:]).all() and torch.isfinite(filter_logits(logits, top_k=2)[:2]).all()
    nucleus = filter_logits(logits, top_p=0.75)                          # 0.5 + 0.3 reach 0.75: two kept
    assert torch.isfinite(nucleus[:2]).all() and torch.isinf(nucleus[2:]).all()
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).sum() == 1   # the first token always stays
    greedy = filter_logits(logits, temperature=0)
    assert torch.isfinite(greedy).sum() == 1 and int(greedy.argmax()) == 0


def test_greedy_generation_with_the_cache_equals_argmax_without_it():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=48)).eval()
    prompt = [5, 17, 42, 7]
    fast = generate(model, prompt, max_new_tokens=20, temperature=0, eos_id=None)
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert fast == seq[len(prompt):]
    assert generate(model, prompt, 20, temperature=1.0, top_k=1, eos_id=None, seed=3) == fast
    # a temperature too small to divide by in float32 (it was nan probabilities and a RuntimeError) samples greedily
    assert generate(model, prompt, 20, temperature=1e-300, eos_id=None, seed=3) == fast
    a = generate(model, prompt, 20, temperature=1.0, seed=7, eos_id=None)
    assert a == generate(model, prompt, 20, temperature=1.0, seed=7, eos_id=None)
    assert len(generate(model, list(range(40)), 20, temperature=0, eos_id=None)) == 8      # the context is 48
