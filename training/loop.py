"""One training loop for every objective.

`train(model, batches, objective, optim, run)` runs AdamW (fused on CUDA) with warmup + cosine or
warmup-stable-decay, gradient accumulation, clipping, bf16 autocast and `torch.compile` on CUDA, DDP when
started by torchrun (NCCL on GPUs, gloo on CPU), checkpoints that restore model, optimiser, schedule, data
position and RNG exactly, a JSONL log, a progress bar with loss, tokens/s and MFU, and a loss-curve plot.

- `batches.batch(step, index, per_step)` returns a dict of numpy arrays or tensors for micro-batch `index` of
  `step`, `per_step` (= grad_accum × processes) micro-batches making one step: a pure function of where training
  is, which is what makes resumption and DDP exact (training/data.py, training/post/batches.py; PPO's rollouts
  are a function of the step and the policy's weights there, training/post/ppo.py).
- `objective(model, batch)` returns (loss, metrics): a scalar tensor to minimise and a dict of scalar tensors
  (or an `expert_load` (layers, E) tensor) to log.
- `evaluate(model)` (optional) returns a dict of numbers, logged with `"eval": true` every `run.eval_every` steps,
  at the end, and before the first step with `run.eval_at_start`. A result with a `"stop"` reason ends the run
  there, keeping the last checkpoint as the result (PPO's KL bound).
- `after(model)` (optional) returns what to add to the summary (post-training's "after" measurements), before
  RUN/summary.json and RUN/loss.png are written, once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as td
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from training.artifacts import LOCK, MANIFEST, FolderLock, prepare_output, read_manifest, write_manifest
from training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.config import at_least, within
from training.cpu import warn_if_busy
from training.files import write_atomic
from training.model import collapsed_experts

log = logging.getLogger("refinery.train")

SCHEDULES = ("cosine", "wsd", "constant", "linear")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 3e-3                # peak; small models take a high rate (nanoGPT's shakespeare-char uses 1e-3)
    min_lr_ratio: float = 0.1       # the rate decays to lr · this (Chinchilla: 10x down)
    warmup_steps: int = 50
    schedule: str = "cosine"        # cosine | wsd (warmup-stable-decay) | constant | linear (transformers' default)
    decay_fraction: float = 0.2     # wsd: the last 20 % of steps decay (Hägele et al. 2024)
    beta1: float = 0.9
    beta2: float = 0.95             # GPT-3 / Llama
    eps: float = 1e-8
    weight_decay: float = 0.1       # on matrices and embeddings only, not on norms
    grad_clip: float = 1.0          # global norm; 0 = off

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        at_least(self, 0, "warmup_steps", "weight_decay", "grad_clip")
        within(self, 0.0, 1.0, "min_lr_ratio")
        within(self, 0.0, 1.0, "beta1", "beta2", high_open=True)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")


@dataclass(frozen=True)
class RunConfig:
    out_dir: str = "out/train"
    steps: int = 500                # optimiser steps
    batch_size: int = 16            # rows per micro-batch per process
    grad_accum: int = 1             # micro-batches per optimiser step
    log_every: int = 10
    eval_every: int = 100           # 0 = only at the end
    eval_at_start: bool = False     # also evaluate before the first step (post-training's "before")
    checkpoint_every: int = 100     # 0 = only at the end
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "auto"            # auto: cuda if available, else cpu
    dtype: str = "auto"             # auto: bfloat16 autocast on CUDA, float32 on CPU; or float32 / bfloat16
    compile: str | bool = "auto"    # auto: torch.compile on CUDA only; or true / false (YAML's booleans)
    init_from: str = ""             # weights (not optimiser) of a checkpoint / HF folder / GGUF: continual training
    stop_at_step: int = 0           # stop (with a checkpoint) before this step, the schedule unchanged: preemption
    peak_flops: float = 0.0         # for MFU where the device is not in the table (e.g. CPUs); 0 = unknown
    progress: bool = True
    threads: int = 0                # torch CPU threads; 0 = torch's default
    overwrite: bool = False         # replace an earlier run in out_dir (only the files its manifest lists go)

    def __post_init__(self):
        at_least(self, 1, "steps", "batch_size", "grad_accum", "log_every")
        at_least(self, 0, "eval_every", "checkpoint_every", "keep_checkpoints", "seed", "stop_at_step", "threads",
                 "peak_flops")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if isinstance(self.compile, bool):
            object.__setattr__(self, "compile", str(self.compile).lower())
        if self.compile not in ("auto", "true", "false"):
            raise ValueError(f"compile must be auto, true or false, got {self.compile!r}")


def decay_start(optim: OptimConfig, steps: int) -> int | None:
    """First step of WSD's decay phase (None for other schedules)."""
    if optim.schedule != "wsd":
        return None
    return max(optim.warmup_steps, steps - round(optim.decay_fraction * steps))


