"""Batches of whole examples (conversations, pairs) for the loop, in passes over the data.

Each pass visits every example once, in a permutation seeded by (seed, pass) (or in the file's order, `shuffle`
off). Micro-batch `index` of `step`
takes the `rows` consecutive slots starting at (step · per_step + index) · rows, `per_step` coming from the loop
(grad_accum × processes): a pure function of where training is, like the pretraining batches, so a resumed run
and a DDP run draw exactly what one uninterrupted process would.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


class EpochBatches:
    def __init__(self, examples: Sequence, rows: int, collate: Callable[[list], dict], seed: int = 0,
                 shuffle: bool = True):
        if not examples:
            raise ValueError("no training examples")
        self.examples, self.rows, self.collate, self.seed, self.shuffle = examples, rows, collate, seed, shuffle
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:                 # the file's order every pass (a sequential sampler)
            return np.arange(len(self.examples))
        if epoch not in self._orders:
            if len(self._orders) > 4:
                self._orders.clear()
            self._orders[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
        return self._orders[epoch]

    def batch(self, step: int, index: int, per_step: int = 1) -> dict:
        n = len(self.examples)
        start = (step * per_step + index) * self.rows
        picks = []
        for slot in range(start, start + self.rows):
            epoch, position = divmod(slot, n)
            picks.append(self.examples[self.order(epoch)[position]])
        return self.collate(picks)
