"""`refinery run`: the main job end to end, crawl to report, in one process.

```
refinery run                                            # configs/sample.yaml on the sample crawl -> out/run/report.html
refinery run configs/sample.yaml --output out/run --steps 100 --eval-limit 50
refinery run --crawl CC-MAIN-2024-22 --warc-files 2 --output out/cc-run      # needs network
refinery run --resume --output out/run                  # keep the stages whose outputs are complete
```
Six stages, each the function its own command runs: quality model (`refinery quality train`, reused when the
file exists), curate, tokenizer train, tokenize, train, eval. Each writes under DIR (`curated/`, `tokenizer/`,
`tokens/`, `train/`, `eval.json`); `run.json` keeps the timings, the equivalent commands and the machine, and
`report.html` (pipeline/app/report.py) is drawn from those files alone. Without `--resume` every stage runs afresh.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import apache_beam
import torch

from filters.quality import DEFAULT_NEGATIVES, DEFAULT_POSITIVES
from pipeline import quality
from pipeline.app.common import BEAM_EPILOG, StageError
from pipeline.app.options import add_options, from_args, option
from pipeline.app.report import write_run_report
from pipeline.commoncrawl import CC_BASE, resolve_crawl
from pipeline.config import load_config
from pipeline.curate import curate, expand_inputs, remove_dataset
from pipeline.dataset import write_atomic
from pipeline.shared_data import shared_data_dir
from pipeline.tokenize import tokenize
from training.artifacts import ArtifactError, refuse_own_input
from training.checkpoint import latest_checkpoint
from training.eval.evaluate import markdown_table, run_eval
from training.eval.tasks import load_task
from training.pretrain import load_train_config, pretrain
from training.tokenizer import CONFIG_FILE, MODEL_FILE, Tokenizer, TokenizerConfig, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ("quality", "curate", "tokenizer", "tokenize", "train", "eval")


@dataclass(frozen=True)
class RunOptions:
    config: str = option("configs/sample.yaml", "curation config", positional="?", metavar="CONFIG")
    output: str = option("out/run", "run folder", metavar="DIR")
    inputs: tuple[str, ...] = option((), "WARC files to curate (default: the sample crawl in the shared data folder)",
                                     flag="--input", metavar="GLOB[,GLOB]", repeat=True)
    crawl: str = option("", "curate a Common Crawl crawl instead (network)", metavar="CC-MAIN-YYYY-WW")
    warc_files: int = option(1, "with --crawl: how many WARC files", metavar="N")
    cc_base: str = option("", "with --crawl: where Common Crawl is read from", metavar="URL")
    quality_model: str = option("out/models/quality.bin", "fastText quality model; trained there first if missing",
                                metavar="MODEL.bin")
    quality: bool = option(True, "curate without the quality classifier")
    train_config: str = option("configs/train-sample.yaml", "the model and optimiser", metavar="FILE")
    train_set: tuple[str, ...] = option((), "override a train config key, e.g. --set model.dim=128; repeatable",
                                        flag="--set", metavar="KEY=VALUE", repeat=True)
    steps: int = option(200, "training steps (200 x 16 x 256 = 0.8 M tokens: ~4.5 min on 2 CPU cores)", metavar="N")
    vocab_size: int = option(8000, "tokenizer pieces (BENCHMARKS.md#tokenizer: 8k suit the 9 MB sample)", metavar="N")
    tasks: tuple[str, ...] = option(("wikitext", "arc_easy", "piqa", "hellaswag"), "evaluation tasks")
    eval_limit: int = option(100, "items per multiple-choice task (~±0.05 standard error, ~1 min in all)",
                             metavar="N")
    wikitext_bytes: int = option(300_000, "wikitext-2 bits per byte on its first B bytes (of 1.3 MB)", metavar="B")
    resume: bool = option(False, "keep the stages whose outputs in DIR are complete (default: every stage afresh)")
    progress: bool = option(True, "no progress bars")
    beam_args: tuple[str, ...] = ()       # the options `refinery` does not know, handed to Beam

    def __post_init__(self):
        for name in ("warc_files", "steps", "vocab_size", "eval_limit", "wikitext_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


def find_file(path: str) -> Path:
    """`path` as given, else relative to the repository (so `refinery run` finds configs/ from anywhere)."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    beside = REPO_ROOT / path
    return beside if beside.exists() else given


def sample_crawl() -> str:
    return str(shared_data_dir() / "warc" / "sample-crawl" / "*.warc.gz")