def lr_at(step: int, optim: OptimConfig, steps: int) -> float:
    """The learning rate of optimiser step `step` (0-based) of `steps`."""
    floor = optim.lr * optim.min_lr_ratio
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    if optim.schedule in ("cosine", "linear"):
        progress = min(1.0, (step - optim.warmup_steps) / max(1, steps - optim.warmup_steps))
        if optim.schedule == "linear":      # with min_lr_ratio 0 and no warmup: lr · (1 − step/steps), as HF's
            return floor + (1 - progress) * (optim.lr - floor)
        return floor + 0.5 * (1 + math.cos(math.pi * progress)) * (optim.lr - floor)
    start = decay_start(optim, steps)                       # wsd: stable, then 1 - sqrt decay (Hägele et al.)
    if step < start:
        return optim.lr
    progress = min(1.0, (step - start + 1) / max(1, steps - start))
    return floor + (optim.lr - floor) * (1 - math.sqrt(progress))


# bf16 dense peak FLOP/s by device name (vendor datasheets, without sparsity)
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12,
              "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def peak_flops(device: torch.device, configured: float = 0.0) -> float | None:
    if configured:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    return None


def make_optimizer(model: torch.nn.Module, optim: OptimConfig, device: torch.device):
    """AdamW; weight decay on 2-D parameters only; fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": optim.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, **extra)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> Distributed:
    """Join the process group torchrun set up (WORLD_SIZE > 1); NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not td.is_initialized():
        td.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Distributed(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(run: RunConfig, local_rank: int = 0) -> torch.device:
    kind = run.device if run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(kind)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        out[key] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
    return out


def _rows_tokens(batch: dict) -> int:
    first = batch.get("input", next(iter(batch.values())))
    return int(first.numel()) if isinstance(first, torch.Tensor) else 0


class _Meter:
    """Sums of logged metrics between two log lines."""

    def __init__(self):
        self.sums, self.count = {}, 0

    def add(self, metrics: dict):
        self.count += 1
        for key, value in metrics.items():
            value = value.detach().float().cpu() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def means(self, dist: Distributed) -> dict:
        out = {}
        for key, total in sorted(self.sums.items()):
            mean = total / max(1, self.count)
            if dist.world > 1:
                mean = mean.clone()
                td.all_reduce(mean)
                mean /= dist.world
            out[key] = mean.tolist() if mean.dim() else float(mean)
        self.sums, self.count = {}, 0
        return out


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past `step`: a run killed after its last checkpoint logged steps it will redo."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's CPU threads set to `n` inside (0: as they are), restored after, so one run's setting does not
    leak into what the same process does next (`refinery run`'s evaluation, tests)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(model, batches, objective, optim: OptimConfig, run: RunConfig, evaluate=None, config: dict | None = None,
          resume: bool = False, flops_per_token: float | None = None, after=None,
          baselines: dict[str, float] | None = None, inputs: list = (), provenance: dict | None = None) -> dict:
    """Train `model` for run.steps optimiser steps; returns the summary also written to RUN/summary.json.
    `baselines`: named bits-per-byte lines for the loss plot (pretraining's unigram). `inputs`: what the run
    reads (the output may not be or hold one); `provenance`: recorded in the run's manifest (the tokenizer's
    sha256, the data's and the starting model's)."""
    main = int(os.environ.get("RANK", "0")) == 0
    foreign = frozenset()
    if main:                # the run folder is ours alone: checked, then locked while we write it
        prepare_output(run.out_dir, "run", inputs, overwrite=run.overwrite, keep=resume)
        foreign = _not_listed(Path(run.out_dir))
    with torch_threads(run.threads), (FolderLock(run.out_dir) if main else contextlib.nullcontext()):
        return _train(model, batches, objective, optim, run, evaluate, config, resume, flops_per_token, after,
                      baselines, {**(provenance or {}), "inputs": [str(i) for i in inputs]}, foreign)


def _not_listed(out_dir: Path) -> frozenset[str]:
    """Files already in the run folder that its manifest (if any) does not list: someone else's, so never listed
    by this run (a later --overwrite removes only what the manifest lists)."""
    listed = set(read_manifest(out_dir)["files"]) if (out_dir / MANIFEST).is_file() else set()
    return frozenset(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")
                     if p.is_file() and p.relative_to(out_dir).as_posix() not in listed)


def write_run_manifest(out_dir: Path, provenance: dict, config: dict | None, foreign=frozenset()) -> None:
    """RUN/manifest.json over what the run wrote so far (not the `foreign` files that were there before it);
    checkpoints' files taken from their own manifests."""
    files, entries = [], {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if not path.is_file() or rel in (MANIFEST, LOCK) or rel in foreign or \
                any(part.endswith(".tmp") for part in path.parts):
            continue
        if rel.startswith("checkpoints/step-") and (path.parent / MANIFEST).is_file() and path.name != MANIFEST:
            entries[rel] = json.loads((path.parent / MANIFEST).read_text())["files"].get(path.name)
        if entries.get(rel) is None:
            entries.pop(rel, None)
            files.append(rel)
    manifest = write_manifest(out_dir, "run", files, provenance, config or {})
    if entries:
        manifest["files"].update(entries)
        write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=1))


