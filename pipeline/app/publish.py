"""`refinery publish`: the Hugging Face dataset card and manifest of a curated dataset (docs/publish.md).

```
refinery publish out/sample --license odc-by
```
"""
from __future__ import annotations

from pipeline.app.common import text
from pipeline.publish import publish


def configure(parser) -> None:
    parser.description = ("Write the Hugging Face dataset card (YAML metadata: languages, size, license, one config "
                          "per domain; the funnel and the config used), per-domain Parquet files and manifest.json "
                          "(sha256 of every file).")
    parser.add_argument("dataset", metavar="DATASET_DIR")
    parser.add_argument("--license", type=text, default="other", help="the card's license field (default: other)")
    parser.add_argument("--name", type=text, help="the card's pretty name (default: the folder's name)")


def main(args, beam_args: list[str]) -> int:
    result = publish(args.dataset, args.license, args.name)
    print(f"[publish] {args.dataset}: card README.md, manifest.json over {result['files']} files; "
          f"{result['documents']:,} documents in {len(result['domains'])} domain configs")
    return 0
