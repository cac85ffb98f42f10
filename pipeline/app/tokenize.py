"""`refinery tokenize`: a curated dataset -> token shards per domain, on Beam (pipeline/tokenize.py).

```
refinery tokenize --input out/sample --tokenizer out/tokenizer --output out/tokens
```
"""
from __future__ import annotations

from pipeline.app.common import BEAM_EPILOG
from pipeline.tokenize import tokenize

BEAM = True


def configure(parser) -> None:
    parser.description = ("Encode a curated dataset into token shards (header + uint16/uint32 tokens, EOS between "
                          "documents), one set per domain, each with an index of token ranges back to documents; "
                          "mixing's repeats are written out.")
    parser.epilog = BEAM_EPILOG
    parser.add_argument("--input", required=True, metavar="DATASET_DIR", help="a curated dataset (or its data/)")
    parser.add_argument("--tokenizer", required=True, metavar="TOK_DIR", help="from `refinery tokenizer train`")
    parser.add_argument("--output", required=True, metavar="TOKENS_DIR")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier token folder there (only the files its manifest lists are removed)")


def main(args, beam_args: list[str]) -> int:
    result = tokenize(args.input.rstrip("/"), args.tokenizer, args.output.rstrip("/"), beam_args,
                      overwrite=args.overwrite)
    for domain, d in result["domains"].items():
        print(f"[tokenize] {domain:<10} {d['tokens']:>12,} tokens  {d['documents']:>8,} documents  "
              f"{d['shards']:>4} shards")
    print(f"[tokenize] {result['tokens']:,} tokens in {len(result['shards'])} shards, {result['wall_s']} s; "
          f"summary in {args.output}/tokens.json")
    return 0
