"""Options shared by the verbs that read preference pairs (`refinery reward`, `refinery dpo`)."""
from __future__ import annotations

import dataclasses
import json

from pipeline.app.common import HH_RLHF, add_config_options, add_run_options, run_config, shared_paths


def add_preference_options(parser, example: str) -> None:
    add_run_options(parser)
    parser.add_argument("--pairs", action="append", default=[], metavar="FILE.jsonl[.gz]",
                        help="preference pairs (repeatable; default hh-rlhf's four test files from the shared data)")
    add_config_options(parser, example, "YAML with the sections of --set")


def preference_config(loader, args):
    """The config from the flags (and --config / --resume); without pairs anywhere, hh-rlhf's test files."""
    flags = [f"model={args.model}", f"run.out_dir={args.output}"]
    if args.pairs:
        flags.append("data.pairs=" + json.dumps(args.pairs))
    cfg = run_config(loader, args, [*flags, *args.set])
    if not cfg.data.pairs:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, pairs=tuple(shared_paths(HH_RLHF))))
    return cfg
