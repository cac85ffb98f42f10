"""Scaling laws: fit L(N, D) = E + A / N^α + B / D^β, compute-optimal sizes, training cost.

The fit follows Hoffmann et al. 2022 (Chinchilla, App. D.2) as refitted by Besiroglu et al. 2024 (Epoch AI):
minimise Σ Huber_δ(LSE(a − α log N, b − β log D, e) − log L) over (a, b, e, α, β), with A = e^a, B = e^b,
E = e^e, δ = 1e-3, L-BFGS from a grid of starting points, keeping the best. For a compute budget C ≈ 6ND the
loss-optimal split is N* = G (C/6)^(β/(α+β)), D* = G⁻¹ (C/6)^(α/(α+β)) with G = (αA / (βB))^(1/(α+β)).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}   # Hoffmann et al. 2022, eq. 10


@dataclass(frozen=True)
class ScalingFit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    loss: float = 0.0          # the Huber objective at the optimum
    points: int = 0

    def predict(self, N, D):
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N ** self.alpha + self.B / D ** self.beta

    def optimal(self, flops: float) -> tuple[float, float]:
        """(N*, D*) minimising predicted loss under 6 N D = flops."""
        a, b = self.alpha, self.beta
        G = (a * self.A / (b * self.B)) ** (1 / (a + b))
        return G * (flops / 6) ** (b / (a + b)), (flops / 6) ** (a / (a + b)) / G

    def as_dict(self) -> dict:
        return asdict(self)


def _huber(r, delta):
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r ** 2, delta * (np.abs(r) - 0.5 * delta))
    grad = np.where(small, r, delta * np.sign(r))
    return value, grad


def _objective(theta, logN, logD, logL, delta):
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])       # (3, n)
    top = terms.max(axis=0)
    weights = np.exp(terms - top)
    lse = top + np.log(weights.sum(axis=0))
    soft = weights / weights.sum(axis=0)                                               # d lse / d term
    value, g = _huber(lse - logL, delta)
    grad = np.array([(g * soft[0]).sum(), (g * soft[1]).sum(), (g * soft[2]).sum(),
                     (g * soft[0] * -logN).sum(), (g * soft[1] * -logD).sum()])
    return value.sum(), grad


def fit_scaling_law(N, D, L, delta: float = 1e-3, grid: dict | None = None) -> ScalingFit:
    """Fit E + A/N^α + B/D^β to losses L at parameter counts N and token counts D."""
    from scipy.optimize import minimize  # heavy: only for this statistic / fit
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    if not (len(N) == len(D) == len(L)) or len(N) < 5:
        raise ValueError(f"need at least 5 (N, D, L) points of equal length, got {len(N)}, {len(D)}, {len(L)}")
    if (L <= 0).any() or (N <= 0).any() or (D <= 0).any():
        raise ValueError("N, D and L must be positive")
    logN, logD, logL = np.log(N), np.log(D), np.log(L)
    grid = grid or {"a": (0, 5, 10, 15, 20), "b": (0, 5, 10, 15, 20), "e": (-1, 0, 1),
                    "alpha": (0.2, 0.5, 1.0), "beta": (0.2, 0.5, 1.0)}
    best = None
    for start in itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"]):
        result = minimize(_objective, np.array(start, dtype=float), args=(logN, logD, logL, delta), jac=True,
                          method="L-BFGS-B", bounds=[(None, None)] * 3 + [(1e-3, 3.0)] * 2)
        if best is None or result.fun < best.fun:
            best = result
    a, b, e, alpha, beta = best.x
    return ScalingFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta),
                      loss=float(best.fun), points=len(N))


# ---- cost


@dataclass(frozen=True)
class CostAssumptions:
    gpu_peak_flops: float = 989e12      # H100 SXM, bf16 dense
    gpu_watts: float = 700.0            # H100 SXM board power (TDP)
    pue: float = 1.1                    # data-centre overhead on top of the GPUs (hyperscaler average ~1.1)
    kg_co2e_per_kwh: float = 0.39       # US grid average 2023 (EPA eGRID); location-based


def training_cost(params: float, tokens: float, gpus: int, mfu: float, price_per_gpu_hour: float = 2.0,
                  assumptions: CostAssumptions = CostAssumptions()) -> dict:
    """FLOPs ≈ 6 N D (Kaplan et al. 2020), time at `mfu` of the GPUs' peak, GPU-hours, money, energy, CO2e."""
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if gpus < 1 or params <= 0 or tokens <= 0:
        raise ValueError("params, tokens and gpus must be positive")
    flops = 6 * params * tokens
    seconds = flops / (gpus * assumptions.gpu_peak_flops * mfu)
    gpu_hours = gpus * seconds / 3600
    energy_kwh = gpu_hours * assumptions.gpu_watts / 1000 * assumptions.pue
    return {"flops": flops, "days": seconds / 86400, "gpu_hours": gpu_hours,
            "cost_usd": gpu_hours * price_per_gpu_hour, "energy_mwh": energy_kwh / 1000,
            "co2e_tonnes": energy_kwh * assumptions.kg_co2e_per_kwh / 1000, "assumptions": asdict(assumptions),
            "inputs": {"params": params, "tokens": tokens, "gpus": gpus, "mfu": mfu,
                       "price_per_gpu_hour": price_per_gpu_hour}}