def resolve_inputs(opts: RunOptions) -> list[str]:
    """The WARC paths the run reads (errors before any work: a missing file, an unknown crawl)."""
    if opts.crawl and opts.inputs:
        raise ValueError("give --input or --crawl, not both")
    if opts.crawl:
        return resolve_crawl(opts.crawl, opts.warc_files, opts.cc_base or CC_BASE)
    return expand_inputs(list(opts.inputs) or [sample_crawl()])


def curate_config(path: str, quality_model: str = ""):
    cfg = load_config(find_file(path))
    if quality_model:
        cfg = dataclasses.replace(cfg, stages=tuple(dict.fromkeys([*cfg.stages, "quality"])),
                                  quality=dataclasses.replace(cfg.quality, model_path=quality_model))
    return cfg


def train_sets(train_set, tokens_dir: Path, out_dir: Path, steps: int, progress: bool = True,
               extra: list[str] = ()) -> list[str]:
    """`--set` overrides of the train config: the user's, then the run's own folders and step count."""
    return [*train_set, *extra, f"data.tokens={tokens_dir}", f"run.out_dir={out_dir}", f"run.steps={steps}",
            *([] if progress else ["run.progress=false"])]


def train_config(path: str, sets: list[str]):
    return load_train_config(find_file(path), sets)


def machine() -> dict:
    """What ran it: CPU, cores, memory, GPU, versions, the commit."""

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "apache_beam": apache_beam.__version__,
            "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU only)"}
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
            break
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal"):
            info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    try:
        git = ["git", "-C", str(REPO_ROOT)]
        info["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10).stdout
        info["uncommitted_changes"] = bool(dirty.strip())
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


_RECORD_KEYS = ("options", "started", "machine", "stages")     # what every run.json / ablation-run.json holds


def check_tasks(tasks) -> None:
    """Every evaluation task can be loaded: an unknown name is an error before anything trains, not after."""
    for name in tasks:
        if name != "wikitext":
            load_task(name, shared_data_dir(), limit=1)


def own_folder(out: Path, marker: str, what: str, inputs: list[str] = ()) -> None:
    """Refuse an output folder that holds or is one of `inputs`, or that holds something and is not one of this
    command's (its `marker` file is not a record this command wrote). Stages then replace only what they wrote
    (the files their manifests list), and never touch anything else."""
    refuse_own_input(out, [p for p in inputs if "://" not in p])
    if not out.exists() or out.is_dir() and not any(out.iterdir()):
        return
    record = None
    if out.is_dir() and (out / marker).is_file():
        try:
            record = json.loads((out / marker).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            pass
    if not isinstance(record, dict) or not all(key in record for key in _RECORD_KEYS):
        raise ArtifactError(f"{out}: not empty and not a folder `refinery {what}` wrote (no {marker} of its own); "
                            f"nothing there is touched: choose an empty or new folder")


def command_line(*parts) -> str:
    return " ".join(shlex.quote(str(p)) for p in parts)


class Recorder:
    """Runs stages in order, prints `[run] i/n name ... s`, and keeps DIR/run.json up to date."""

    def __init__(self, path: Path, record: dict, names: tuple[str, ...], previous: dict | None = None):
        self.path, self.record, self.names = path, record, names
        self.previous = previous or {}          # run.json's stages of the run this one resumes
        self.record.setdefault("stages", {})

    def stage(self, name: str, fn, command: str = ""):
        index = self.names.index(name) + 1
        print(f"[run] {index}/{len(self.names)} {name} ...", flush=True)
        started = time.monotonic()
        try:
            status, summary = fn()
        except StageError:
            raise
        except Exception as e:      # any failure: say which stage, keep the cause
            raise StageError(f"stage {index}/{len(self.names)} {name} failed: {type(e).__name__}: {e}") from e
        seconds = round(time.monotonic() - started, 1)
        entry = {"status": status, "seconds": seconds, "command": command, **(summary or {})}
        before = self.previous.get(name, {})
        if status == "reused" and before.get("status") in ("ran", "resumed", "reused") and "seconds" in before:
            # the time of the run that produced the output, not of this check
            entry.update(seconds=before["seconds"], checked_s=seconds)
            print(f"[run] {index}/{len(self.names)} {name} reused (made in {before['seconds']:.0f} s by an "
                  f"earlier run)", flush=True)
        else:
            print(f"[run] {index}/{len(self.names)} {name} {status} in {seconds:.0f} s", flush=True)
        self.record["stages"][name] = entry
        self.save()
        return summary

    def save(self) -> None:
        write_atomic(str(self.path), json.dumps(self.record, indent=1).encode())


def _previous_stages(path: Path) -> dict:
    """The stages an earlier run recorded in run.json (none if it is missing or unreadable)."""
    try:
        return json.loads(path.read_text()).get("stages", {}) if path.is_file() else {}
    except (ValueError, OSError):
        return {}


# ---- the stages (each returns (status, summary); status: ran, reused or resumed)

def quality_stage(model_path: str) -> tuple[str, dict]:
    if Path(model_path).is_file():
        return "reused", {"model": model_path}
    result = quality.train_classifier(list(DEFAULT_POSITIVES), list(DEFAULT_NEGATIVES), model_path,
                                      quality.ClassifierConfig())
    return "ran", {"model": model_path, "holdout_auc": result.holdout.get("auc")}


def curate_stage(paths: list[str], out: Path, cfg, beam_args, resume: bool, progress: bool) -> tuple[str, dict]:
    if not resume:
        remove_dataset(out)
    result = curate(paths, str(out), cfg, list(beam_args), progress=progress)
    if result.funnel["kept"] == 0:
        raise ValueError(f"no document of {len(paths)} input files was kept: nothing to train on")
    status = "reused" if result.skipped_complete == result.inputs else "ran"
    return status, {"records_in": result.funnel["records_in"], "kept": result.funnel["kept"],
                    "balanced": result.funnel["balanced"], "inputs": result.inputs}


def tokenizer_stage(datasets: list[Path], out: Path, vocab_size: int, resume: bool) -> tuple[str, dict]:
    if resume and (out / MODEL_FILE).is_file() and (out / CONFIG_FILE).is_file():
        info = json.loads((out / CONFIG_FILE).read_text())
        if info["config"]["vocab_size"] == vocab_size:
            return "reused", {"vocab_size": vocab_size, "documents": info["documents"]}
    info = train_tokenizer([str(d) for d in datasets], str(out), TokenizerConfig(vocab_size=vocab_size),
                           overwrite=True)       # replaces the files an earlier tokenizer's manifest lists, only
    return "ran", {"vocab_size": vocab_size, "documents": info["documents"]}


def tokenize_stage(dataset: Path, tokenizer_dir: Path, out: Path, beam_args, resume: bool) -> tuple[str, dict]:
    summary = out / "tokens.json"
    if resume and summary.is_file():
        done = json.loads(summary.read_text())
        if done["tokenizer_sha256"] == Tokenizer(str(tokenizer_dir)).sha256:
            return "reused", {"tokens": done["tokens"]}
    result = tokenize(str(dataset), str(tokenizer_dir), str(out), list(beam_args), overwrite=True)
    return "ran", {"tokens": result["tokens"], "domains": len(result["domains"])}


def train_stage(cfg, resume: bool) -> tuple[str, dict]:
    out = Path(cfg.run.out_dir)
    done = out / "summary.json"
    if resume and done.is_file() and json.loads(done.read_text()).get("steps") == cfg.run.steps:
        summary, status = json.loads(done.read_text()), "reused"
    elif resume and out.is_dir() and latest_checkpoint(out) is not None:
        summary, status = pretrain(cfg, resume=True), "resumed"
    else:
        summary, status = pretrain(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, overwrite=True))), "ran"
    final = summary.get("final_eval") or {}
    return status, {"steps": summary["steps"], "tokens": summary["tokens"], "params": summary.get("params"),
                    "held_out_bpb": final.get("bpb"), "unigram_bpb": summary.get("unigram_bpb")}


