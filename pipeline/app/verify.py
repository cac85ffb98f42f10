"""`refinery verify`: re-check a published dataset or a token folder against its manifest (docs/publish.md).

```
refinery verify out/sample
```
"""
from __future__ import annotations

from pathlib import Path

from pipeline.publish import verify


def configure(parser) -> None:
    parser.description = ("Re-hash every file in manifest.json, re-read every Parquet file and every token shard "
                          "header; print each problem; exit 1 if there is any.")
    parser.add_argument("directory", metavar="DIR")


def main(args, beam_args: list[str]) -> int:
    if Path(args.directory).is_file():
        raise ValueError(f"{args.directory}: a file; give the folder that holds manifest.json")
    if not Path(args.directory).is_dir():
        raise FileNotFoundError(f"no such folder: {args.directory}")
    problems = verify(args.directory)
    for problem in problems:
        print(f"[verify] {problem}")
    print(f"[verify] {args.directory}: " + (f"{len(problems)} problem(s)" if problems else "intact"))
    return 1 if problems else 0
