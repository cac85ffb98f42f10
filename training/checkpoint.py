"""Checkpoints: everything exact resumption needs, written atomically, read with `weights_only=True`.

```
RUN/checkpoints/step-000200/  model.pt  optimizer.pt  rng.pt  state.json  model.json
RUN/checkpoints/latest        the name of the newest complete checkpoint
```
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
from training.model import ModelConfig, Transformer


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
    """Write RUN/checkpoints/step-N atomically (temp folder + rename), point `latest` at it, keep the newest
    `keep` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    name = f"step-{state['step']:06d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / "model.pt")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "model.json").write_text(json.dumps(asdict(model.cfg), indent=1))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    pointer.write_text(name)
    os.replace(pointer, root / "latest")
    if keep > 0:
        for old in sorted(root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or RUN/checkpoints/latest."""
    path = Path(path)
    if path.name == "latest" and path.is_file():
        path = path.parent / path.read_text().strip()
    if (path / "model.pt").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: not a checkpoint (model.pt) nor a run folder with checkpoints/latest")
    return found


def load_model_weights(path: str | Path, device="cpu") -> Transformer:
    """The language model of a checkpoint (or of a run folder's latest checkpoint); of a model with a scalar head
    (PPO's policy, a reward model), its backbone."""
    path = find_checkpoint(path)
    cfg = ModelConfig(**json.loads((path / "model.json").read_text()))
    model = build(cfg)
    state = torch.load(path / "model.pt", map_location=device, weights_only=True)
    if any(k.startswith("backbone.") for k in state):     # a policy with a value head, or a reward model
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    model.load_state_dict(state)
    return model


def load_checkpoint(path: Path, model: Transformer, optimizer, device) -> dict:
    """Restore model, optimiser and RNG states in place; returns state.json."""
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    if optimizer is not None and (path / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    set_rng_state(torch.load(path / "rng.pt", map_location="cpu", weights_only=True))
    return json.loads((path / "state.json").read_text())
