"""A language model to evaluate: our Transformer with its tokenizer, whichever way it was stored.

`load_lm(spec)` takes one of our run folders or checkpoints (the tokenizer is the one its token folder kept,
or `tokenizer=`), a Hugging Face Llama folder (its tokenizer through transformers), or a GGUF file (its
embedded tokenizer). Scoring follows lm-evaluation-harness:

- `loglikelihood(context, continuation)`: the continuation's tokens are those of `context + continuation`
  past the context's (so a word split differently at the boundary is scored as the model would see it);
  trailing spaces of the context move to the continuation; inputs longer than the model's context keep their
  end. Returns (sum of log-probabilities, whether every continuation token is the greedy choice).
- `rolling_nll(text, window, stride)`: sliding-window NLL where each token is scored once, with up to
  `window - stride` tokens of left context (the HF perplexity recipe).
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.artifacts import MANIFEST, ArtifactError
from training.files import read_json_object
from training.hf import imported, load_hf_tokenizer, load_model
from training.losses import token_logprobs
from training.model import KVCache, Transformer
from training.tokenizer import Tokenizer


class _SentencePiece:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.prefix = [tokenizer.eos_id]        # our documents follow an EOS in training: score them after one
        self.rolling_prefix = self.prefix
        self.vocab_size = tokenizer.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    @property
    def eos_id(self) -> int:
        return self.tok.eos_id


class _HuggingFace:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        bos = tokenizer.bos_token_id
        self.prefix = [bos] if bos is not None and getattr(tokenizer, "add_bos_token", False) else []
        # whole texts start after BOS (or EOS where there is none), as the harness's prefix token
        start = bos if bos is not None else tokenizer.eos_token_id
        self.rolling_prefix = [start] if start is not None else []
        self.vocab_size = len(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    @property
    def eos_id(self) -> int | None:
        return self.tok.eos_token_id


_HEAD_ROWS = 512         # positions per run of the output head: its weight read once, the logits ~100 MB
_CACHE_TOKENS = 4096     # context tokens whose keys and values are held at once (SmolLM2-135M: 46 KB each)
_KEY_TOKENS = 8192       # rows × (context + continuation) of one batch of continuations
_BATCH_COST = 16         # what one more batch costs, in tokens' worth of compute (an estimate, not measured)
_MIN_SHARED = 8          # tokens a prefix of several contexts must have to run once for all of them


class _KeysValues:
    """Keys and values of tokens already run, per layer packed token by token ((n, K, S) each), so a later
    batch can gather any rows' earlier tokens into a cache."""

    def __init__(self, n_layers: int):
        self.keys: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        self.values: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
        self.size = 0

    def add(self, cache: KVCache, past: int, lengths: list[int]) -> list[int]:
        """Keep each row's first `lengths[row]` tokens after the `past` gathered ones; returns where each row's
        tokens start."""
        real = torch.zeros(len(lengths), cache.keys[0].shape[2] - past, dtype=torch.bool)
        for row, n in enumerate(lengths):
            real[row, :n] = True
        real = real.to(cache.keys[0].device)
        for layer in range(len(self.keys)):                    # (R, K, past+T, S) -> the real new (n, K, S)
            self.keys[layer].append(cache.keys[layer][:, :, past:].transpose(1, 2)[real])
            self.values[layer].append(cache.values[layer][:, :, past:].transpose(1, 2)[real])
        starts = list(itertools.accumulate(lengths[:-1], initial=self.size))
        self.size += sum(lengths)
        return starts

    def gather(self, slots: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(R, W) slots -> per layer keys and values (R, K, W, S)."""
        for group in (self.keys, self.values):
            for layer, parts in enumerate(group):
                if len(parts) > 1:
                    group[layer] = [torch.cat(parts)]
        return ([k[0][slots].transpose(1, 2) for k in self.keys],
                [v[0][slots].transpose(1, 2) for v in self.values])


def shared_prefixes(contexts: list[tuple]) -> list[int]:
    """For contexts in lexicographic order: how many leading tokens each shares with its run of neighbours (0 if
    none). A run keeps going while the prefix all its members share stays at least `_MIN_SHARED` tokens and,
    past its first two members, at least half what it was (five-shot examples are not cut down to the
    instructions every subject shares); every member keeps one token of its own (its last position predicts
    the answer)."""
    shared = [0] * len(contexts)
    start = 0
    while start < len(contexts):
        end, length = start + 1, len(contexts[start]) - 1
        while end < len(contexts):
            a, b = contexts[end - 1], contexts[end]
            common = next((i for i, (x, y) in enumerate(zip(a[:length], b)) if x != y), min(length, len(b)))
            common = min(common, len(b) - 1)
            if common < _MIN_SHARED or (end > start + 1 and common < length // 2):
                break
            length, end = common, end + 1
        if end - start > 1:
            shared[start:end] = [length] * (end - start)
        start = end
    return shared


def cheapest_batches(lengths: list[int], most: int, keys: list[int] | None = None) -> list[tuple[int, int]]:
    """[start, end) batches of `lengths` (sorted longest first) of at most `most` rows, cut where they cost the
    least: a batch costs its rows × its longest length (padding included) plus `_BATCH_COST`, so where lengths
    fall fast batches are short and where they are even batches are full. `keys`: each row's context length;
    a batch's rows × (longest context + longest length) stays under `_KEY_TOKENS` (or is one row)."""
    n = len(lengths)
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        widest = 0
        for start in range(end - 1, max(0, end - most) - 1, -1):
            if keys is not None:
                widest = max(widest, keys[start])
                if start < end - 1 and (end - start) * (widest + lengths[start]) > _KEY_TOKENS:
                    break
            cost = best[start] + _BATCH_COST + (end - start) * lengths[start]
            if cost < best[end]:
                best[end], cut[end] = cost, start
    batches, end = [], n
    while end:
        batches.append((cut[end], end))
        end = cut[end]
    return batches[::-1]


@dataclass
class LM:
    model: Transformer
    tokenizer: object               # _SentencePiece or _HuggingFace
    name: str
    batch_size: int = 16
    prefix_cache: bool = True       # each context once, its choices from its keys and values (see loglikelihood)
    dtype: str = "float32"          # bfloat16: matmuls under autocast (faster where the CPU has bf16 units)

    def precision(self):
        """The autocast context the model runs under: none for float32 (the harness's numbers), bf16 autocast
        for bfloat16 (log-probabilities are still taken in float32)."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        if self.dtype != "bfloat16":
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_seq_len

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """The context's and the continuation's token ids as `loglikelihood` scores them."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:                                   # harness: "Answer: " + "A" is scored as "Answer:" + " A"
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        if whole[:len(ctx)] != ctx:                  # the boundary merged: fall back to separate encodings
            return self.tokenizer.prefix + ctx, self.encode(continuation)
        return self.tokenizer.prefix + ctx, whole[len(ctx):]

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]], progress=None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is greedy) for each (context, continuation). With `prefix_cache`
        (the default) each distinct context runs once and its choices continue from its keys and values."""
        splits = []
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = self.tokens(context, continuation)
            if not cont:
                raise ValueError(f"request {i}: empty continuation")
            splits.append((ctx, cont))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups = self._worth_caching(splits) if self.prefix_cache else []
        with self.precision():
            self._score_from_cache(groups, results, progress)
            cached = {i for _, members in groups for i, _ in members}
            self._score_whole([(i, *splits[i]) for i in range(len(splits)) if i not in cached], results, progress)
        return results

    def _worth_caching(self, splits: list[tuple[list[int], list[int]]]) -> list[tuple[tuple, list]]:
        """(context, [(request index, continuation)...]) for contexts shared by several continuations (every
        multiple-choice item, few-shot prompts) that fit the window: each such context then runs once instead of
        once per choice."""
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}
        for i, (ctx, cont) in enumerate(splits):
            if len(ctx) + len(cont) <= self.max_length + 1:
                groups.setdefault(tuple(ctx), []).append((i, cont))
        return [(ctx, members) for ctx, members in groups.items() if len(members) > 1]

    def _score(self, scored: list[tuple[int, torch.Tensor, list[int]]], results: list) -> None:
        """(request index, hidden (n, D) at the positions that predict `targets`, targets) → results[index] =
        (Σ log p, all greedy). The head runs on many requests' positions at once, so its (V, D) weight is read
        once per `_HEAD_ROWS` positions rather than once per request (on a CPU that read is most of its cost)."""
        start = 0
        while start < len(scored):
            end, rows = start, 0
            while end < len(scored) and (end == start or rows + len(scored[end][2]) <= _HEAD_ROWS):
                rows += len(scored[end][2])
                end += 1
            chunk = scored[start:end]
            logits = self.model.logits(torch.cat([h for _, h, _ in chunk])).float().cpu()          # (rows, V)
            targets = torch.tensor([t for _, _, ts in chunk for t in ts])
            logprobs, greedy = token_logprobs(logits, targets), logits.argmax(-1) == targets
            at = 0
            for index, _, ts in chunk:
                results[index] = (float(logprobs[at:at + len(ts)].sum()), bool(greedy[at:at + len(ts)].all()))
                at += len(ts)
            start = end

    def _score_whole(self, requests: list[tuple[int, list[int], list[int]]], results: list, progress) -> None:
        """Each distinct input in one forward, batched longest first (the reference path; also for inputs longer
        than the context window, which keep their end)."""
        by_input: dict[tuple, list[tuple[int, list[int], int]]] = {}
        for i, ctx, cont in requests:
            seq = (ctx + cont)[-(self.max_length + 1):]
            # a continuation longer than the window is scored on its last max_length tokens
            by_input.setdefault(tuple(seq[:-1]), []).append((i, seq, min(len(cont), len(seq) - 1)))
        order = sorted(by_input.items(), key=lambda e: -len(e[0]))      # longest first: padding stays small
        for start, end in cheapest_batches([len(inp) for inp, _ in order], self.batch_size):
            chunk = order[start:end]
            width = max(len(inp) for inp, _ in chunk)
            inputs = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, (inp, _) in enumerate(chunk):
                inputs[row, :len(inp)] = torch.tensor(inp)
            hidden, _ = self.model.hidden_states(inputs.to(self.device))                   # (B, T, D)
            self._score([(index, hidden[row, len(seq) - 1 - n:len(seq) - 1], seq[-n:])
                         for row, (_, members) in enumerate(chunk) for index, seq, n in members], results)
            if progress is not None:
                progress(sum(len(members) for _, members in chunk))

    def _score_from_cache(self, groups: list[tuple[tuple, list]], results: list, progress) -> None:
        """Requests grouped by context, in lexicographic order (contexts that share a prefix are neighbours), in
        slices of about `_CACHE_TOKENS` context tokens whose keys and values are held until the slice is done."""
        order = sorted(groups, key=lambda g: g[0])
        prefix_of = shared_prefixes([ctx for ctx, _ in order])
        start = 0
        while start < len(order):
            end, tokens = start, 0
            while end < len(order):
                ctx, n = order[end][0], prefix_of[end]
                held = end > start and n and prefix_of[end - 1] == n and order[end - 1][0][:n] == ctx[:n]
                more = len(ctx) - n if held else len(ctx)       # a shared prefix is held once
                if end > start and tokens + more > _CACHE_TOKENS:
                    break
                tokens, end = tokens + more, end + 1
            self._run_cached_slice(order[start:end], prefix_of[start:end], results, progress)
            start = end

    def _run_cached_slice(self, groups: list[tuple[tuple, list]], prefix_of: list[int], results: list,
                          progress) -> None:
        """Three passes, each cut into batches by `cheapest_batches` (longest first, padding masked), each
        continuing from keys and values kept, packed token by token, in a `_KeysValues`:
        1. the prefixes neighbouring contexts share (`prefix_of`, from `shared_prefixes`: few-shot examples,
           a task's instructions), once each;
        2. every context past its prefix (at most `batch_size` a batch); the last context position predicts
           each continuation's first token;
        3. every continuation past its first token (up to 4 × `batch_size` a batch)."""
        store = _KeysValues(len(self.model.layers))
        contexts = [ctx for ctx, _ in groups]
        prefixes = sorted({contexts[g][:n] for g, n in enumerate(prefix_of) if n})
        prefix_slots = dict(zip(prefixes, self._run_after([(list(p), []) for p in prefixes], store,
                                                            self.batch_size)[1]))
        rests = [(list(ctx[n:]), prefix_slots.get(ctx[:n], [])) for ctx, n in zip(contexts, prefix_of)]
        last, context_slots = self._run_after(rests, store, self.batch_size, last_only=True)
        members = [(g, i, cont) for g, (_, group) in enumerate(groups) for i, cont in group]
        single = [(i, last[g][None], cont) for g, i, cont in members if len(cont) == 1]
        self._score(single, results)
        if progress is not None and single:
            progress(len(single))
        multi = [(g, i, cont) for g, i, cont in members if len(cont) > 1]
        rows = [(cont[:-1], prefix_slots.get(contexts[g][:prefix_of[g]], []) + context_slots[g])
                for g, _, cont in multi]

        def score(done: list[int], hidden: torch.Tensor) -> None:
            self._score([(multi[k][1], torch.cat([last[multi[k][0]][None], hidden[r, :len(multi[k][2]) - 1]]),
                          multi[k][2]) for r, k in enumerate(done)], results)
            if progress is not None:
                progress(len(done))
        self._run_after(rows, store, 4 * self.batch_size, then=score, keep=False)

    def _run_after(self, rows: list[tuple[list[int], list[int]]], store: "_KeysValues", most: int,
                   last_only: bool = False, then=None, keep: bool = True):
        """Runs each row's tokens after the keys and values at its slots in `store` (its earlier tokens, in
        order), at the positions that follow them, in batches of similar lengths (longest first). With `keep`,
        keeps the new tokens' keys and values in `store`. Returns (each row's last hidden state (R, D) with
        `last_only`, else None; each row's new slots). `then(rows done, hidden (R, T, D))` after each batch."""
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][0]))
        new_slots: list[list[int]] = [[] for _ in rows]
        last = None
        for start, end in cheapest_batches([len(rows[r][0]) for r in order], most,
                                           keys=[len(rows[r][1]) for r in order]):
            batch = order[start:end]
            tokens, width = len(rows[batch[0]][0]), max(len(rows[r][1]) for r in batch)
            inputs = torch.zeros(len(batch), tokens, dtype=torch.long)
            mask = torch.zeros(len(batch), width + tokens, dtype=torch.long)
            positions = torch.zeros(len(batch), tokens, dtype=torch.long)
            slots = torch.zeros(len(batch), width, dtype=torch.long)
            for b, r in enumerate(batch):
                ids, past = rows[r]
                inputs[b, :len(ids)] = torch.tensor(ids)
                mask[b, :len(past)] = 1
                mask[b, width:width + len(ids)] = 1
                positions[b] = len(past) + torch.arange(tokens)
                if past:               # padding slots repeat the last one; the mask hides them
                    slots[b] = torch.tensor(past + past[-1:] * (width - len(past)))
            cache = KVCache(len(self.model.layers))
            if width:
                cache.keys, cache.values = store.gather(slots.to(self.device))
            hidden, _ = self.model.hidden_states(inputs.to(self.device), cache, mask.to(self.device),
                                                 positions.clamp(max=self.max_length - 1).to(self.device))
            lengths = [len(rows[r][0]) for r in batch]
            starts = store.add(cache, width, lengths) if keep else [0] * len(batch)
            for b, r, at in zip(range(len(batch)), batch, starts):
                new_slots[r] = list(range(at, at + lengths[b])) if keep else []
                if last_only:
                    if last is None:                          # on the model's device, in its dtype
                        last = hidden.new_zeros((len(rows), hidden.shape[-1]))
                    last[r] = hidden[b, lengths[b] - 1]
            if then is not None:
                then(batch, hidden)
        return last, new_slots

    @torch.no_grad()
    def rolling_nll(self, text: str, window: int | None = None, stride: int | None = None,
                    progress=None) -> tuple[float, int]:
        """(Σ NLL in nats, tokens scored) over `text`, every token scored once; progress(new, total) after each
        window."""
        window = min(window or self.max_length, self.max_length)
        stride = stride or window // 2
        if stride > window:
            raise ValueError(f"--stride {stride} is more than the window of {window} tokens: the tokens between "
                             f"windows would go unscored yet counted")
        ids = self.tokenizer.rolling_prefix + self.encode(text)
        total, scored, done = 0.0, 0, 1                # ids[0], the document-start token, is context only
        while done < len(ids):
            end = min(done + stride, len(ids))
            start = max(0, end - window - 1)
            seq = torch.tensor(ids[start:end], device=self.device)[None]
            with self.precision():
                logits = self.model(seq[:, :-1]).logits[0]
            nll = -token_logprobs(logits, seq[0, 1:])                                      # (T,)
            new = end - done                                                               # score only new tokens
            total += float(nll[-new:].sum())
            scored += new
            done = end
            if progress is not None:
                progress(new, len(ids) - 1)
        return total, scored


