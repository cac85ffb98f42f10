"""The one way post-training loads the model it starts from, and leaves its tokenizer beside the result."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from training.checkpoint import load_model_weights
from training.lm import checked_tokenizer, find_tokenizer
from training.model import Transformer
from training.tokenizer import Tokenizer


@dataclass
class Policy:
    model: Transformer
    tokenizer: Tokenizer
    tokenizer_dir: Path
    source: str = ""

    @property
    def provenance(self) -> dict:
        """What a run started from this policy records in its manifest."""
        return {"base_model": self.source, "tokenizer_sha256": self.tokenizer.sha256}


def load_policy(spec: str | Path, seq_len: int = 0) -> Policy:
    """One of our runs or checkpoints with the tokenizer it was trained with, its context extended to `seq_len`
    if that is longer."""
    path = Path(spec)
    if path.suffix == ".gguf" or (path / "config.json").is_file() and not (path / "checkpoints").exists() \
            and not (path / "model.pt").is_file():
        raise ValueError(f"{spec}: post-training starts from one of our runs or checkpoints (refinery train / sft); "
                         f"Hugging Face folders and GGUF files can be evaluated, chatted with and exported, not "
                         f"yet fine-tuned")
    model = load_model_weights(path)
    tokenizer_dir = find_tokenizer(path)
    tokenizer = checked_tokenizer(path)
    if seq_len and model.cfg.max_seq_len < seq_len:
        model.extend_context(seq_len)
    return Policy(model, tokenizer, tokenizer_dir, str(spec))


def keep_tokenizer(policy: Policy, run_dir: str | Path) -> None:
    """A copy of the policy's tokenizer beside the run's checkpoints, so eval / generate / chat find it."""
    for name in ("tokenizer.model", "tokenizer.json"):
        if (policy.tokenizer_dir / name).is_file():
            shutil.copy(policy.tokenizer_dir / name, Path(run_dir) / name)