def eval_stage(model_dir: Path, tokenizer_dir: Path, out: Path, tasks: list[str], limit: int, text_bytes: int,
               resume: bool, progress: bool) -> tuple[str, dict]:
    """`refinery eval` of the run's model; each multiple-choice task also gets its chance level."""
    if resume and out.is_file():
        done = json.loads(out.read_text())
        if done.get("_meta", {}).get("limit") == limit and all(t in done for t in tasks):
            return "reused", _eval_summary(done)
    data = shared_data_dir()
    results = run_eval(str(model_dir), tasks, data, limit=limit, tokenizer=str(tokenizer_dir),
                       text_bytes=text_bytes, progress=progress)
    for name in tasks:
        if name != "wikitext" and "acc" in results[name]:
            items = load_task(name, data, limit=limit).items
            results[name]["chance"] = sum(1 / len(i.requests) for i in items) / max(1, len(items))
    results["_meta"]["text_bytes"] = text_bytes
    write_atomic(str(out), json.dumps(results, indent=1).encode())
    write_atomic(str(out.with_suffix(".md")), (markdown_table(results) + "\n").encode())
    return "ran", _eval_summary(results)


def _eval_summary(results: dict) -> dict:
    return {"metrics": {k: round(v.get("bpb", v.get("acc", float("nan"))), 4)
                        for k, v in results.items() if not k.startswith("_")}}


# ---- the job