def _train(model, batches, objective, optim: OptimConfig, run: RunConfig, evaluate, config, resume: bool,
           flops_per_token: float | None, after, baselines, provenance: dict, foreign: frozenset) -> dict:
    kind = run.device if run.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist = setup_distributed(kind)
    device = pick_device(run, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bf16 = run.dtype == "bfloat16" or (run.dtype == "auto" and device.type == "cuda")
    out_dir = Path(run.out_dir)
    if dist.main:
        if config is not None:
            write_atomic(out_dir / "config.json", json.dumps(config, indent=1))
        write_run_manifest(out_dir, provenance, config, foreign)

    model.to(device)
    optimizer = make_optimizer(model, optim, device)
    step, tokens, elapsed = 0, 0, 0.0
    found = latest_checkpoint(out_dir) if resume else None
    if found is not None:
        state = load_checkpoint(found, model, optimizer, device)
        step, tokens, elapsed = state["step"], state["tokens"], state.get("elapsed_s", 0.0)
        if dist.main:
            _truncate_log(out_dir / "log.jsonl", step)
            print(f"[train] resumed from {found} (step {step:,}, {tokens:,} tokens)")
    elif resume:
        raise FileNotFoundError(f"{out_dir}: no intact checkpoint to resume from")

    net = model
    if dist.world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if run.compile == "true" or (run.compile == "auto" and device.type == "cuda"):
        net = torch.compile(net)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    peak = peak_flops(device, run.peak_flops)

    log_path = out_dir / "log.jsonl"
    meter, summary, last_eval = _Meter(), {}, None
    params = [p for p in model.parameters() if p.requires_grad]
    bar = None
    if run.progress and dist.main:
        bar = tqdm(total=run.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    if dist.main and device.type == "cpu" and step < run.steps:
        warn_if_busy(tqdm.write if bar is not None else print, "[train]")
    window_start, window_tokens = time.perf_counter(), 0

    def write_log(record: dict):
        if dist.main:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def checkpoint():
        if dist.main:
            save_checkpoint(out_dir, model, optimizer,
                            {"step": step, "tokens": tokens, "elapsed_s": round(elapsed, 3),
                             "data_position": {"step": step}}, keep=run.keep_checkpoints)
            write_run_manifest(out_dir, provenance, config, foreign)

    def run_eval() -> str | None:
        """Evaluate and log; the reason to stop, if the evaluation gives one."""
        nonlocal last_eval
        if evaluate is None:
            return None
        stop = None
        if dist.main:
            model.eval()
            with torch.no_grad(), autocast:
                result = evaluate(model)
            model.train()
            stop = result.pop("stop", None)
            record = {"step": step, "tokens": tokens, "eval": True, **result}
            write_log(record)
            if stop is None:
                last_eval = record
            line = "[eval] step {:,}: ".format(step) + ", ".join(
                f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            if bar is not None:
                bar.write(line)
            elif run.progress:
                print(line, flush=True)
        if dist.world > 1:          # every process stops together
            flag = [stop]
            td.broadcast_object_list(flag, src=0)
            stop = flag[0]
        return stop

    model.train()
    started = time.perf_counter()
    stopped_early, stopped = False, None
    if run.eval_at_start and found is None:
        stopped = run_eval()
        if stopped is None and run.checkpoint_every:
            checkpoint()                     # the starting weights: what a stop at the first evaluation keeps
    while step < run.steps and stopped is None:
        if run.stop_at_step and step >= run.stop_at_step:
            stopped_early = True
            break
        lr = lr_at(step, optim, run.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_tokens = 0
        for micro in range(run.grad_accum):
            batch = _to_device(batches.batch(step, micro * dist.world + dist.rank, run.grad_accum * dist.world),
                               device)
            sync = micro == run.grad_accum - 1 or dist.world == 1
            with (contextlib.nullcontext() if sync else net.no_sync()), autocast:
                loss, metrics = objective(net, batch)
            (loss / run.grad_accum).backward()
            meter.add({"loss": loss, **metrics})
            step_tokens += _rows_tokens(batch) * dist.world
        grad_norm = torch.nn.utils.clip_grad_norm_(params, optim.grad_clip if optim.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += step_tokens
        window_tokens += step_tokens
        if step % run.log_every == 0 or step == run.steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            seconds = now - window_start
            tokens_per_s = window_tokens / max(seconds, 1e-9)
            means = meter.means(dist)
            record = {"step": step, "tokens": tokens, "lr": lr, "grad_norm": float(grad_norm),
                      **means, "tokens_per_s": round(tokens_per_s, 1)}
            if flops_per_token and peak:
                record["mfu"] = round(flops_per_token * tokens_per_s / (peak * dist.world), 4)
            load = means.get("expert_load")
            if load is not None:
                collapsed = collapsed_experts(torch.tensor(load))
                if collapsed:
                    record["collapsed_experts"] = collapsed
                    log.warning("routing collapse at step %d: %s", step, ", ".join(
                        f"layer {i} expert {e} load {v:.2f}x uniform" for i, e, v in collapsed))
            elapsed += seconds
            window_start, window_tokens = now, 0
            write_log(record)
            if bar is not None:
                post = {"loss": f"{record['loss']:.3f}", "tok/s": f"{tokens_per_s:,.0f}"}
                if "mfu" in record:
                    post["mfu"] = f"{record['mfu']:.1%}"
                bar.set_postfix(post, refresh=False)
        if bar is not None:
            bar.update(1)
        paused = time.perf_counter()             # evaluation and checkpoints do not count against tokens/s
        if run.eval_every and step % run.eval_every == 0 and step < run.steps:
            stopped = run_eval()
        if stopped is None and run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps:
            checkpoint()
        window_start += time.perf_counter() - paused
    if bar is not None:
        bar.close()
    if not stopped_early and stopped is None:
        stopped = run_eval()
    if stopped is None:
        checkpoint()
    elif dist.main:
        print(f"[train] stopped at step {step:,}: {stopped}; the result is the last checkpoint "
              f"({latest_checkpoint(out_dir) or 'none'})", flush=True)
    if dist.main:
        summary = {"steps": step, "tokens": tokens, "wall_s": round(time.perf_counter() - started, 1),
                   "train_s": round(elapsed, 1), "stopped_early": stopped_early, "stopped": stopped,
                   "final_eval": last_eval, "params": sum(p.numel() for p in model.parameters())}
        if after is not None:
            summary.update(after(model))
        write_atomic(out_dir / "summary.json", json.dumps(summary, indent=1))
        try:
            plot_loss(log_path, out_dir / "loss.png", baselines)
        except Exception as e:       # a plot must not fail a finished run
            log.warning("loss plot not written: %s", e)
        write_run_manifest(out_dir, provenance, config, foreign)
    if dist.world > 1:
        td.barrier()
    return summary


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(training records, evaluation records) of a log.jsonl."""
    train_rows, eval_rows = [], []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            (eval_rows if row.get("eval") else train_rows).append(row)
    return train_rows, eval_rows


def eval_ends(run_dir: str | Path) -> tuple[dict, dict]:
    """(the evaluation before the first step, the last evaluation) of a run's log; {} for one it does not have
    (no `run.eval_at_start`, no evaluation at all)."""
    path = Path(run_dir) / "log.jsonl"
    _, evals = read_log(path) if path.is_file() else ([], [])
    if not evals:
        return {}, {}
    return (evals[0] if evals[0]["step"] == 0 else {}), evals[-1]


def tokens_axis(ax, label: str = "tokens") -> None:
    """An x axis of token counts with short engineering labels (200k, 1.5M): plain integers ran together."""
    from matplotlib.ticker import EngFormatter, MaxNLocator  # heavy: only when a plot is drawn
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_xlabel(label)


def plot_loss(log_path: Path, png: Path, baselines: dict[str, float] | None = None) -> Path:
    """Training loss and held-out bits-per-byte against tokens."""
    import matplotlib  # heavy: only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
    train_rows, eval_rows = read_log(log_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["tokens"] for r in train_rows], [r["loss"] for r in train_rows], lw=1)
    left.set(ylabel="training loss (nats/token)", title="training loss")
    if eval_rows and "bpb" in eval_rows[0]:
        right.plot([r["tokens"] for r in eval_rows], [r["bpb"] for r in eval_rows], "o-",
                   label=f"model {eval_rows[-1]['bpb']:.3f}")
        for name, value in (baselines or {}).items():
            right.axhline(value, ls="--", color="grey", label=f"{name} {value:.3f}")
        right.legend()
        right.set(ylabel="bits per byte", title="held-out bits per byte")
    for ax in (left, right):
        tokens_axis(ax)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def config_dict(*sections) -> dict:
    return {type(s).__name__: asdict(s) for s in sections}