# ---- learning rate across widths


def extrapolate_lr(widths, best_lrs, target_width: float) -> tuple[float, float, float]:
    """Fit log lr* = c + k log width over the small widths; (lr at target_width, k, c)."""
    k, c = np.polyfit(np.log(widths), np.log(best_lrs), 1)
    return float(math.exp(c + k * math.log(target_width))), float(k), float(c)


# ---- data mixing law


def fit_mixing_law(weights: np.ndarray, losses: np.ndarray) -> dict:
    """Ye et al. 2024 ("Data Mixing Laws", eq. 1): L(r) = c + k · exp(Σ_j t_j r_j) over domain proportions r.
    weights (runs, domains) rows summing to 1; losses (runs,). Returns c, k, t."""
    from scipy.optimize import least_squares  # heavy: only for this statistic / fit
    weights, losses = np.asarray(weights, dtype=float), np.asarray(losses, dtype=float)
    runs, domains = weights.shape
    if runs < domains + 2:
        raise ValueError(f"{runs} runs for {domains} domains: the law has {domains + 2} parameters")

    def residual(p):
        return p[0] + p[1] * np.exp(weights @ p[2:]) - losses

    start = np.concatenate([[losses.min() * 0.9, losses.max() - losses.min() * 0.9 + 1e-3], np.zeros(domains)])
    fit = least_squares(residual, start)
    return {"c": float(fit.x[0]), "k": float(fit.x[1]), "t": fit.x[2:].tolist(),
            "rmse": float(np.sqrt(np.mean(fit.fun ** 2)))}


def best_mixture(law: dict, domains: list[str], floor: float = 0.02, samples: int = 200_000, seed: int = 0,
                 bounds: dict[str, tuple[float, float]] | None = None) -> dict:
    """The proportions (each ≥ floor, and inside `bounds` per domain when given: a law fitted on a few runs
    should not be trusted far outside them) minimising the fitted law, by search over Dirichlet samples of the
    simplex; returns {domain: weight}."""
    rng = np.random.default_rng(seed)
    n = len(domains)
    candidates = rng.dirichlet(np.ones(n), size=samples)
    candidates = floor + (1 - n * floor) * candidates
    if bounds:
        low = np.array([bounds[d][0] for d in domains])
        high = np.array([bounds[d][1] for d in domains])
        inside = ((candidates >= low) & (candidates <= high)).all(axis=1)
        if inside.any():
            candidates = candidates[inside]
    predicted = law["c"] + law["k"] * np.exp(candidates @ np.asarray(law["t"]))
    best = candidates[int(np.argmin(predicted))]
    return {d: round(float(w), 4) for d, w in zip(domains, best)}
