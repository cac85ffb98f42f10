"""`refinery`: the command line of webrefinery.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
refinery curate --crawl CC-MAIN-2024-22 --warc-files 2 --output out/cc
refinery curate --help
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
    parser.add_argument("--no-progress", action="store_true", help="do not print progress while running")
    parser.set_defaults(handler=_run_curate)
    return parser


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description="webrefinery: web crawl -> curated dataset -> "
                                                                  "trained model")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (Beam included)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _curate_parser(sub)
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
