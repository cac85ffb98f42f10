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
    parser.add_argument("--config", metavar="FILE", help="YAML run config (default: built-in defaults)")
    parser.add_argument("--write-rejected", action="store_true",
                        help="also write dropped documents with their reason under DIR/rejected/<stage>/")
    parser.add_argument("--no-dedup", action="store_true",
                        help="skip deduplication (URL, exact text and MinHash near-duplicates); the config's "
                             "stages.*_dedup switches turn parts off one by one")
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
    if beam_args:
        print(f"refinery domains: unknown option(s) {' '.join(beam_args)}", file=sys.stderr)
        return 2
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
    if beam_args:
        print(f"refinery tokenizer: unknown option(s) {' '.join(beam_args)}", file=sys.stderr)
        return 2
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
    if beam_args:
        print(f"refinery quality: unknown option(s) {' '.join(beam_args)}", file=sys.stderr)
        return 2
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
    from pipeline.curate import active_stages, curate, expand_inputs
    from pipeline.dataset import format_funnel

    if bool(args.input) == bool(args.crawl):
        print("refinery curate: give --input or --crawl (one of them)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        if args.write_rejected:
            cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, write_rejected=True))
        if args.quality_model:
            cfg = dataclasses.replace(cfg, stages=dataclasses.replace(cfg.stages, quality=True),
                                      quality=dataclasses.replace(cfg.quality, model_path=args.quality_model))
        if args.domain_model:
            cfg = dataclasses.replace(cfg, mix=dataclasses.replace(cfg.mix, domain_model=args.domain_model))
        if args.no_dedup:
            cfg = dataclasses.replace(cfg, stages=dataclasses.replace(
                cfg.stages, url_dedup=False, exact_dedup=False, minhash_dedup=False, line_dedup=False))
        if args.crawl:
            paths = resolve_crawl(args.crawl, args.warc_files, args.cc_base or CC_BASE)
        else:
            paths = expand_inputs(args.input)
    except (ConfigError, FileNotFoundError, ValueError, OSError) as e:
        print(f"refinery curate: {e}", file=sys.stderr)
        return 2
    try:
        result = curate(paths, args.output.rstrip("/"), cfg, beam_args, progress=not args.no_progress)
    except FileNotFoundError as e:     # a word list or model the config names is missing
        print(f"refinery curate: {e}", file=sys.stderr)
        return 2
    print(format_funnel(result.funnel, active_stages(cfg)))
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
    if beam_args:
        print(f"refinery train: unknown option(s) {' '.join(beam_args)}", file=sys.stderr)
        return 2
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
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args, rest)


if __name__ == "__main__":
    sys.exit(main())
