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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.artifacts import MANIFEST, ArtifactError
from training.hf import load_model
from training.losses import token_logprobs
from training.model import Transformer
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


@dataclass
class LM:
    model: Transformer
    tokenizer: object               # _SentencePiece or _HuggingFace
    name: str
    batch_size: int = 16

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        return self.model.cfg.max_seq_len

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
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
        """(log p(continuation | context), is greedy) for each (context, continuation)."""
        # one forward per distinct input: the four " A" ... " D" of an MMLU question share theirs
        by_input: dict[tuple, list[tuple[int, list[int], int]]] = {}
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = self._split(context, continuation)
            if not cont:
                raise ValueError(f"request {i}: empty continuation")
            seq = (ctx + cont)[-(self.max_length + 1):]
            # a continuation longer than the window is scored on its last max_length tokens
            by_input.setdefault(tuple(seq[:-1]), []).append((i, seq, min(len(cont), len(seq) - 1)))
        order = sorted(by_input.items(), key=lambda e: -len(e[0]))      # longest first: padding stays small
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(inp) for inp, _ in chunk)
            inputs = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, (inp, _) in enumerate(chunk):
                inputs[row, :len(inp)] = torch.tensor(inp)
            hidden, _ = self.model.hidden_states(inputs.to(self.device))                   # (B, T, D)
            for row, (inp, members) in enumerate(chunk):
                for index, seq, n in members:
                    targets = torch.tensor(seq[-n:])
                    positions = torch.arange(len(seq) - 1 - n, len(seq) - 1)
                    logits = self.model.logits(hidden[row, positions]).float().cpu()                   # (n, V)
                    results[index] = (float(token_logprobs(logits, targets).sum()),
                                      bool((logits.argmax(-1) == targets).all()))
                if progress is not None:
                    progress(len(members))
        return results

    @torch.no_grad()
    def rolling_nll(self, text: str, window: int | None = None, stride: int | None = None,
                    progress=None) -> tuple[float, int]:
        """(Σ NLL in nats, tokens scored) over `text`, every token scored once; progress(new, total) after each
        window."""
        window = min(window or self.max_length, self.max_length)
        stride = stride or window // 2
        ids = self.tokenizer.rolling_prefix + self.encode(text)
        total, scored, done = 0.0, 0, 1                # ids[0], the document-start token, is context only
        while done < len(ids):
            end = min(done + stride, len(ids))
            start = max(0, end - window - 1)
            seq = torch.tensor(ids[start:end], device=self.device)[None]
            nll = -token_logprobs(self.model(seq[:, :-1]).logits[0], seq[0, 1:])           # (T,)
            new = end - done                                                               # score only new tokens
            total += float(nll[-new:].sum())
            scored += new
            done = end
            if progress is not None:
                progress(new, len(ids) - 1)
        return total, scored


def load_lm(spec: str | Path, tokenizer: str | None = None, device: str = "cpu", batch_size: int = 16,
            other_tokenizer: bool = False) -> LM:
    """Our run folder / checkpoint, an HF Llama folder, or a GGUF file, with its tokenizer. Ours must come with the
    tokenizer its run recorded (sha256), unless `other_tokenizer` says to take `tokenizer` whatever it is."""
    path = Path(spec)
    model = load_model(path).to(device).eval()
    if path.suffix == ".gguf":
        from transformers import AutoTokenizer  # heavy, optional ([hf] extra): only for Hugging Face models
        tok = _HuggingFace(AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))
    elif (path / "tokenizer.json").is_file() and (path / "config.json").is_file() and \
            not (path / "tokenizer.model").is_file() and tokenizer is None:
        from transformers import AutoTokenizer  # heavy, optional ([hf] extra): only for Hugging Face models
        tok = _HuggingFace(AutoTokenizer.from_pretrained(str(path)))
    else:
        tok = _SentencePiece(checked_tokenizer(path, tokenizer, other_tokenizer))
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size:,} ids, the model {model.cfg.vocab_size:,}")
    return LM(model=model, tokenizer=tok, name=path.name or str(path), batch_size=batch_size)


def find_tokenizer(path: str | Path) -> Path:
    """The tokenizer a training run used: RUN/config.json names its token folder, which keeps one."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        config = folder / "config.json"
        if config.is_file():
            data = json.loads(config.read_text())
            tokens = data.get("data", {}).get("tokens")
            if tokens and (Path(tokens) / "tokenizer" / "tokenizer.model").is_file():
                return Path(tokens) / "tokenizer"
        if (folder / "tokenizer.model").is_file():
            return folder
    raise FileNotFoundError(f"{path}: cannot find its tokenizer; pass --tokenizer DIR")


def recorded_tokenizer(path: str | Path) -> str | None:
    """The sha256 of the tokenizer a run of ours was trained with, as its manifest (or, for runs from before
    manifests, its token folder's tokens.json) records it; None if nothing records it."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        manifest = folder / MANIFEST
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            if data.get("kind") in ("run", "hf-model") and data.get("provenance", {}).get("tokenizer_sha256"):
                return data["provenance"]["tokenizer_sha256"]
        config = folder / "config.json"
        if config.is_file():
            tokens = json.loads(config.read_text()).get("data", {}).get("tokens")
            summary = Path(tokens) / "tokens.json" if tokens else None
            if summary is not None and summary.is_file():
                return json.loads(summary.read_text()).get("tokenizer_sha256")
    return None


def checked_tokenizer(path: str | Path, tokenizer: str | None = None, other: bool = False) -> Tokenizer:
    """The tokenizer for our model at `path` (`tokenizer`, else the one its run used), refused if its sha256 is
    not the one the run recorded — another tokenizer of the same size loads without error and scores nonsense."""
    chosen = Tokenizer(tokenizer or str(find_tokenizer(path)))
    expected = recorded_tokenizer(path)
    if expected and chosen.sha256 != expected and not other:
        raise ArtifactError(f"{path} was trained with the tokenizer of sha256 {expected[:12]}…, but "
                            f"{tokenizer or find_tokenizer(path)} holds {chosen.sha256[:12]}…: give the model's "
                            f"own tokenizer, or --other-tokenizer to use this one anyway")
    return chosen


def bits_per_byte(nll: float, nbytes: int) -> float:
    return nll / max(1, nbytes) / float(np.log(2))
