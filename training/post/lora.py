"""LoRA for every post-training verb, through `peft` (`--lora`; rank, alpha, dropout and targets by `--set lora.*`).

The adapters are the only trained weights of the transformer (a reward model's or PPO's scalar head trains in
full). The run saves them alone in RUN/adapter, as PEFT writes them: for an imported model with the Llama module
names, so `PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(BASE), "RUN/adapter")` loads them; `--merge`
also writes the merged model (RUN/model, an HF folder). Checkpoints hold base and adapters with the scale beside
them (lora.json) and every verb loads them merged. DPO's and PPO's reference is the same model with its adapters
switched off: no second copy in memory.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

from training.config import at_least
from training.files import write_atomic
from training.hf import hf_name

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_HF_TARGETS = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
               "down_proj": "down"}


@dataclass(frozen=True)
class LoraOptions:
    enabled: bool = False              # --lora: train low-rank adapters only
    rank: int = 16
    alpha: float = 32.0                # the update is scaled by alpha / rank
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS  # our module names (q k v o gate up down) or Llama's (q_proj … down_proj)
    merge: bool = False                # --merge: also save the model with the adapters merged in

    def __post_init__(self):
        at_least(self, 1, "rank")
        at_least(self, 0, "dropout")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not self.targets:
            raise ValueError("targets: name at least one module (q k v o gate up down)")
        unknown = [t for t in self.targets if t not in TARGETS and t not in _HF_TARGETS]
        if unknown:
            raise ValueError(f"targets: unknown module {', '.join(map(repr, unknown))}; choose from "
                             f"{' '.join(TARGETS)} (or their Llama names {' '.join(_HF_TARGETS)})")
        if self.merge and not self.enabled:
            raise ValueError("merge: there are no adapters to merge without --lora (lora.enabled)")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def with_lora(model: torch.nn.Module, opts: LoraOptions, train_in_full: tuple[str, ...] = ()) -> torch.nn.Module:
    """`model` with adapters on its target linear layers (peft), everything else frozen but the top-level
    submodules named in `train_in_full` (a scalar head)."""
    from peft import LoraConfig, get_peft_model  # optional (peft): only for --lora
    names = sorted({_HF_TARGETS.get(t, t) for t in opts.targets})
    wrapped = get_peft_model(model, LoraConfig(r=opts.rank, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                                               target_modules=names))
    for name in train_in_full:
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)
    wrapped.lora_options = opts
    return wrapped


def is_lora(model) -> bool:
    return hasattr(model, "lora_options")


class AdaptersOff:
    """A module of a LoRA-wrapped model called with the adapters switched off: the starting model, for DPO's and
    PPO's reference, sharing the weights it would otherwise copy."""

    def __init__(self, wrapped, module):
        self.wrapped, self.module = wrapped, module

    def __call__(self, *args, **kwargs):
        with self.wrapped.disable_adapter():
            return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)

    def to(self, device):
        return self

    def eval(self):
        return self


_PREFIX = "base_model.model."


def merged(model):
    """A plain copy of a LoRA-wrapped model with its adapters merged in (the wrapped one is left as it is)."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def save_adapters(model, directory: str | Path, hf_names: bool, base: str, reward: bool = False) -> list[str]:
    """The adapters alone as PEFT saves them (adapter_config.json + adapter_model.safetensors); `hf_names`: with
    Llama's module names, so they load onto the HF model; a reward model's head goes with them as Llama's `score`
    (a module PEFT saves whole). Returns the files written."""
    from peft import get_peft_model_state_dict  # optional (peft): only for --lora
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    opts = model.lora_options
    state = get_peft_model_state_dict(model)
    tensors, modules = {}, set()
    for key, tensor in state.items():
        if ".lora_" not in key:
            continue
        inner = key[len(_PREFIX):]                               # backbone.layers.0.attn.q.lora_A.weight
        inner = inner[len("backbone."):] if inner.startswith("backbone.") else inner
        layer, part = re.match(r"(.*)\.(lora_[AB]\.weight)$", inner).groups()
        if hf_names:
            layer = hf_name(layer + ".weight")[:-len(".weight")]
        key = f"{_PREFIX}{layer}.{part}"
        modules.add(layer.rsplit(".", 1)[-1])
        tensors[key] = tensor.detach().to("cpu", torch.float32).contiguous()
    head = getattr(model.get_base_model(), "head", None) if reward else None
    if head is not None:
        tensors[f"{_PREFIX}score.weight"] = head.weight.detach().to("cpu", torch.float32).contiguous()
    task = ("SEQ_CLS" if head is not None else "CAUSAL_LM") if hf_names else None
    config = {"peft_type": "LORA", "task_type": task, "r": opts.rank,
              "lora_alpha": opts.alpha, "lora_dropout": opts.dropout, "target_modules": sorted(modules),
              "bias": "none", "base_model_name_or_path": base, "inference_mode": True, "fan_in_fan_out": False,
              "use_rslora": False, "use_dora": False,
              "modules_to_save": ["score"] if head is not None else None, "init_lora_weights": True}
    write_atomic(directory / "adapter_model.safetensors", save(tensors, metadata={"format": "pt"}))
    write_atomic(directory / "adapter_config.json", json.dumps(config, indent=1))
    return ["adapter_config.json", "adapter_model.safetensors"]
