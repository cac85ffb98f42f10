"""Pretraining data: token shards memory-mapped per domain, sampled to domain weights, deterministic.

A token folder is what `refinery tokenize` writes: `<domain>/*.bin` shards (training/shards.py) and a copy of
the tokenizer in `tokenizer/`. Each domain's shards are read as one token stream; its last `val_fraction`
(cut at a document boundary) is held out for validation.

Batches are drawn like nanoGPT's: each row a window of `seq_len + 1` tokens at a random offset of a domain
chosen by weight. The random generator is seeded by (seed, step, micro-batch index), so a batch is a pure
function of where training is: resuming at step k draws exactly what an uninterrupted run would, and under
DDP rank r of W takes micro-batch index `micro · W + r`, the same rows one process would take with W times
the gradient accumulation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.artifacts import MANIFEST, ArtifactError, check, read_manifest
from training.config import MAX_CONTEXT, at_least, at_most
from training.shards import HEADER_BYTES, open_tokens, read_header


@dataclass(frozen=True)
class DataConfig:
    tokens: str = "out/tokens"             # a folder written by `refinery tokenize`
    seq_len: int = 256                     # tokens per row (the model sees seq_len, predicts seq_len)
    weights: dict[str, float] = field(default_factory=dict)   # domain -> weight; empty: each domain's share
    val_fraction: float = 0.02             # held out from the end of each domain, at a document boundary
    val_tokens: int = 131_072              # at most this many held-out tokens per evaluation
    decay_tokens: str = ""                 # WSD: token folder for the decay phase (e.g. a top-quality curation)
    decay_weights: dict[str, float] = field(default_factory=dict)   # WSD: domain weights for the decay phase
    seed: int = 0

    def __post_init__(self):
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        at_most(self, MAX_CONTEXT, "seq_len")
        at_least(self, 0, "val_tokens", "seed")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if any(w < 0 for w in {**self.weights, **self.decay_weights}.values()):
            raise ValueError("domain weights must be >= 0")


class DomainStream:
    """One domain's shards read as a single token sequence (memory-mapped, nothing loaded up front)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.arrays, sizes, self.sha256 = paths, [], [], set()
        for path in paths:
            header, tokens = open_tokens(path)
            self.arrays.append(tokens)
            sizes.append(header.tokens)
            self.sha256.add(header.tokenizer_sha256)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, n: int) -> np.ndarray:
        """Tokens [start, start + n) as int64, across shard boundaries."""
        out, pos = [], start
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while n > 0:
            local = pos - self.offsets[shard]
            piece = self.arrays[shard][local:local + n]
            out.append(piece)
            n -= len(piece)
            pos += len(piece)
            shard += 1
        return np.concatenate(out).astype(np.int64)


def _split_point(stream: DomainStream, fraction: float, eos_id: int) -> int:
    """Where the held-out tail starts: just after the last EOS before len · (1 - fraction)."""
    if fraction == 0:
        return len(stream)
    target = int(len(stream) * (1 - fraction))
    look = min(target, 1 << 20)
    chunk = stream.read(target - look, look)
    ends = np.flatnonzero(chunk == eos_id)
    return target - look + int(ends[-1]) + 1 if len(ends) else target


def listed_shards(directory: Path) -> list[str]:
    """The shards of a token folder as its manifest lists them (each checked: size, sha256, ids below the
    vocabulary), or, for folders from before manifests, as its tokens.json lists them: never what a glob finds,
    so a shard left by an earlier run is not read."""
    if (directory / MANIFEST).is_file():
        manifest = read_manifest(directory, "tokens")
        shards = [rel for rel in manifest["files"] if rel.endswith(".bin")]
        check(directory, manifest, [rel for rel in manifest["files"] if rel.endswith((".bin", ".idx.parquet"))
                                    or rel.startswith("tokenizer/")])
        vocab = manifest["provenance"].get("vocab_size")
        for rel in shards:
            header = read_header(directory / rel)
            if vocab and header.tokens:
                largest = int(np.memmap(directory / rel, dtype=header.dtype, mode="r", offset=HEADER_BYTES,
                                        shape=(header.tokens,)).max())
                if largest >= vocab:
                    raise ArtifactError(f"{directory / rel}: token id {largest:,} is not below the vocabulary "
                                        f"({vocab:,}): not this tokenizer's shard")
    elif (directory / "tokens.json").is_file():
        shards = json.loads((directory / "tokens.json").read_text()).get("shards", [])
    else:
        raise FileNotFoundError(f"{directory}: not a token folder (no {MANIFEST} or tokens.json from "
                                f"`refinery tokenize`)")
    if not shards:
        raise FileNotFoundError(f"{directory}: no token shards listed")
    return shards


