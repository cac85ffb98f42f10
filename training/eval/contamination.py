"""Test-set contamination in a black-box model: the sharded order test of Oren et al. 2023 ("Proving Test Set
Contamination in Black Box Language Models", ICLR 2024).

```
refinery contamination --model out/train --benchmark ../shared/data/mc/copa.jsonl
```
A benchmark's examples are exchangeable: a model that never saw them in one particular order has no reason
to prefer that order. So split the examples, in their canonical order, into `shards` contiguous shards; for
each shard compare log p(the shard's examples in canonical order) with the mean log p of `permutations`
random orders of the same examples (Oren et al. §3, the sharded likelihood comparison test). Under the null
of no contamination the per-shard differences have mean 0; a one-sided t-test over shards gives the p-value.
"""
from __future__ import annotations

import bz2
import math
import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OrderTestConfig:
    shards: int = 20               # Oren et al. use up to ~50 shards; 20 keeps CPU runs short
    permutations: int = 10         # random orders per shard (the paper's m)
    separator: str = "\n"          # how examples are joined, as in the file the model may have seen
    seed: int = 0

    def __post_init__(self):
        if self.shards < 2:
            raise ValueError(f"shards must be >= 2 (a t-test needs two), got {self.shards}")
        if self.permutations < 1:
            raise ValueError(f"permutations must be >= 1, got {self.permutations}")


def read_examples(path: str | Path) -> list[str]:
    """The examples of a benchmark file, one per non-empty line (JSONL rows, CSV rows, text lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark file at {path}")
    opener = open
    if path.suffix == ".bz2":
        opener = bz2.open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            examples = [line.rstrip("\n") for line in fh if line.strip()]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not examples:
        raise ValueError(f"{path}: no examples (the file has no non-empty line)")
    return examples


def t_sf(t: float, dof: int) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom."""
    from scipy.stats import t as student  # heavy: only for this statistic / fit
    return float(student.sf(t, dof))


def order_test(logprob, examples: list[str], cfg: OrderTestConfig = OrderTestConfig(), progress=None) -> dict:
    """`logprob(text) -> float` (natural log); returns the t statistic, one-sided p-value and per-shard
    differences (canonical minus mean shuffled)."""
    if len(examples) < 2 * cfg.shards:
        raise ValueError(f"{len(examples)} examples: too few for {cfg.shards} shards of at least 2")
    if len(set(examples)) < 2:
        raise ValueError("every example is the same line: there is no order to test")
    rng = random.Random(cfg.seed)
    bounds = [round(i * len(examples) / cfg.shards) for i in range(cfg.shards + 1)]
    diffs = []
    for s in range(cfg.shards):
        shard = examples[bounds[s]:bounds[s + 1]]
        canonical = logprob(cfg.separator.join(shard))
        shuffled = []
        for _ in range(cfg.permutations):
            order = shard[:]
            for _ in range(100):            # an order other than the file's, where the shard has one
                rng.shuffle(order)
                if order != shard or len(set(shard)) < 2:
                    break
            shuffled.append(logprob(cfg.separator.join(order)))
        diffs.append(canonical - sum(shuffled) / len(shuffled))
        if progress is not None:
            progress(1)
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    t = mean / (sd / math.sqrt(n)) if sd > 0 else (math.inf if mean > 0 else 0.0)
    return {"t": t, "p_value": t_sf(t, n - 1) if math.isfinite(t) else 0.0, "mean_logprob_gain": mean,
            "shards": n, "permutations": cfg.permutations, "examples": len(examples), "differences": diffs}


def lm_logprob(lm):
    """log p(text) under a training/lm.py model (sliding window for long texts)."""
    def logprob(text: str) -> float:
        nll, _ = lm.rolling_nll(text)
        return -nll
    return logprob
