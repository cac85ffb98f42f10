"""Training throughput of our transformer against torch.nn.TransformerEncoder (causal mask) of the same width
and depth, in one process, on the CPU (or the GPU with --device cuda, bf16 autocast, optionally compiled).

    python bench/bench_model.py                      # CPU, the sample config's shape (dim 256, 4 layers)
    python bench/bench_model.py --device cuda --dim 768 --layers 12 --heads 12 --kv-heads 12 --seq 1024 \
        --batch 16 --compile                          # GPT-2 small shape (124 M): tokens/s and MFU

Both models get the same embedding and output projection, the same FFN width and the same batch; the baseline
is PyTorch's stock encoder layer (pre-norm LayerNorm, GELU MLP, full multi-head attention, fast path off as
training requires). Each measurement is the median of `--repeats` timed windows of `--steps` steps (forward,
backward, AdamW step) after warm-up steps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.loop import PEAK_FLOPS  # noqa: E402
from training.model import ModelConfig, Transformer  # noqa: E402


class EncoderLM(nn.Module):
    """The baseline: embedding + nn.TransformerEncoder with a causal mask + output projection (tied)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.n_heads, dim_feedforward=cfg.mlp_dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, idx):
        T = idx.shape[1]
        x = self.embed(idx) + self.pos(torch.arange(T, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        return self.head(self.norm(self.encoder(x, mask=mask, is_causal=True)))


def measure(model, logits_of, args, device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(0, args.vocab, (args.batch, args.seq + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            logits = logits_of(model, x[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(args.steps * args.batch * args.seq / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8, help="8 = full attention, as the baseline has")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      n_kv_heads=args.kv_heads, max_seq_len=args.seq)
    torch.manual_seed(0)
    ours, base = Transformer(cfg).to(device), EncoderLM(cfg).to(device)
    run_ours, run_base = ours, base
    if args.compile:
        run_ours, run_base = torch.compile(ours), torch.compile(base)
    print(f"device {device} ({torch.cuda.get_device_name(device) + ', ' if device.type == 'cuda' else 'CPU, '}"
          f"{torch.get_num_threads()} threads), torch {torch.__version__}; dim {args.dim}, {args.layers} layers, "
          f"{args.heads} heads ({args.kv_heads} kv), seq {args.seq}, batch {args.batch}, vocab {args.vocab}")
    print(f"parameters: ours {ours.num_params() / 1e6:.2f} M, nn.TransformerEncoder "
          f"{sum(p.numel() for p in base.parameters()) / 1e6:.2f} M")
    ours_rate = measure(run_ours, lambda m, x: m(x).logits, args, device)
    base_rate = measure(run_base, lambda m, x: m(x), args, device)
    print(f"tokens/s (train step): ours {ours_rate:,.0f}, nn.TransformerEncoder {base_rate:,.0f} "
          f"({ours_rate / base_rate:.2f}x)")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
        if peak:
            print(f"MFU (bf16 peak {peak / 1e12:.0f} TFLOP/s): ours "
                  f"{ours.flops_per_token(args.seq) * ours_rate / peak:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