def run(opts: RunOptions, argv: list[str] = ()) -> dict:
    """Every stage in order (skipping complete ones under `resume`); then DIR/report.html. Returns run.json's
    record. Raises ValueError / FileNotFoundError / ConfigError before any work, StageError during it."""
    out = Path(opts.output)
    quality_model = opts.quality_model if opts.quality else ""
    cfg = curate_config(opts.config, quality_model)             # bad config, missing input: fail before work
    paths = resolve_inputs(opts)
    own_folder(out, "run.json", "run", [*paths, opts.config, opts.train_config, quality_model])
    check_tasks(opts.tasks)
    sets = train_sets(opts.train_set, out / "tokens", out / "train", opts.steps, opts.progress)
    train_cfg = train_config(opts.train_config, sets)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    record = {"command": command_line("refinery", "run", *argv), "options": dataclasses.asdict(opts),
              "inputs": paths, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
              "machine": machine()}
    previous = _previous_stages(out / "run.json") if opts.resume else {}
    rec = Recorder(out / "run.json", record, STAGES, previous)
    rec.save()
    beam = list(opts.beam_args)
    inputs_cmd = (["--crawl", opts.crawl, "--warc-files", opts.warc_files] if opts.crawl else
                  ["--input", ",".join(opts.inputs) or sample_crawl()])
    if opts.quality:
        rec.stage("quality", lambda: quality_stage(quality_model),
                  command_line("refinery", "quality", "train", "--output", quality_model))
    else:
        record["stages"]["quality"] = {"status": "off", "seconds": 0.0, "command": ""}
        print(f"[run] 1/{len(STAGES)} quality off (--no-quality)", flush=True)
    rec.stage("curate", lambda: curate_stage(paths, out / "curated", cfg, beam, opts.resume, opts.progress),
              command_line("refinery", "curate", *inputs_cmd, "--output", out / "curated", "--config", opts.config,
                   *(["--quality-model", quality_model] if quality_model else []), *beam))
    rec.stage("tokenizer", lambda: tokenizer_stage([out / "curated" / "data"], out / "tokenizer", opts.vocab_size,
                                                   opts.resume),
              command_line("refinery", "tokenizer", "train", "--input", out / "curated" / "data", "--vocab-size",
                   opts.vocab_size, "--output", out / "tokenizer"))
    rec.stage("tokenize", lambda: tokenize_stage(out / "curated", out / "tokenizer", out / "tokens", beam,
                                                 opts.resume),
              command_line("refinery", "tokenize", "--input", out / "curated", "--tokenizer", out / "tokenizer",
                   "--output", out / "tokens", *beam))
    rec.stage("train", lambda: train_stage(train_cfg, opts.resume),
              command_line("refinery", "train", "--config", opts.train_config, *[a for s in sets for a in ("--set", s)]))
    rec.stage("eval", lambda: eval_stage(out / "train", out / "tokenizer", out / "eval.json", list(opts.tasks),
                                         opts.eval_limit, opts.wikitext_bytes, opts.resume, opts.progress),
              command_line("refinery", "eval", "--model", out / "train", "--tasks", ",".join(opts.tasks), "--limit",
                   opts.eval_limit, "--text-bytes", opts.wikitext_bytes, "--output", out / "eval.json"))
    record["wall_s"] = round(time.time() - started, 1)
    record["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    rec.save()
    t0 = time.monotonic()
    try:
        write_run_report(out)
    except Exception as e:
        raise StageError(f"report failed: {type(e).__name__}: {e}") from e
    record["report_s"] = round(time.monotonic() - t0, 1)
    rec.save()
    return record


# ---- the verb

BEAM = True


def configure(parser) -> None:
    parser.description = ("Curate the sample crawl (or --input / --crawl) with CONFIG and the quality model (trained "
                          "with `refinery quality train`'s defaults when MODEL.bin is missing), train a tokenizer, "
                          "tokenize, pretrain a small model, evaluate it, and write DIR/report.html (funnel, drops, "
                          "domain mix, loss curve, evaluation, commands, timings, machine). docs/run.md.")
    parser.epilog = BEAM_EPILOG
    add_options(parser, RunOptions)


def main(args, beam_args: list[str]) -> int:
    opts = from_args(RunOptions, args, beam_args=tuple(beam_args))
    argv = sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv[1:] else []     # for the report
    record = run(opts, argv)
    stages = record["stages"].values()
    reused = " (reused stages: the time of the run that made them)" if any(s["status"] == "reused" for s in stages) \
        else ""
    print("[run] " + ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in record["stages"].items()) +
          f"{reused}; this run {record['wall_s']:.0f} s")
    print(f"[run] report: {opts.output}/report.html")
    return 0 if record["stages"]["curate"].get("balanced", True) else 3