def load_lm(spec: str | Path, tokenizer: str | None = None, device: str = "cpu", batch_size: int = 16,
            other_tokenizer: bool | None = None) -> LM:
    """Our run folder / checkpoint, an HF Llama folder, or a GGUF file, with its tokenizer. Ours must come with the
    tokenizer its run recorded (sha256), unless `other_tokenizer` says to take `tokenizer` whatever it is (None:
    the command has no --other-tokenizer, and its refusal does not offer one)."""
    path = Path(spec)
    model = load_model(path).to(device).eval()
    hf = imported(path)
    if hf is not None and (hf.suffix == ".gguf" or (hf / "tokenizer.json").is_file()
                           and not (hf / "tokenizer.model").is_file() and tokenizer is None):
        tok = _HuggingFace(load_hf_tokenizer(hf))
    else:
        tok = _SentencePiece(checked_tokenizer(hf or path, tokenizer, other_tokenizer))
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size:,} ids, the model {model.cfg.vocab_size:,}")
    if hf is None and tok.vocab_size < model.cfg.vocab_size:
        # our models have exactly their tokenizer's pieces; a smaller one cannot decode what the model writes
        raise ValueError(f"tokenizer has {tok.vocab_size:,} pieces, the model {model.cfg.vocab_size:,} ids: "
                         f"ids from {tok.vocab_size:,} on could not be read or written")
    return LM(model=model, tokenizer=tok, name=path.name or str(path), batch_size=batch_size)


