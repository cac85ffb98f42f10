"""`refinery label serve | stats`: the preference labeling page and its statistics (training/post/label.py).

```
refinery label serve --prompts ../shared/data/sft/vicuna_bench_questions.jsonl --model out/sft --output out/pairs.jsonl
refinery label stats out/pairs.jsonl
```
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipeline.app.common import UsageError, non_negative_float, port_number, positive_int, seed, text, unit_interval
from training.artifacts import jsonl_with, prepare_file, refuse_own_input
from training.post.label import (
    DEFAULT_GUIDELINES,
    LOOPBACK,
    JudgementLog,
    create_app,
    format_stats,
    generate_items,
    label_stats,
    read_items,
    read_judgements,
    read_prompts,
    serve,
    write_items,
)


def configure(parser) -> None:
    parser.description = ("Human preference collection for `refinery reward` and `refinery dpo`: a web page shows an "
                          "instruction and two responses; each judgement is appended at once to a JSONL pairs file "
                          "(docs/label.md).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve_ = actions.add_parser(
        "serve", help="serve the labeling page",
        description="Serve the labeling page: the instruction, two responses in a random left/right order (fixed "
                    "per item and labeler), the guidelines, and buttons Left better [1] / Right better [2] / "
                    "Tie [3] / Skip [s] / Undo [u]. Progress and resume come from OUTPUT: items this labeler "
                    "already judged are not shown again.",
        epilog="Several labelers on one server: give each the URL with ?labeler=NAME. Responses file rows: "
               '{"prompt", "a", "b"} or {"prompt", "responses": [a, b]}, optional "id".')
    source = serve_.add_argument_group("items (one of)")
    source.add_argument("--prompts", metavar="PROMPTS.jsonl",
                        help="instructions (prompt / instruction+input / turns / question rows), answered twice "
                             "by --model")
    source.add_argument("--responses", metavar="RESPONSES.jsonl", help="pre-generated pairs of responses")
    serve_.add_argument("--model", metavar="RUN_OR_CHECKPOINT",
                        help="with --prompts: our run (e.g. out/sft) that samples two responses per prompt; they "
                             "are saved to OUTPUT's stem + .responses.jsonl (reuse with --responses)")
    serve_.add_argument("--output", required=True, metavar="PAIRS.jsonl", help="judgements are appended here")
    serve_.add_argument("--guidelines", metavar="FILE", help="guidelines text shown on the page (default: built in)")
    serve_.add_argument("--labeler", type=text, default=None, metavar="NAME",
                        help="default labeler name (default: $USER)")
    serve_.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token)")
    serve_.add_argument("--port", type=port_number, default=8765, help="0 picks a free port (default 8765)")
    serve_.add_argument("--token", type=text, metavar="T", help="access token, required when --host is not loopback")
    serve_.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N",
                        help="with --model (default 256)")
    serve_.add_argument("--temperature", type=non_negative_float, default=0.9, metavar="T",
                        help="with --model (default 0.9)")
    serve_.add_argument("--top-p", type=unit_interval, default=0.95, metavar="P", help="with --model (default 0.95)")
    serve_.add_argument("--seed", type=seed, default=0, help="response seeds are SEED + 2i and SEED + 2i + 1")
    serve_.add_argument("--generate-only", action="store_true",
                        help="with --model: write the responses file and exit")
    stats = actions.add_parser("stats", help="inter-labeler agreement (Cohen's kappa) and position bias",
                               description="Cohen's kappa between each pair of labelers on the items both judged "
                                           "(categories: response a better / b better / tie, whatever the screen "
                                           "side; skips left out) and the share of decisive judgements that "
                                           "picked the left response, with a two-sided binomial test.")
    stats.add_argument("files", nargs="+", metavar="PAIRS.jsonl")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")


def main(args, beam_args: list[str]) -> int:
    return serve_main(args) if args.action == "serve" else stats_main(args)


def serve_main(args) -> int:
    if bool(args.prompts) == bool(args.responses) or bool(args.model) != bool(args.prompts):
        raise UsageError("give --prompts with --model, or --responses")
    if args.host not in LOOPBACK and not args.token:
        raise UsageError(f"--host {args.host} is reachable from other machines; give --token "
                         "(e.g. --token $(python -c 'import secrets; print(secrets.token_urlsafe())'))")
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"--output {output} is a folder; give the JSONL file the judgements go to")
    if not output.parent.is_dir():
        raise UsageError(f"--output {output}: its folder {output.parent} does not exist")
    inputs = [args.responses or "", args.prompts or "", args.guidelines or ""]
    refuse_own_input(output, inputs)
    saved = output.with_name(output.name.removesuffix(".jsonl") + ".responses.jsonl")
    if args.model:              # the responses it samples are saved beside the output: checked before the model runs
        prepare_file(saved, [*inputs, args.model], jsonl_with("id", "prompt", "a", "b"), "responses file")
    guidelines = Path(args.guidelines).read_text(encoding="utf-8") if args.guidelines else DEFAULT_GUIDELINES
    if args.model:
        prompts = read_prompts(args.prompts)
        items = generate_items(prompts, args.model, args.max_new_tokens, args.temperature, args.top_p, args.seed,
                               progress=lambda i, n: print(f"\r[label] generating responses {i}/{n}", end="",
                                                           file=sys.stderr, flush=True))
        print(file=sys.stderr)
        write_items(items, saved)
        print(f"[label] {len(items)} items -> {saved} (next time: --responses {saved})")
        if args.generate_only:
            return 0
    else:
        items = read_items(args.responses)
    log = JudgementLog(output)
    log.rows()                             # a damaged file is reported now, not on the first click
    app = create_app(items, log, guidelines, args.labeler or os.environ.get("USER") or "anonymous", args.token)
    with log.exclusive():
        query = f"?token={args.token}" if args.token else ""
        host = f"[{args.host}]" if ":" in args.host else args.host
        serve(app, args.host, args.port, on_ready=lambda port: print(
            f"[label] {len(items)} items; judgements -> {output}\n[label] open http://{host}:{port}/{query} "
            f"(Ctrl-C stops)", flush=True))
    return 0


def stats_main(args) -> int:
    stats = label_stats(read_judgements(args.files))
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0
