"""`refinery scaling sweep | fit | lr | mix | cost`: small-model experiments that extrapolate (docs/scaling.md).

```
refinery scaling sweep --tokens out/tokens --output out/scaling && refinery scaling fit out/scaling
refinery scaling cost --params 400e9 --tokens 15.6e12 --gpus 16000 --mfu 0.4
```
"""
from __future__ import annotations

import math

from pipeline.app.common import (
    UsageError,
    at_least_two,
    non_negative_float,
    positive_float,
    positive_int,
    split_list,
    unit_interval,
)
from training.eval import scaling_runs
from training.eval.scaling import CostAssumptions, training_cost


def configure(parser) -> None:
    parser.description = "Small-model experiments that extrapolate: see docs/scaling.md."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sweep = actions.add_parser("sweep", help="train a grid of model sizes x token budgets (transformers and LSTMs)")
    sweep.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    sweep.add_argument("--output", required=True, metavar="DIR")
    sweep.add_argument("--budgets", default="50000,100000,200000", metavar="LIST", help="training tokens per run")
    sweep.add_argument("--sizes", default="transformer:32x2,transformer:64x2,transformer:128x3,lstm:32x1,lstm:64x1,"
                                          "lstm:128x2", metavar="LIST", help="arch:DIMxLAYERS, comma-separated")
    sweep.add_argument("--lr", type=positive_float, default=3e-3)
    sweep.add_argument("--val-tokens", type=positive_int, default=32768, metavar="N",
                       help="held-out tokens per evaluation")
    fit = actions.add_parser("fit", help="fit L(N, D) = E + A/N^a + B/D^b to a sweep; compute-optimal N*, D*")
    fit.add_argument("directory", metavar="SWEEP_DIR")
    fit.add_argument("--budget", type=float, metavar="FLOPS", help="also give the compute-optimal N*, D* for it")
    lr = actions.add_parser("lr", help="learning-rate sweep across small widths, extrapolated to a larger one")
    lr.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    lr.add_argument("--output", required=True, metavar="DIR")
    lr.add_argument("--widths", default="32,64,128")
    lr.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    lr.add_argument("--target-width", type=positive_int, default=256)
    mix = actions.add_parser("mix", help="data-mixing law from a few runs; writes a mix config for refinery curate")
    mix.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    mix.add_argument("--output", required=True, metavar="DIR")
    mix.add_argument("--domains", required=True, metavar="LIST", help="comma-separated domains to mix")
    mix.add_argument("--runs", type=at_least_two, default=8)
    cost = actions.add_parser("cost", help="FLOPs, GPU-hours, days, cost, energy and CO2e of a training run")
    cost.add_argument("--params", type=positive_float, required=True, metavar="N")
    cost.add_argument("--tokens", type=positive_float, required=True, metavar="D")
    cost.add_argument("--gpus", type=positive_int, required=True, metavar="G")
    cost.add_argument("--mfu", type=unit_interval, required=True, metavar="M", help="model FLOPs utilisation, 0-1")
    cost.add_argument("--price-per-gpu-hour", type=non_negative_float, default=2.0, metavar="USD")
    cost.add_argument("--peak-flops", type=positive_float, default=989e12, help="per GPU (default H100 bf16 dense)")
    cost.add_argument("--gpu-watts", type=non_negative_float, default=700.0)
    cost.add_argument("--pue", type=positive_float, default=1.1)
    cost.add_argument("--kg-co2e-per-kwh", type=non_negative_float, default=0.39)


def _sizes(text: str) -> list[tuple[str, int, int]]:
    sizes = []
    for spec in split_list(text):
        arch, _, shape = spec.partition(":")
        dim, _, layers = shape.partition("x")
        if not (dim.isdigit() and layers.isdigit()):
            raise UsageError(f"--sizes: expected arch:DIMxLAYERS (e.g. transformer:64x2), got {spec!r}")
        sizes.append((arch, int(dim), int(layers)))
    return sizes


def _numbers(text: str, kind, option: str) -> list:
    try:
        numbers = [kind(float(x)) if kind is int else kind(x) for x in split_list(text)]
    except (ValueError, OverflowError):
        raise UsageError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not numbers or any(not math.isfinite(n) or n <= 0 for n in numbers):
        raise UsageError(f"{option}: expected numbers > 0, got {text!r}")
    return numbers


def main(args, beam_args: list[str]) -> int:
    if args.action == "sweep":
        scaling_runs.size_sweep(args.tokens, args.output, _sizes(args.sizes), _numbers(args.budgets, int, "--budgets"),
                                lr=args.lr, val_tokens=args.val_tokens)
        print(f"[scaling] records in {args.output}/sweep.jsonl; next: refinery scaling fit {args.output}")
    elif args.action == "fit":
        scaling_runs.fit_sweep(args.directory, args.budget)
        print(f"[scaling] {args.directory}/fit.json, {args.directory}/scaling.png")
    elif args.action == "lr":
        scaling_runs.lr_sweep(args.tokens, args.output, _numbers(args.widths, int, "--widths"),
                              _numbers(args.lrs, float, "--lrs"), target_width=args.target_width)
    elif args.action == "mix":
        scaling_runs.mix_sweep(args.tokens, args.output, split_list(args.domains), args.runs)
    else:
        result = training_cost(args.params, args.tokens, args.gpus, args.mfu, args.price_per_gpu_hour,
                               CostAssumptions(args.peak_flops, args.gpu_watts, args.pue, args.kg_co2e_per_kwh))
        print(f"[cost] {result['flops']:.3g} FLOPs (6 N D); at MFU {args.mfu:.0%} of {args.gpus:,} GPUs x "
              f"{args.peak_flops / 1e12:.0f} TFLOP/s: {result['days']:.1f} days, {result['gpu_hours'] / 1e6:.2f} M "
              f"GPU-hours, ${result['cost_usd'] / 1e6:.1f} M at ${args.price_per_gpu_hour}/GPU-hour; "
              f"{result['energy_mwh']:,.0f} MWh ({args.gpu_watts:.0f} W per GPU, PUE {args.pue}), "
              f"{result['co2e_tonnes']:,.0f} t CO2e at {args.kg_co2e_per_kwh} kg/kWh")
    return 0