class TokenData:
    """The domains of one token folder, split into train and held-out, sampled to weights."""

    def __init__(self, directory: str | Path, seq_len: int, weights: dict[str, float] | None = None,
                 val_fraction: float = 0.02, seed: int = 0, eos_id: int = 3):
        directory = Path(directory)
        by_domain: dict[str, list[Path]] = {}
        for rel in listed_shards(directory):
            by_domain.setdefault(rel.split("/")[0], []).append(directory / rel)
        domains = sorted(by_domain)
        self.directory, self.seq_len, self.seed = directory, seq_len, seed
        self.streams = {d: DomainStream(sorted(by_domain[d])) for d in domains}
        hashes = set().union(*(s.sha256 for s in self.streams.values()))
        if len(hashes) > 1:
            raise ValueError(f"{directory}: shards made by {len(hashes)} different tokenizers")
        self.tokenizer_sha256 = hashes.pop()
        self.split = {d: _split_point(s, val_fraction, eos_id) for d, s in self.streams.items()}
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(domains))
        if unknown:
            raise ValueError(f"weights name domains with no tokens in {directory}: {', '.join(unknown)} "
                             f"(there: {', '.join(domains)})")
        if not weights:      # each domain's natural share
            weights = {d: float(self.split[d]) for d in domains}
        total = sum(weights.values())
        if total <= 0:
            raise ValueError("domain weights sum to 0")
        self.weights = {d: weights.get(d, 0.0) / total for d in domains}
        for d, w in self.weights.items():
            if w > 0 and self.split[d] < seq_len + 1:
                raise ValueError(f"domain {d}: {self.split[d]:,} training tokens, fewer than one window of "
                                 f"{seq_len + 1}; give it weight 0 or use a shorter seq_len")
        self._names = [d for d in domains if self.weights[d] > 0]
        self._probs = np.array([self.weights[d] for d in self._names])

    @property
    def train_tokens(self) -> int:
        return sum(self.split[d] for d in self._names)

    def batch(self, step: int, index: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (rows, seq_len) int64: a pure function of (seed, step, index)."""
        rng = np.random.default_rng([self.seed, step, index])
        picks = rng.choice(len(self._names), size=rows, p=self._probs)
        windows = np.empty((rows, self.seq_len + 1), dtype=np.int64)
        for row, pick in enumerate(picks):
            name = self._names[pick]
            start = int(rng.integers(0, self.split[name] - self.seq_len))
            windows[row] = self.streams[name].read(start, self.seq_len + 1)
        return windows[:, :-1], windows[:, 1:]

    def val_windows(self, max_tokens: int) -> list[tuple[str, np.ndarray]]:
        """Non-overlapping (domain, window of seq_len + 1) from the held-out tails: every token after a window's
        first is predicted once. Each domain gets a share of `max_tokens` by weight (at least one window)."""
        out = []
        for name in self._names:
            start, end = self.split[name], len(self.streams[name])
            available = (end - start - 1) // self.seq_len
            if available < 1:
                continue
            wanted = max(1, int(max_tokens * self.weights[name]) // self.seq_len)
            picks = np.linspace(0, available - 1, num=min(wanted, available)).round().astype(int)
            for i in np.unique(picks):
                out.append((name, self.streams[name].read(start + int(i) * self.seq_len, self.seq_len + 1)))
        return out

    def unigram_counts(self, max_tokens: int = 50_000_000) -> np.ndarray:
        """Token counts over (at most max_tokens of) the training part, each domain in proportion to its weight."""
        counts = None
        for name in self._names:
            n = min(self.split[name], max(1, int(max_tokens * self.weights[name])))
            c = np.bincount(self.streams[name].read(0, n))
            counts = c if counts is None else _add(counts, c)
        return counts


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    a = a.copy()
    a[:len(b)] += b
    return a


class PretrainBatches:
    """What the training loop draws from: the main mix, then (WSD) the decay mix from `decay_start` on."""

    def __init__(self, cfg: DataConfig, rows: int, decay_start: int | None = None, eos_id: int = 3):
        self.cfg, self.rows = cfg, rows
        self.main = TokenData(cfg.tokens, cfg.seq_len, cfg.weights, cfg.val_fraction, cfg.seed, eos_id)
        self.decay, self.decay_start = None, decay_start
        if decay_start is not None and (cfg.decay_tokens or cfg.decay_weights):
            self.decay = TokenData(cfg.decay_tokens or cfg.tokens, cfg.seq_len, cfg.decay_weights or cfg.weights,
                                   cfg.val_fraction, cfg.seed, eos_id)
            if self.decay.tokenizer_sha256 != self.main.tokenizer_sha256:
                raise ValueError(f"{cfg.decay_tokens}: made by another tokenizer than {cfg.tokens}")

    def batch(self, step: int, index: int, per_step: int = 1) -> dict[str, np.ndarray]:
        """Rows seeded by (seed, step, index): `per_step` is not needed (see the module docstring)."""
        data = self.decay if self.decay is not None and step >= self.decay_start else self.main
        inputs, targets = data.batch(step, index, self.rows)
        return {"input": inputs, "target": targets}