def find_tokenizer(path: str | Path) -> Path:
    """The tokenizer a training run used: RUN/config.json names its token folder, which keeps one."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        config = folder / "config.json"
        if config.is_file():
            tokens = (read_json_object(config).get("data") or {}).get("tokens")
            if isinstance(tokens, str) and tokens and (Path(tokens) / "tokenizer" / "tokenizer.model").is_file():
                return Path(tokens) / "tokenizer"
        if (folder / "tokenizer.model").is_file():
            return folder
    raise FileNotFoundError(f"{path}: cannot find its tokenizer (no tokenizer.model in it or above it, and no "
                            f"config.json naming a token folder that holds one)")


def recorded_tokenizer(path: str | Path) -> str | None:
    """The sha256 of the tokenizer a run of ours was trained with, as its manifest (or, for runs from before
    manifests, its token folder's tokens.json) records it; None if nothing records it."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        manifest = folder / MANIFEST
        if manifest.is_file():
            data = read_json_object(manifest)
            if data.get("kind") in ("run", "hf-model") and data.get("provenance", {}).get("tokenizer_sha256"):
                return data["provenance"]["tokenizer_sha256"]
        config = folder / "config.json"
        if config.is_file():
            tokens = (read_json_object(config).get("data") or {}).get("tokens")
            summary = Path(tokens) / "tokens.json" if isinstance(tokens, str) and tokens else None
            if summary is not None and summary.is_file():
                return read_json_object(summary).get("tokenizer_sha256")
    return None


def checked_tokenizer(path: str | Path, tokenizer: str | None = None, other: bool | None = None) -> Tokenizer:
    """The tokenizer for our model at `path` (`tokenizer`, else the one its run used), refused if its sha256 is
    not the one the run recorded — another tokenizer of the same size loads without error and scores nonsense.
    `other`: the command's --other-tokenizer (True: use it anyway); None where the command has no such option."""
    chosen = Tokenizer(tokenizer or str(find_tokenizer(path)))
    expected = recorded_tokenizer(path)
    if expected and chosen.sha256 != expected and not other:
        raise ArtifactError(f"{path} was trained with the tokenizer of sha256 {expected[:12]}…, but "
                            f"{tokenizer or find_tokenizer(path)} holds {chosen.sha256[:12]}…: give the model's "
                            f"own tokenizer" + ("" if other is None else ", or --other-tokenizer to use this one "
                                                                        "anyway"))
    return chosen


def bits_per_byte(nll: float, nbytes: int) -> float:
    return nll / max(1, nbytes) / float(np.log(2))
