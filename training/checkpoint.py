"""Checkpoints: everything exact resumption needs, written atomically, read with `weights_only=True`.

```
RUN/checkpoints/step-000200/  model.pt  optimizer.pt  rng.pt  state.json  model.json  manifest.json
RUN/checkpoints/latest        the name of the newest complete checkpoint
```
Every file is fsynced and listed with its sha256 in the checkpoint's manifest before the folder is renamed into
place: a checkpoint whose files do not match is refused by name, and `--resume` falls back to the newest one
that checks out.
`state.json` holds the step, tokens seen and the data position (batches are a function of the step: see
training/data.py); `rng.pt` the torch CPU and CUDA generator states; `model.json` the ModelConfig, so a
checkpoint loads on its own.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from training.architectures import build
from training.artifacts import MANIFEST, ArtifactError, problems, read_manifest, write_manifest
from training.files import sync_folder, write_atomic
from training.model import ModelConfig, Transformer

LORA_FILE = "lora.json"      # beside a LoRA run's model.pt: the adapters' scale, so loaders merge them


def rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, model: Transformer, optimizer, state: dict, keep: int = 2) -> Path:
    """Write RUN/checkpoints/step-N: every file fsynced, its manifest (sha256 of each) last, then the folder
    renamed into place and `latest` pointed at it; the newest `keep` checkpoints of the run stay (the one just
    written always does)."""
    root = Path(run_dir) / "checkpoints"
    name = f"step-{state['step']:06d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    _save(model.state_dict(), tmp / "model.pt")
    if optimizer is not None:
        _save(optimizer.state_dict(), tmp / "optimizer.pt")
    _save(rng_state(), tmp / "rng.pt")
    write_atomic(tmp / "model.json", json.dumps(asdict(model.cfg), indent=1))
    lora = getattr(model, "lora_options", None)           # LoRA (training/post/lora.py): the adapters' scale
    if lora is not None:
        write_atomic(tmp / LORA_FILE, json.dumps({"scale": lora.scale, "rank": lora.rank, "alpha": lora.alpha,
                                                  "targets": list(lora.targets)}, indent=1))
    write_atomic(tmp / "state.json", json.dumps(state, indent=1))
    write_manifest(tmp, "checkpoint", [p.name for p in tmp.iterdir() if p.is_file()])
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    sync_folder(root)
    write_atomic(root / "latest", name)
    if keep > 0:
        for old in [c for c in checkpoints(run_dir) if c.name != name][:-(keep - 1) or None]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _save(obj, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoint folders, oldest first by step."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]))


def checkpoint_problems(path: Path) -> list[str]:
    """Why a checkpoint folder cannot be trusted ([] if it can): its manifest, then every file's sha256."""
    if not (path / MANIFEST).is_file():          # written before checkpoints had manifests: what can be checked
        return [f"{path / name}: missing" for name in ("model.pt", "model.json", "state.json")
                if not (path / name).is_file()]
    try:
        return problems(path, read_manifest(path, "checkpoint"))
    except ArtifactError as e:
        return [str(e)]


def latest_checkpoint(run_dir: Path, log=print) -> Path | None:
    """The newest intact checkpoint of a run: the one `latest` names if it checks out, else the newest that
    does (said through `log`); None if there is none."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    named = pointer.parent / pointer.read_text().strip() if pointer.is_file() else None
    candidates = ([named] if named is not None else []) + [c for c in reversed(checkpoints(run_dir)) if c != named]
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        bad = checkpoint_problems(candidate)
        if not bad:
            return candidate
        if log:
            log(f"[checkpoint] {candidate.name} is damaged ({bad[0]}); trying the one before it")
    return None


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or RUN/checkpoints/latest, checked against
    its manifest."""
    path = Path(path)
    if path.name == "latest" and path.is_file():
        path = path.parent / path.read_text().strip()
    if (path / "model.pt").is_file():
        bad = checkpoint_problems(path)
        if bad:
            raise ArtifactError(f"checkpoint {path} is damaged: {bad[0]}")
        return path
    found = latest_checkpoint(path, log=None)
    if found is None:
        if checkpoints(path):
            raise ArtifactError(f"{path}: every checkpoint is damaged (checksums do not match their manifests)")
        raise FileNotFoundError(f"{path}: not a checkpoint (model.pt) nor a run folder with checkpoints")
    return found


def _load(path: Path, device="cpu"):
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:          # a truncated or foreign file: pickle, zip and torch errors all mean that
        raise ArtifactError(f"{path}: not a readable checkpoint file ({type(e).__name__}: {str(e)[:100]})") from None


def model_config(path: Path) -> ModelConfig:
    try:
        return ModelConfig(**json.loads((path / "model.json").read_text()))
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{path / 'model.json'}: not a model config ({e})") from None


_PEFT = "base_model.model."


def plain_state(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A LoRA-wrapped model's state dict (peft's names) as the plain model's, each adapter merged into its layer:
    W + scale · B A."""
    def inner(key: str) -> str:
        return key.removeprefix(_PEFT)
    out = {inner(k).replace(".base_layer.", "."): v for k, v in state.items() if ".lora_" not in k}
    for key, a in state.items():
        if ".lora_A." in key:
            b = state[key.replace(".lora_A.", ".lora_B.")]
            layer = inner(key).split(".lora_A.")[0] + ".weight"
            out[layer] = out[layer] + (scale * (b.float() @ a.float())).to(out[layer].dtype)
    return out


def model_state(path: Path, device="cpu") -> dict[str, torch.Tensor]:
    """A checkpoint's model.pt as the plain model's state dict (LoRA adapters merged, lora.json's scale)."""
    state = _load(path / "model.pt", device)
    if (path / LORA_FILE).is_file():
        state = plain_state(state, json.loads((path / LORA_FILE).read_text())["scale"])
    return state


def load_model_weights(path: str | Path, device="cpu") -> Transformer:
    """The language model of a checkpoint (or of a run folder's latest intact checkpoint); of a model with a
    scalar head (PPO's policy, a reward model), its backbone; of a LoRA run, with the adapters merged."""
    path = find_checkpoint(path)
    model = build(model_config(path))
    state = model_state(path, device)
    if any(k.startswith("backbone.") for k in state):     # a policy with a value head, or a reward model
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"{path / 'model.pt'}: does not fit {path / 'model.json'} ({str(e)[:120]})") from None
    return model


def load_checkpoint(path: Path, model: Transformer, optimizer, device) -> dict:
    """Restore model, optimiser and RNG states in place; returns state.json."""
    model.load_state_dict(_load(path / "model.pt", device))
    if optimizer is not None and (path / "optimizer.pt").is_file():
        optimizer.load_state_dict(_load(path / "optimizer.pt", device))
    set_rng_state(_load(path / "rng.pt", "cpu"))
    return json.loads((path / "state.json").read_text())
