"""What the verbs share: the error for bad usage, the config options, Beam's epilog, default data paths.

Default data paths (the shared data folder's benchmarks, preference pairs, seed tasks) are resolved here, at
the command line's edge, and handed to `training/` as plain paths: training never looks for data on its own.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pipeline.shared_data import shared_data_dir

BEAM_EPILOG = ("Any other --option is passed to Apache Beam, e.g. --runner=DataflowRunner --project=P "
               "--region=R --temp_location=gs://B/tmp --sdk_container_image=IMAGE, or --direct_num_workers=N. "
               "Default: the DirectRunner in multi_processing mode with one worker per core.")

HH_RLHF = ("preference/hh-rlhf/harmless-base/test.jsonl.gz", "preference/hh-rlhf/helpful-base/test.jsonl.gz",
           "preference/hh-rlhf/helpful-online/test.jsonl.gz",
           "preference/hh-rlhf/helpful-rejection-sampled/test.jsonl.gz")
SEED_TASKS = "sft/self_instruct_seed_tasks.jsonl"
ALPACA = "sft/alpaca_data_1k.json"


class UsageError(ValueError):
    """A bad combination of options or a bad value: the message says what was expected."""


class StageError(RuntimeError):
    """A stage of `refinery run` / `ablate` failed after work began; the message names it (exit 1)."""


def add_config_options(parser: argparse.ArgumentParser, example: str, what: str = "YAML config") -> None:
    """--config FILE and --set section.key=value, the one config dialect of every verb that has a config."""
    parser.add_argument("--config", metavar="FILE", help=what)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key, e.g. {example}; repeatable")


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']."""
    return [part.strip() for part in text.split(",") if part.strip()]


def shared_paths(relative: tuple[str, ...] | list[str]) -> list[str]:
    """Paths of files in the shared data folder."""
    root = shared_data_dir()
    return [str(root / p) for p in relative]


def dataset_data(path: str) -> str:
    """A curated dataset folder's `data/` (the folder itself when it is already `data/` or a Parquet file)."""
    folder = Path(path)
    return str(folder / "data") if (folder / "data").is_dir() else str(folder)


MODELS = ("one of our runs or checkpoints, a Hugging Face Llama folder or a GGUF file (its own chat template; "
          "the result also as an HF folder, RUN/model)")


def add_run_options(parser, model_help: str = MODELS) -> None:
    """--model, --output, --resume, --overwrite, --lora and --merge of the post-training verbs."""
    parser.add_argument("--model", metavar="MODEL", help=f"the model to start from: {model_help}")
    parser.add_argument("--output", metavar="DIR", help="the run folder to write")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue a killed run from its last intact checkpoint (its saved config, then --set)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in --output (only the files its manifest lists are removed)")
    parser.add_argument("--lora", action="store_true",
                        help="train LoRA adapters only (peft; --set lora.rank=16 lora.alpha=32 lora.dropout=0 "
                             "lora.targets=[q,k,v,o,gate,up,down]); they are saved alone in RUN/adapter")
    parser.add_argument("--merge", action="store_true",
                        help="with --lora: also save the model with the adapters merged in (RUN/model, an HF folder)")


def saved_config(run_dir: str, loader, sets: list[str] = ()):
    """The config a run folder saved (RUN/config.json) through `loader`, with --set overrides: for --resume. A
    file that is not JSON, or a run another verb made, is an error naming the folder. The saved run.stop_at_step
    is not carried: it stopped the run being resumed (a resume stopped at once, exit 0, having done nothing); one
    given again with --set applies."""
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json (not a run folder to resume)")
    try:
        base = json.loads(saved.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{saved}: not readable JSON ({e})") from None
    if not isinstance(base, dict):
        raise ValueError(f"{saved}: expected a JSON object of config sections")
    try:
        return loader(None, ["run.stop_at_step=0", *sets, f"run.out_dir={run_dir}"], base=base)
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{run_dir}: its config.json does not fit this command (a run another verb made?): "
                         f"{str(e)[:160]}") from None


def run_config(loader, args, overrides: list[str]):
    """A fresh run's config (--config, the flags as `overrides`), or a resumed run's saved config.json, then --set."""
    if args.resume:
        return saved_config(args.resume, loader, args.set)
    if not args.model or not args.output:
        raise UsageError("give --model and --output (or --resume RUN_DIR)")
    if getattr(args, "merge", False) and not args.lora:
        raise UsageError("--merge merges LoRA adapters: give --lora too")
    flags = [*(["run.overwrite=true"] if args.overwrite else []),
             *(["lora.enabled=true"] if getattr(args, "lora", False) else []),
             *(["lora.merge=true"] if getattr(args, "merge", False) else [])]
    return loader(args.config, [*overrides, *flags])


# ---- argument types: a bad number is `argument --X: expected ..., got ...` (exit 2), never a traceback

def _number(kind, test, expected: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    parse.__name__ = expected
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a number > 0")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a number >= 0")
seed = _number(int, lambda v: 0 <= v < 2 ** 63, "a seed from 0 to 2**63 - 1")    # what torch's generators take
unit_interval = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
open_unit_interval = _number(float, lambda v: 0 < v < 1, "a number in (0, 1)")
port_number = _number(int, lambda v: 0 <= v <= 65535, "a port number 0-65535")
at_least_two = _number(int, lambda v: v >= 2, "an integer >= 2")


def text(value: str) -> str:
    """Text from the command line, which must be UTF-8 (a path may be any bytes; a prompt or a name may not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not valid UTF-8: {value.encode('utf-8', 'surrogateescape')!r}") from None
    return value
