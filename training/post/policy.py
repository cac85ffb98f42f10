"""The one way post-training loads the model it starts from, and saves what it made beside the run.

A policy is one of our runs or checkpoints (with the tokenizer it was trained with, our role tokens), or an
imported model: a Hugging Face Llama folder or a GGUF file, trained as our Transformer (the same logits,
training/hf.py) with its own tokenizer and chat template. A run of an imported model leaves its result as an
HF folder, RUN/model, that `LlamaForCausalLM.from_pretrained` loads (a reward model:
`LlamaForSequenceClassification`), with its tokenizer and a manifest; every verb that takes a model takes
RUN for it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from training.artifacts import MANIFEST, sha256_file, write_manifest
from training.checkpoint import load_model_weights
from training.hf import (
    HF_ADAPTER,
    HF_RESULT,
    imported,
    load_hf_tokenizer,
    load_model,
    save_hf,
    save_hf_tokenizer,
    special_ids,
)
from training.lm import checked_tokenizer, find_tokenizer
from training.model import Transformer
from training.post.conversation import pad_id
from training.post.heads import ScalarHead
from training.post.lora import is_lora, merged, save_adapters

SUPPORTED = ("one of our runs or checkpoints (refinery train / sft / dpo / ppo), a Hugging Face Llama folder "
             "(config.json + *.safetensors) or a GGUF file of a Llama-architecture model")


@dataclass
class Policy:
    model: Transformer
    tokenizer: object               # our Tokenizer, or an imported model's transformers tokenizer
    tokenizer_dir: Path | None      # ours: the folder holding tokenizer.model
    source: str = ""
    hf: Path | None = None          # the imported model's GGUF file or HF folder

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)

    @property
    def provenance(self) -> dict:
        """What a run started from this policy records in its manifest."""
        if self.hf is None:
            return {"base_model": self.source, "tokenizer_sha256": self.tokenizer.sha256}
        files = [self.hf] if self.hf.is_file() else sorted(self.hf.glob("*.safetensors"))
        return {"base_model": self.source, "base_model_sha256": {f.name: sha256_file(f) for f in files}}


def load_policy(spec: str | Path, seq_len: int = 0) -> Policy:
    """The model to post-train with its tokenizer, its context extended to `seq_len` if that is longer."""
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: no such model; --model takes {SUPPORTED}")
    hf = imported(path)
    if hf is not None:
        model = load_model(hf)
        tokenizer, tokenizer_dir = load_hf_tokenizer(hf), None
        if (hf.is_dir() and (hf / "tokenizer.model").is_file()):          # `refinery export` of one of ours
            tokenizer_dir, tokenizer = hf, checked_tokenizer(hf)
            hf = None
    else:
        model = load_model_weights(path)
        tokenizer_dir = find_tokenizer(path)
        tokenizer = checked_tokenizer(path)
    if seq_len and model.cfg.max_seq_len < seq_len:
        model.extend_context(seq_len)
    return Policy(model, tokenizer, tokenizer_dir, str(spec), hf)


def finish(policy: Policy, model, run_dir: str | Path, reward: bool = False) -> list[str]:
    """Leave what eval / generate / chat / the next verb need beside the run's checkpoints: our tokenizer, or, for
    an imported model, RUN/model as an HF folder (weights, config, tokenizer, manifest); a LoRA run's adapters
    alone in RUN/adapter, and the merged model only with `--merge` (an imported model's RUN/model; ours: RUN/model
    as `refinery export` writes it). `model`: what was trained (LoRA-wrapped or not; a ScalarHead: its backbone,
    and with `reward` its head as `LlamaForSequenceClassification`'s score). Returns the files written, relative
    to RUN."""
    run_dir = Path(run_dir)
    written = []
    lora = is_lora(model)
    if policy.hf is None:
        for name in ("tokenizer.model", "tokenizer.json"):
            if (policy.tokenizer_dir / name).is_file():
                shutil.copy(policy.tokenizer_dir / name, run_dir / name)
                written.append(name)
    base = str((policy.hf or Path(policy.source)).resolve())     # an HF folder, GGUF file or adapter folder
    if lora:
        folder = _fresh(run_dir / HF_ADAPTER)
        files = save_adapters(model, folder, hf_names=policy.hf is not None, base=base, reward=reward)
        files += _tokenizer_files(policy, folder)
        write_manifest(folder, "adapter", files, provenance=policy.provenance)
        written += [f"{HF_ADAPTER}/{name}" for name in files + [MANIFEST]]
    if (lora and not model.lora_options.merge) or (policy.hf is None and not lora):
        return written                                  # adapters alone; or ours, whose checkpoints are the result
    plain = merged(model)
    score = plain.head.weight if reward else None       # (our head's bias, a shift of every score, is not saved)
    backbone = plain.backbone if isinstance(plain, ScalarHead) else plain
    folder = _fresh(run_dir / HF_RESULT)
    special = special_ids(policy.tokenizer) if policy.hf is not None else None
    files = save_hf(backbone, folder, special, score=score) + _tokenizer_files(policy, folder)
    provenance = policy.provenance if policy.hf is not None else {"source": str(run_dir),
                                                                  "tokenizer_sha256": policy.tokenizer.sha256}
    write_manifest(folder, "hf-model", files, provenance=provenance)
    return written + [f"{HF_RESULT}/{name}" for name in files + [MANIFEST]]


def _fresh(folder: Path) -> Path:
    """An empty RUN/<folder>: a resumed run's earlier result there is ours (the run folder is locked and ours)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    return folder


def _tokenizer_files(policy: Policy, folder: Path) -> list[str]:
    """The policy's tokenizer into `folder`: an imported model's as transformers saves it, ours as `refinery
    export` writes it (tokenizer.model, checked by sha256, and a tokenizer.json transformers reads)."""
    if policy.hf is None:
        return save_hf_tokenizer(folder, policy.tokenizer_dir)
    saved = policy.tokenizer.save_pretrained(str(folder))
    return sorted({Path(f).name for f in saved if (folder / Path(f).name).is_file()})
