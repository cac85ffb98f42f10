"""Objectives as pure functions of tensors, each citing where it comes from; the loop calls them through
small objective callables (training/pretrain.py, training/post/)."""
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


# ---- post-training objectives (SFT, reward model, DPO, PPO): pure functions of tensors


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """log p(label) at each position, 0 where the label is `ignore_index`: logits (..., V) predict labels (...)
    (already shifted), in float32 whatever the autocast dtype. The one log-prob helper of DPO, PPO and eval."""
    mask = labels != ignore_index
    safe = labels.masked_fill(~mask, 0)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe[..., None])[..., 0]      # (...)
    return logp * mask


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE,
                      average: bool = False) -> torch.Tensor:
    """Σ (or mean, `average`) of log p(label) over positions whose label is not `ignore_index`; logits (B, T, V)
    predict labels (B, T) (already shifted). Returns (B,)."""
    total = token_logprobs(logits, labels, ignore_index).sum(-1)
    return total / (labels != ignore_index).sum(-1).clamp(min=1) if average else total


def reward_loss(chosen: torch.Tensor, rejected: torch.Tensor, center_coef: float = 0.0) -> torch.Tensor:
    """Bradley–Terry: −log σ(r_c − r_r) (Ouyang et al. 2022, eq. 1), plus the optional centring term
    η · (r_c + r_r)² that keeps rewards near zero (Eisenstein et al. 2023; TRL's center_rewards_coefficient)."""
    loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1, variant: str = "sigmoid"):
    """Direct preference optimisation on sequence log-probs (B,). `sigmoid`: −log σ(β·[(π_c − ref_c) −
    (π_r − ref_r)]) (Rafailov et al. 2023, eq. 7); `ipo`: ([(π_c − ref_c) − (π_r − ref_r)] − 1/(2β))²
    (Azar et al. 2023, eq. 17). Length normalisation is the caller's choice of mean log-probs
    (`sequence_logprobs(average=True)`, as SimPO / R-DPO do). Returns (loss, chosen rewards, rejected rewards),
    the rewards being β · (π − ref)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    margin = chosen_ratio - rejected_ratio
    if variant == "sigmoid":
        loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
    elif variant == "ipo":
        loss = ((margin - 1 / (2 * beta)) ** 2).mean()
    else:
        raise ValueError(f"variant must be sigmoid or ipo, got {variant!r}")
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The per-token k1 estimator of KL(π ‖ π_ref): log π − log π_ref (Schulman 2020, "Approximating KL")."""
    return logp - ref_logp


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over (B, T) per-token rewards and value
    estimates, the value after the last token taken as 0. Returns (advantages, returns = advantages + values)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the unmasked entries (PPO's advantage normalisation)."""
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    values = x[mask]
    return (x - values.mean()) / (values.std() + eps)


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> torch.Tensor:
    """Clipped surrogate (Schulman et al. 2017, eq. 7): mean over tokens of max(−A·ρ, −A·clip(ρ, 1 ± ε))."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    return (torch.maximum(unclipped, clipped) * mask).sum() / mask.sum().clamp(min=1)


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss (as in OpenAI's baselines and TRL): ½ · max((V − R)², (V_clip − R)²)."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (loss * mask).sum() / mask.sum().clamp(min=1)
