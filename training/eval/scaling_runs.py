"""The runs behind `refinery scaling`: a size × token-budget sweep (transformers and LSTMs), a learning-rate
sweep across widths, and a data-mixing sweep; each writes JSONL records, a fit and a plot.

```
refinery scaling sweep --tokens out/tokens --output out/scaling            # then: refinery scaling fit out/scaling
refinery scaling lr --tokens out/tokens --output out/scaling-lr --target-width 256
refinery scaling mix --tokens out/tokens --domains news,reference,other --output out/scaling-mix
refinery scaling cost --params 400e9 --tokens 15.6e12 --gpus 16000 --mfu 0.4
```
Every run is `refinery train` with the same data, schedule and batch; only the model and the step count
change. N is the number of non-embedding parameters (Kaplan et al. 2020 show it gives cleaner laws for
small models, whose embeddings would otherwise dominate), D the number of training tokens, L the held-out
loss in nats per token at the end.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import yaml

from training.data import TokenData
from training.eval.scaling import ScalingFit, best_mixture, extrapolate_lr, fit_mixing_law, fit_scaling_law
from training.pretrain import load_train_config, pretrain, tokens_tokenizer

# small enough for CPUs: (arch, dim, layers)
DEFAULT_SIZES = (("transformer", 32, 2), ("transformer", 64, 2), ("transformer", 128, 3),
                 ("lstm", 32, 1), ("lstm", 64, 1), ("lstm", 128, 2))
DEFAULT_BUDGETS = (50_000, 100_000, 200_000)


def _run(tokens: str, out: Path, overrides: list[str], quiet: bool = True) -> dict:
    args = [f"data.tokens={tokens}", f"run.out_dir={out}", "run.progress=false", "run.eval_every=0",
            "run.checkpoint_every=0", "run.keep_checkpoints=1", "data.val_tokens=32768", *overrides]   # later wins
    sink = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        summary = pretrain(load_train_config(None, args))
    return summary


def _base(seq_len: int, batch: int) -> list[str]:
    return [f"data.seq_len={seq_len}", f"model.max_seq_len={seq_len}", f"run.batch_size={batch}",
            "optim.warmup_steps=10", "optim.schedule=cosine"]


def size_sweep(tokens: str, output: str, sizes=DEFAULT_SIZES, budgets=DEFAULT_BUDGETS, seq_len: int = 64,
               batch: int = 16, lr: float = 3e-3, val_tokens: int = 32768, log=print) -> list[dict]:
    tokens_tokenizer(tokens)              # a missing token folder is named before OUT is made
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    records_path = out / "sweep.jsonl"
    done = {(r["arch"], r["dim"], r["layers"], r["budget"]): r for r in _read(records_path)}
    records = []
    for arch, dim, layers in sizes:
        heads = max(1, dim // 16)
        for budget in budgets:
            key = (arch, dim, layers, budget)
            if key in done:                   # a rerun continues where a stopped sweep ended
                records.append(done[key])
                continue
            steps = max(10, budget // (seq_len * batch))
            summary = _run(tokens, out / f"{arch}-d{dim}-l{layers}-{budget}",
                           [*_base(seq_len, batch), f"model.arch={arch}", f"model.dim={dim}",
                            f"model.n_layers={layers}", f"model.n_heads={heads}", f"model.n_kv_heads={heads}",
                            f"run.steps={steps}", f"optim.lr={lr}", f"data.val_tokens={val_tokens}"])
            final = summary["final_eval"]
            record = {"arch": arch, "dim": dim, "layers": layers, "budget": budget, "N": summary["non_embedding_params"],
                      "params": summary["params"], "D": summary["tokens"], "loss": final["val_loss"],
                      "bpb": final["bpb"], "wall_s": summary["wall_s"]}
            records.append(record)
            with open(records_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            log(f"[scaling] {arch:<11} dim {dim:>4} x {layers} ({record['N']:>9,} non-embedding params), "
                f"{record['D']:>9,} tokens: loss {record['loss']:.4f}, {record['bpb']:.4f} bits/byte, "
                f"{record['wall_s']} s")
    return records


def _read(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def fit_sweep(output: str, budget_flops: float | None = None, log=print) -> dict:
    """Fit each architecture's points; plot loss against compute with the fitted curves."""
    out = Path(output)
    records = _read(out / "sweep.jsonl")
    if not records:
        raise FileNotFoundError(f"{out}/sweep.jsonl: no sweep records (run `refinery scaling sweep` first)")
    fits = {}
    for arch in sorted({r["arch"] for r in records}):
        rows = [r for r in records if r["arch"] == arch]
        if len(rows) < 5:
            log(f"[scaling] {arch}: {len(rows)} runs, too few to fit a 5-parameter law (skipped)")
            continue
        fit = fit_scaling_law([r["N"] for r in rows], [r["D"] for r in rows], [r["loss"] for r in rows])
        predicted = fit.predict([r["N"] for r in rows], [r["D"] for r in rows])
        entry = {**fit.as_dict(), "max_abs_error": float(np.max(np.abs(predicted - [r["loss"] for r in rows])))}
        if budget_flops:
            n_opt, d_opt = fit.optimal(budget_flops)
            entry["budget_flops"], entry["N_opt"], entry["D_opt"] = budget_flops, n_opt, d_opt
        fits[arch] = entry
        log(f"[scaling] {arch}: L = {fit.E:.3f} + {fit.A:.4g}/N^{fit.alpha:.3f} + {fit.B:.4g}/D^{fit.beta:.3f} "
            f"({len(rows)} runs, worst error {entry['max_abs_error']:.3f} nats)"
            + (f"; for {budget_flops:.3g} FLOPs: N* {entry['N_opt']:.3g}, D* {entry['D_opt']:.3g}"
               if budget_flops else ""))
    if not fits:
        raise ValueError(f"{out}: no architecture has the 5 runs a fit needs")
    (out / "fit.json").write_text(json.dumps(fits, indent=1))
    _plot_sweep(records, fits, out / "scaling.png")
    return fits


