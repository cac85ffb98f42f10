"""The tokenizer: sentencepiece BPE trained on a bounded sample of the curated text.

```
refinery tokenizer train --input out/sample/data --vocab-size 8000 --output out/tokenizer
```

Choices, each for lossless round trips and for what comes later:
- byte fallback: a character the vocabulary lacks becomes its UTF-8 bytes, so nothing is ever unknown;
- identity normalisation, no dummy prefix, no whitespace squeezing: decode(encode(text)) == text, spaces and
  indentation of code included (whitespace-only pieces are allowed);
- split digits: every digit its own piece (numbers tokenise the same whatever their length, as in LLaMA);
- reserved ids: 0 <pad>, 1 <unk> (never produced), 2 <s>, 3 </s>, then the chat role tokens for post-training.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from training.artifacts import ArtifactError, prepare_output, refuse_own_input, write_manifest
from training.files import parquet_texts, write_atomic

ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|sep|>")
MODEL_FILE, CONFIG_FILE = "tokenizer.model", "tokenizer.json"


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 16_000
    sample_bytes: int = 200_000_000    # at most this much text is read to train on (a bounded sample)
    character_coverage: float = 0.9995  # rarer characters are left to byte fallback
    seed: int = 0
    max_piece_length: int = 16

    def __post_init__(self):
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials), got {self.vocab_size}")


def read_documents(inputs: list[str]):
    """Texts of curated datasets: folders or files of Parquet with a `text` column."""
    for spec in inputs:
        yield from (t for t, in parquet_texts(spec) if t)


def train_tokenizer(inputs: list[str], output_dir: str, cfg: TokenizerConfig = TokenizerConfig(), log=print,
                    overwrite: bool = False) -> dict:
    """Train on a sample of the documents of `inputs`; write tokenizer.model, tokenizer.json and a manifest."""
    started = time.monotonic()
    refuse_own_input(output_dir, inputs)
    documents = list(read_documents(inputs))      # a bad input fails before the output folder is made
    if not documents:
        raise ValueError(f"no text to train on in {', '.join(inputs)}")
    out = prepare_output(output_dir, "tokenizer", inputs, overwrite=overwrite)
    random.Random(cfg.seed).shuffle(documents)
    used_bytes = used_docs = 0
    lines = []                      # sentencepiece trains on lines: one line per paragraph
    for text in documents:
        if used_bytes >= cfg.sample_bytes:
            break
        lines += [line for line in text.split("\n") if line.strip()]
        used_bytes += len(text.encode("utf-8", "surrogatepass"))
        used_docs += 1
    log(f"[tokenizer] training BPE ({cfg.vocab_size:,} pieces) on {used_docs:,} documents, "
        f"{used_bytes / 1e6:.1f} MB")
    # From an iterator into memory: the model then records no input or output path, so the same text and
    # settings give the same bytes (and sha256) wherever they are trained.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=cfg.vocab_size,
        byte_fallback=True, split_digits=True, normalization_rule_name="identity", add_dummy_prefix=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_by_whitespace=True,
        character_coverage=cfg.character_coverage, max_sentencepiece_length=cfg.max_piece_length,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3, user_defined_symbols=list(ROLE_TOKENS),
        input_sentence_size=2_000_000, shuffle_input_sentence=True, seed_sentencepiece_size=1_000_000,
        max_sentence_length=1 << 16, num_threads=2, minloglevel=2)
    model_bytes = model.getvalue()
    write_atomic(out / MODEL_FILE, model_bytes)
    info = {"config": asdict(cfg), "inputs": inputs, "documents": used_docs, "bytes": used_bytes,
            "sha256": hashlib.sha256(model_bytes).hexdigest(), "wall_s": round(time.monotonic() - started, 1)}
    write_atomic(out / CONFIG_FILE, json.dumps(info, indent=1))
    write_manifest(out, "tokenizer", [MODEL_FILE, CONFIG_FILE], provenance={"inputs": inputs}, config=asdict(cfg))
    return info


def _recorded_sha256(card: Path) -> str | None:
    try:
        return json.loads(card.read_text()).get("sha256") if card.is_file() else None
    except ValueError:
        raise ArtifactError(f"{card}: not readable JSON") from None


class Tokenizer:
    """Encode and decode with a trained model; the special and role token ids; pair encoding."""

    def __init__(self, directory: str):
        path = Path(directory) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer at {directory} (expected {MODEL_FILE}; "
                                    f"`refinery tokenizer train` writes one)")
        data = path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        card = Path(directory) / CONFIG_FILE
        recorded = _recorded_sha256(card)
        if recorded and recorded != self.sha256:
            raise ArtifactError(f"{path}: sha256 differs from the one {card} recorded when it was trained "
                                f"(changed or corrupt)")
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=data)
        except Exception as e:          # sentencepiece raises RuntimeError / OSError on a damaged model
            raise ArtifactError(f"{path}: not a sentencepiece model ({type(e).__name__}: {str(e)[:100]})") from None
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
        self.roles = {token: self.sp.piece_to_id(token) for token in ROLE_TOKENS}
        if self.sp.get_piece_size() <= max(self.eos_id, *self.roles.values()) or \
                self.unk_id in self.roles.values():
            raise ArtifactError(f"{path}: not a tokenizer `refinery tokenizer train` made (no role tokens)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode(ids)

    def token_bytes(self):
        """UTF-8 bytes each id decodes to (numpy int64, vocab_size): byte pieces 1, control tokens 0. Because
        decoding is lossless, summing it over a token sequence gives the byte length of its text."""
        sizes = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if self.sp.is_control(i) or self.sp.is_unknown(i):
                continue
            if self.sp.is_byte(i):
                sizes[i] = 1
            else:
                sizes[i] = len(self.sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        return sizes

    def encode_pair(self, first: str, second: str, max_length: int = 512) -> dict[str, list[int]]:
        """`<s> first <|sep|> second </s>` with segment ids 0/1 and an attention mask; the second text is cut
        first when the pair is too long (a question stays whole, its context is shortened)."""
        a, b = self.encode(first), self.encode(second)
        room = max_length - 3
        if room < 1:
            raise ValueError(f"max_length must be > 3, got {max_length}")
        b = b[:max(0, room - len(a))]
        a = a[:room - len(b)]
        ids = [self.bos_id, *a, self.roles["<|sep|>"], *b, self.eos_id]
        segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        return {"input_ids": ids, "segment_ids": segments, "attention_mask": [1] * len(ids)}

    def pad_batch(self, encodings: list[dict[str, list[int]]]) -> dict[str, list[list[int]]]:
        """Right-pad pair encodings to the longest: pad id, segment 0, attention 0."""
        width = max(len(e["input_ids"]) for e in encodings)
        fill = {"input_ids": self.pad_id, "segment_ids": 0, "attention_mask": 0}
        return {key: [e[key] + [value] * (width - len(e[key])) for e in encodings] for key, value in fill.items()}
