"""`refinery ablate`: a FineWeb-style data ablation in one command.

```
refinery ablate configs/sample.yaml configs/extract-only.yaml --output out/ablate --seeds 0,1
refinery ablate out/run/curated configs/extract-only.yaml --tokenizer out/run/tokenizer --tokens 200000
```
Each arm (a curation config, or a folder already curated) is curated from the same crawl, tokenized with ONE
tokenizer (trained on the first arm, or `--tokenizer`), and trains the same model with the same seed(s) on the
same number of tokens; each model is evaluated on wikitext-2 bits per byte and a few multiple-choice tasks.
The difference between arms is then set against the spread between seeds (Penedo et al. 2024 train several
seeds per ablation for this reason). Writes DIR/ablation.md, ablation.json, ablation.png and report.html.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.app.common import BEAM_EPILOG
from pipeline.app.options import add_options, from_args, option
from pipeline.app.report import write_ablation_report
from pipeline.app.run import (
    Recorder,
    RunOptions,
    check_tasks,
    command_line,
    curate_config,
    curate_stage,
    eval_stage,
    machine,
    own_folder,
    resolve_inputs,
    tokenize_stage,
    tokenizer_stage,
    train_config,
    train_sets,
    train_stage,
)
from pipeline.dataset import write_atomic


@dataclass(frozen=True)
class AblateOptions:
    arms: tuple[str, ...] = option((), "config YAML or curated dataset folder (2 or more)", positional="+",
                                   metavar="ARM")
    output: str = option("out/ablate", "output folder", metavar="DIR")
    tokens: int = option(500_000, "training tokens per model, equal for every arm (~2.5 min per model on 2 cores)",
                         metavar="N")
    seeds: tuple[int, ...] = option((0,), "training seeds, e.g. 0,1")
    tokenizer: str = option("", "shared tokenizer (default: trained on the first arm)", metavar="TOK_DIR")
    inputs: tuple[str, ...] = option((), "WARC files to curate (default: the sample crawl in the shared data folder)",
                                     flag="--input", metavar="GLOB[,GLOB]", repeat=True)
    train_config: str = option("configs/train-sample.yaml", "the model and optimiser", metavar="FILE")
    train_set: tuple[str, ...] = option((), "override a train config key, e.g. --set model.dim=128; repeatable",
                                        flag="--set", metavar="KEY=VALUE", repeat=True)
    vocab_size: int = option(8000, "tokenizer pieces", metavar="N")
    tasks: tuple[str, ...] = option(("wikitext", "arc_easy", "piqa", "hellaswag"), "evaluation tasks")
    eval_limit: int = option(100, "items per multiple-choice task", metavar="N")
    wikitext_bytes: int = option(300_000, "wikitext-2 bits per byte on its first B bytes", metavar="B")
    resume: bool = option(False, "keep the stages whose outputs in DIR are complete")
    progress: bool = option(True, "no progress bars")
    beam_args: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("tokens", "vocab_size", "eval_limit", "wikitext_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Arm:
    name: str
    spec: str
    config: object = None                 # a CurateConfig, or None for a folder already curated
    dataset: Path = Path()


def arms_of(opts: AblateOptions, out: Path) -> list[Arm]:
    """Each ARM as a config to curate with or a curated folder; names from the file or folder, made unique."""
    if len(opts.arms) < 2:
        raise ValueError(f"an ablation needs 2 or more arms, got {len(opts.arms)}")
    arms, names = [], set()
    for spec in opts.arms:
        path = Path(spec)
        if path.is_dir():
            if not list(path.glob("data/*.parquet")) and not list(path.glob("*.parquet")):
                raise FileNotFoundError(f"{spec}: a folder, but no curated Parquet files in it or in its data/")
            name = path.name if path.name not in ("curated", "data") else path.parent.name
        else:
            name = path.stem
        base, i = name, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.add(name)
        if path.is_dir():
            arms.append(Arm(name, spec, None, path))
        else:
            arms.append(Arm(name, spec, curate_config(spec), out / name / "curated"))
    return arms


def steps_for(tokens: int, cfg) -> tuple[int, int]:
    """Optimiser steps to train on at least `tokens` tokens, and the tokens that makes."""
    per_step = cfg.run.batch_size * cfg.run.grad_accum * cfg.data.seq_len
    steps = max(1, math.ceil(tokens / per_step))
    return steps, steps * per_step


# ---- the verdict, generated from the numbers

def seed_spread(values: dict[str, list[float]]) -> float | None:
    """The largest range across seeds of any arm (None with one seed)."""
    ranges = [max(v) - min(v) for v in values.values() if len(v) > 1]
    return max(ranges) if ranges else None


def verdict(wikitext: dict[str, list[float]], tokens: int) -> str:
    """Did the first arm beat the second on wikitext-2 bits per byte, beyond the noise between seeds?"""
    (a, va), (b, vb) = list(wikitext.items())[:2]
    ma, mb = statistics.mean(va), statistics.mean(vb)
    diff = mb - ma                          # > 0: the first arm is better (lower bits per byte)
    spread = seed_spread(wikitext)
    seeds = min(len(va), len(vb))
    mean = "mean of " + f"{seeds} seeds" if seeds > 1 else "one seed"
    head = (f"At {tokens:,} training tokens per model, `{a}` reached {ma:.4f} wikitext-2 bits per byte and `{b}` "
            f"{mb:.4f} ({mean}).")
    better, worse = (a, b) if diff > 0 else (b, a)
    if spread is None:
        return (f"{head} `{better}` is lower by {abs(diff):.4f}; with one seed the noise between seeds is unknown "
                f"(rerun with --seeds 0,1), so this is no evidence either way yet. Did `{a}`'s curation help over "
                f"`{b}` at this scale? {'Possibly' if diff > 0 else 'Not here'}: unconfirmed.")
    if abs(diff) <= spread:
        return (f"{head} The difference, {abs(diff):.4f}, is within the spread between seeds ({spread:.4f}). Did "
                f"`{a}`'s curation help over `{b}` at this scale? Not measurably.")
    answer = "Yes" if diff > 0 else "No, it hurt"
    return (f"{head} `{better}` is lower by {abs(diff):.4f}, more than the spread between seeds ({spread:.4f}). Did "
            f"`{a}`'s curation help over `{b}` at this scale? {answer}: `{worse}` is {abs(diff):.4f} bits per byte "
            f"worse on wikitext-2.")


def mc_note(rows: list[dict], tasks: list[str], arms: list[str]) -> str:
    """Multiple-choice accuracies of the first two arms against two standard errors of their difference."""
    parts = []
    for task in tasks:
        acc = {arm: [r[task]["acc"] for r in rows if r["arm"] == arm and task in r] for arm in arms[:2]}
        n = [r[task]["n"] for r in rows if task in r]
        if not all(acc.values()) or not n:
            continue
        a, b = (statistics.mean(v) for v in acc.values())
        p = (a + b) / 2
        se = math.sqrt(2 * p * (1 - p) / max(1, min(n)))
        parts.append(f"{task} {a:.3f} vs {b:.3f} ({'beyond' if abs(a - b) > 2 * se else 'within'} 2 standard "
                     f"errors, ±{2 * se:.3f})")
    return ("Multiple choice, first two arms: " + "; ".join(parts) + ".") if parts else ""


# ---- the job

def ablate(opts: AblateOptions) -> dict:
    out = Path(opts.output)
    arms = arms_of(opts, out)
    paths = resolve_inputs(RunOptions(inputs=opts.inputs)) if any(a.config is not None for a in arms) else []
    own_folder(out, "ablation-run.json", "ablate", [*paths, *(a.spec for a in arms), opts.train_config,
                                                     opts.tokenizer or ""])
    check_tasks(opts.tasks)
    if not opts.seeds:
        raise ValueError("give at least one seed")
    probe = train_config(opts.train_config, train_sets(opts.train_set, out / "tokens", out / "probe", 1))
    steps, tokens = steps_for(opts.tokens, probe)
    tokenizer_dir = Path(opts.tokenizer) if opts.tokenizer else out / "tokenizer"
    if opts.tokenizer and not (tokenizer_dir / "tokenizer.model").is_file():
        raise FileNotFoundError(f"--tokenizer {opts.tokenizer}: no tokenizer.model there")
    names = ([f"curate {a.name}" for a in arms if a.config is not None] + ([] if opts.tokenizer else ["tokenizer"])
             + [f"tokenize {a.name}" for a in arms]
             + [f"{kind} {a.name} seed {s}" for a in arms for s in opts.seeds for kind in ("train", "eval")])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record = {"options": dataclasses.asdict(opts), "inputs": paths, "steps": steps, "tokens": tokens,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine()}
    rec = Recorder(out / "ablation-run.json", record, tuple(names))
    rec.save()                          # the folder is this command's from now on, even if a stage fails
    beam = list(opts.beam_args)
    for arm in arms:
        if arm.config is not None:
            rec.stage(f"curate {arm.name}", lambda arm=arm: curate_stage(paths, arm.dataset, arm.config, beam,
                                                                         opts.resume, opts.progress),
                      command_line("refinery", "curate", "--input", ",".join(opts.inputs) or "<sample crawl>", "--output",
                           arm.dataset, "--config", arm.spec))
    if not opts.tokenizer:
        rec.stage("tokenizer", lambda: tokenizer_stage([_data(arms[0].dataset)], tokenizer_dir, opts.vocab_size,
                                                       opts.resume),
                  command_line("refinery", "tokenizer", "train", "--input", _data(arms[0].dataset), "--vocab-size",
                       opts.vocab_size, "--output", tokenizer_dir))
    for arm in arms:
        rec.stage(f"tokenize {arm.name}", lambda arm=arm: tokenize_stage(arm.dataset, tokenizer_dir,
                                                                         out / arm.name / "tokens", beam, opts.resume),
                  command_line("refinery", "tokenize", "--input", arm.dataset, "--tokenizer", tokenizer_dir, "--output",
                       out / arm.name / "tokens"))
    rows = []
    for arm in arms:
        unique = json.loads((out / arm.name / "tokens" / "tokens.json").read_text())["tokens"]
        for seed in opts.seeds:
            run_dir = out / arm.name / f"seed-{seed}"
            sets = train_sets(opts.train_set, out / arm.name / "tokens", run_dir, steps, opts.progress,
                              extra=[f"run.seed={seed}", f"data.seed={seed}"])
            cfg = train_config(opts.train_config, sets)
            trained = rec.stage(f"train {arm.name} seed {seed}", lambda cfg=cfg: train_stage(cfg, opts.resume),
                                command_line("refinery", "train", "--config", opts.train_config,
                                     *[a for s in sets for a in ("--set", s)]))
            rec.stage(f"eval {arm.name} seed {seed}",
                      lambda run_dir=run_dir: eval_stage(run_dir, tokenizer_dir, run_dir / "eval.json",
                                                         list(opts.tasks), opts.eval_limit, opts.wikitext_bytes,
                                                         opts.resume, opts.progress),
                      command_line("refinery", "eval", "--model", run_dir, "--tasks", ",".join(opts.tasks), "--limit",
                           opts.eval_limit, "--text-bytes", opts.wikitext_bytes))
            results = json.loads((run_dir / "eval.json").read_text())
            rows.append({"arm": arm.name, "seed": seed, "documents": _kept(arm.dataset), "unique_tokens": unique,
                         "train_tokens": trained["tokens"], "passes": trained["tokens"] / max(1, unique),
                         "held_out_bpb": trained["held_out_bpb"], "run_dir": str(run_dir),
                         **{k: v for k, v in results.items() if not k.startswith("_")}})
    wikitext = {a.name: [r["wikitext"]["bpb"] for r in rows if r["arm"] == a.name and "wikitext" in r] for a in arms}
    mc = [t for t in opts.tasks if t != "wikitext"]
    result = {"arms": [{"name": a.name, "spec": a.spec, "dataset": str(a.dataset)} for a in arms],
              "tokens": tokens, "steps": steps, "seeds": list(opts.seeds), "rows": rows,
              "wikitext_bpb": {k: {"mean": statistics.mean(v), "values": v} for k, v in wikitext.items() if v},
              "seed_spread": seed_spread(wikitext) if all(wikitext.values()) else None,
              "verdict": verdict(wikitext, tokens) if all(wikitext.values()) else "no wikitext evaluation: no verdict",
              "mc_note": mc_note(rows, mc, [a.name for a in arms]),
              "stages": record["stages"], "machine": record["machine"],
              "wall_s": round(time.time() - started, 1)}
    result["table"] = markdown(result, mc)
    write_atomic(str(out / "ablation.json"), json.dumps(result, indent=1).encode())
    write_ablation_report(out, result, mc)
    return result


def _data(dataset: Path) -> Path:
    return dataset / "data" if (dataset / "data").is_dir() else dataset


def _kept(dataset: Path) -> int | None:
    stats = dataset / "stats.json"
    return json.loads(stats.read_text())["kept"] if stats.is_file() else None


def markdown(result: dict, mc: list[str]) -> str:
    head = (["arm", "seed", "documents", "unique tokens", "training tokens", "passes", "own held-out bpb",
             "wikitext-2 bpb"] + [f"{t} acc" for t in mc])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in result["rows"]:
        cells = [r["arm"], r["seed"], f"{r['documents']:,}" if r["documents"] is not None else "",
                 f"{r['unique_tokens']:,}", f"{r['train_tokens']:,}", f"{r['passes']:.2f}",
                 f"{r['held_out_bpb']:.4f}" if r["held_out_bpb"] else "",
                 f"{r['wikitext']['bpb']:.4f}" if "wikitext" in r else ""]
        cells += [f"{r[t]['acc']:.3f} ± {r[t]['acc_stderr']:.3f}" if t in r else "" for t in mc]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)



# ---- the verb

BEAM = True


def configure(parser) -> None:
    parser.description = ("FineWeb-style ablation: each ARM (a curation config, or an already curated dataset folder) "
                          "is curated, tokenized with one shared tokenizer, used to train the same model with the "
                          "same seed(s) on the same number of tokens, and evaluated (wikitext-2 bits per byte, "
                          "multiple choice). Writes DIR/ablation.md, ablation.json, ablation.png and report.html. "
                          "docs/run.md.")
    parser.epilog = BEAM_EPILOG
    add_options(parser, AblateOptions)


def main(args, beam_args: list[str]) -> int:
    opts = from_args(AblateOptions, args, beam_args=tuple(beam_args))
    result = ablate(opts)
    print(result["table"])
    print(f"[ablate] {result['verdict']}")
    print(f"[ablate] {opts.output}/ablation.md, ablation.json, ablation.png, report.html")
    return 0