def _plot_sweep(records, fits, png: Path):
    import matplotlib  # heavy: only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {"transformer": "tab:blue", "lstm": "tab:orange"}
    for arch, entry in fits.items():
        rows = [r for r in records if r["arch"] == arch]
        fit = ScalingFit(**{k: entry[k] for k in ("E", "A", "B", "alpha", "beta")})
        compute = [6 * r["N"] * r["D"] for r in rows]
        left.scatter(compute, [r["loss"] for r in rows], color=colours.get(arch), label=f"{arch} runs")
        for n in sorted({r["N"] for r in rows}):
            ds = np.logspace(np.log10(min(r["D"] for r in rows)) - 0.2, np.log10(max(r["D"] for r in rows)) + 0.3, 40)
            left.plot(6 * n * ds, fit.predict(n, ds), color=colours.get(arch), alpha=0.5, lw=1)
        right.scatter(fit.predict([r["N"] for r in rows], [r["D"] for r in rows]), [r["loss"] for r in rows],
                      color=colours.get(arch), label=f"{arch}: E {fit.E:.2f}, α {fit.alpha:.2f}, β {fit.beta:.2f}")
    left.set(xscale="log", xlabel="compute 6·N·D (FLOPs, N non-embedding)", ylabel="held-out loss (nats/token)",
             title="runs and fitted L(N, D) per size")
    lo = min(r["loss"] for r in records) - 0.1
    hi = max(r["loss"] for r in records) + 0.1
    right.plot([lo, hi], [lo, hi], "k--", lw=1)
    right.set(xlabel="fitted loss", ylabel="measured loss", title="fit against points")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def lr_sweep(tokens: str, output: str, widths=(32, 64, 128), lrs=(1e-3, 3e-3, 1e-2, 3e-2), budget: int = 100_000,
             target_width: int = 256, layers: int = 2, seq_len: int = 64, batch: int = 16, log=print) -> dict:
    """The best learning rate per width, then log lr* against log width extrapolated to `target_width`."""
    tokens_tokenizer(tokens)              # a missing token folder is named before OUT is made
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(10, budget // (seq_len * batch))
    grid = []
    for width in widths:
        for lr in lrs:
            summary = _run(tokens, out / f"d{width}-lr{lr:g}",
                           [*_base(seq_len, batch), f"model.dim={width}", f"model.n_layers={layers}",
                            f"model.n_heads={max(1, width // 16)}", f"model.n_kv_heads={max(1, width // 16)}",
                            f"run.steps={steps}", f"optim.lr={lr}"])
            loss = summary["final_eval"]["val_loss"]
            grid.append({"width": width, "lr": lr, "loss": loss})
            log(f"[scaling lr] width {width:>4}, lr {lr:g}: loss {loss:.4f}")
    best = {w: min((g for g in grid if g["width"] == w), key=lambda g: g["loss"])["lr"] for w in widths}
    predicted, slope, intercept = extrapolate_lr(list(best), list(best.values()), target_width)
    result = {"grid": grid, "best": best, "slope": slope, "intercept": intercept, "target_width": target_width,
              "predicted_lr": predicted, "tokens": steps * seq_len * batch}
    (out / "lr.json").write_text(json.dumps(result, indent=1))
    _plot_lr(grid, best, predicted, target_width, out / "lr.png")
    log("[scaling lr] best: " + ", ".join(f"width {w}: {lr:g}" for w, lr in best.items())
        + f"; lr* ∝ width^{slope:.2f}; extrapolated for width {target_width}: {predicted:.3g}")
    return result


def _plot_lr(grid, best, predicted, target_width, png: Path):
    import matplotlib  # heavy: only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for width in sorted({g["width"] for g in grid}):
        rows = [g for g in grid if g["width"] == width]
        left.plot([g["lr"] for g in rows], [g["loss"] for g in rows], "o-", label=f"width {width}")
    left.set(xscale="log", xlabel="peak learning rate", ylabel="held-out loss (nats/token)", title="learning-rate sweep")
    left.legend()
    widths = sorted(best)
    right.scatter(widths, [best[w] for w in widths], label="best of the grid")
    right.scatter([target_width], [predicted], marker="*", s=150, label=f"extrapolated, width {target_width}")
    right.set(xscale="log", yscale="log", xlabel="width", ylabel="best learning rate", title="tune small, extrapolate")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def mix_sweep(tokens: str, output: str, domains: list[str], runs: int = 8, budget: int = 100_000, dim: int = 64,
              layers: int = 2, seq_len: int = 64, batch: int = 16, seed: int = 0, log=print) -> dict:
    """`runs` small models on Dirichlet-drawn domain weights; held-out loss on the natural mix of `domains`;
    the data-mixing law fitted; recommended weights written as a mix config (mix.yaml) for `refinery curate`."""

    tokens_tokenizer(tokens)              # a missing token folder or domain is named before OUT is made
    data = TokenData(tokens, seq_len, weights={d: 1.0 for d in domains})
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    natural = {d: data.split[d] / sum(data.split[x] for x in domains) for d in domains}
    mixes = [{d: 1 / len(domains) for d in domains}, natural]
    mixes += [dict(zip(domains, w)) for w in 0.05 + 0.95 * rng.dirichlet(np.ones(len(domains)), size=runs - 2)]
    steps = max(10, budget // (seq_len * batch))
    records = []
    for i, mix in enumerate(mixes):
        total = sum(mix.values())
        mix = {d: w / total for d, w in mix.items()}
        summary = _run(tokens, out / f"mix-{i}", [*_base(seq_len, batch), f"model.dim={dim}", f"model.n_layers={layers}",
                                                 f"model.n_heads={max(1, dim // 16)}", f"model.n_kv_heads={max(1, dim // 16)}",
                                                 f"run.steps={steps}", "data.weights=" + json.dumps(mix)])
        per_domain = summary["final_eval"]["domains_bpb"]
        # held-out target: the natural mix of the chosen domains, in bits per byte
        target = sum(natural[d] * per_domain[d] for d in domains)
        records.append({"weights": mix, "target_bpb": target, "domains_bpb": per_domain})
        log(f"[scaling mix] run {i}: " + ", ".join(f"{d} {w:.2f}" for d, w in mix.items()) + f" -> {target:.4f} bits/byte")
    law = fit_mixing_law(np.array([[r["weights"][d] for d in domains] for r in records]),
                         np.array([r["target_bpb"] for r in records]))
    bounds = {d: (min(r["weights"][d] for r in records), max(r["weights"][d] for r in records)) for d in domains}
    recommended = best_mixture(law, domains, bounds=bounds)
    predicted = law["c"] + law["k"] * float(np.exp(np.dot([recommended[d] for d in domains], law["t"])))
    # check the recommendation with one more run
    summary = _run(tokens, out / "mix-recommended", [*_base(seq_len, batch), f"model.dim={dim}",
                                                     f"model.n_layers={layers}", f"model.n_heads={max(1, dim // 16)}",
                                                     f"model.n_kv_heads={max(1, dim // 16)}", f"run.steps={steps}",
                                                     "data.weights=" + json.dumps(recommended)])
    measured = sum(natural[d] * summary["final_eval"]["domains_bpb"][d] for d in domains)
    result = {"domains": domains, "natural": natural, "runs": records, "law": law, "bounds": bounds,
              "recommended": recommended, "predicted_bpb": predicted, "measured_bpb": measured,
              "best_run_bpb": min(r["target_bpb"] for r in records), "tokens_per_run": steps * seq_len * batch}
    (out / "mix_law.json").write_text(json.dumps(result, indent=1))
    (out / "mix.yaml").write_text(
        "# recommended by `refinery scaling mix` (docs/scaling.md); use with refinery curate --config\n"
        + yaml.safe_dump({"mix": {"weights": recommended}}, sort_keys=True))
    log(f"[scaling mix] law: L = {law['c']:.3f} + {law['k']:.3f}·exp(" + " + ".join(
        f"{t:.2f}·r_{d}" for d, t in zip(domains, law["t"])) + f"), rmse {law['rmse']:.4f}; recommended "
        + ", ".join(f"{d} {w:.2f}" for d, w in recommended.items()) + f" (predicted {predicted:.4f}, measured "
        f"{measured:.4f} bits/byte; best sampled run {result['best_run_bpb']:.4f}); {out}/mix.yaml")
    return result
