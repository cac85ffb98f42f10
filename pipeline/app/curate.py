"""`refinery curate`: WARC files -> curated dataset (pipeline/curate.py), the funnel printed at the end.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
refinery curate --crawl CC-MAIN-2024-22 --warc-files 2 --output out/cc
refinery curate --input 'gs://b/*.warc.gz' --output gs://b/out --runner=DataflowRunner --project=P ...
```
"""
from __future__ import annotations

import dataclasses
import logging

from pipeline import corpus
from pipeline.app.common import BEAM_EPILOG, UsageError, add_config_options, positive_int
from pipeline.commoncrawl import CC_BASE, resolve_crawl
from pipeline.config import load_config
from pipeline.curate import active_stages, curate, dedup_stages, expand_inputs
from pipeline.dataset import format_funnel

BEAM = True


def configure(parser) -> None:
    parser.description = ("Read WARC files, extract main text, filter, deduplicate and write a Parquet dataset with "
                          "stats.json (every record in accounted for: kept, skipped, dropped or errored).")
    parser.epilog = BEAM_EPILOG
    source = parser.add_argument_group("input (one of)")
    source.add_argument("--input", action="append", default=[], metavar="GLOB[,GLOB]",
                        help="WARC files: local paths or globs, gs://, s3://, https://; repeatable")
    source.add_argument("--crawl", metavar="CC-MAIN-YYYY-WW", help="a Common Crawl crawl by name")
    source.add_argument("--warc-files", type=positive_int, default=1, metavar="N",
                        help="with --crawl: how many of its WARC files (default 1)")
    source.add_argument("--cc-base", default=None, metavar="URL",
                        help="with --crawl: where Common Crawl is read from (default https://data.commoncrawl.org/)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder (local, gs://, s3://)")
    add_config_options(parser, "--set c4.min_sentences=2 --set 'stages=[url,language,c4]'",
                       "YAML run config (default: built-in defaults; configs/sample.yaml documents every key)")
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


def curate_config(args):
    """The config the flags and the file say, with the flags as shorthands for config keys."""
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
    return cfg


def main(args, beam_args: list[str]) -> int:
    if bool(args.input) == bool(args.crawl):
        raise UsageError("give --input or --crawl (one of them)")
    if args.warc_files < 1:
        raise UsageError(f"--warc-files must be >= 1, got {args.warc_files}")
    cfg = curate_config(args)
    stages = [stage.name for stage in active_stages(cfg)]
    paths = resolve_crawl(args.crawl, args.warc_files, args.cc_base or CC_BASE) if args.crawl \
        else expand_inputs(args.input)
    try:
        result = curate(paths, args.output.rstrip("/"), cfg, beam_args, progress=not args.no_progress)
    except (FileNotFoundError, ValueError):   # a missing word list or model; Beam's option checks (Dataflow's
        logging.getLogger(__name__).info("curate failed", exc_info=True)        # project, region, temp_location)
        raise
    print(format_funnel(result.funnel, stages))
    print(corpus.summary(result.funnel["corpus"]))
    print(f"[curate] {result.inputs} input files ({result.skipped_complete} already complete), "
          f"{result.funnel['kept']:,} documents kept, {result.wall_s:.1f} s; stats in {args.output}/stats.json")
    return 0 if result.funnel["balanced"] else 3
