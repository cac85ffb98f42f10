"""`refinery`: the command line of webrefinery, a table from verb to the module that owns it.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
refinery train --config configs/train-sample.yaml
refinery VERB --help
```
Each verb module has `configure(parser)` (its options, description and examples) and `main(args, beam_args)`
(its handler); `BEAM = True` marks the verbs whose unknown `--options` go to Apache Beam. Only the chosen verb's
module is imported, so `refinery curate` never imports torch and `refinery train` never imports Beam. Every
verb's errors come out the same way (`run_verb`): a bad input is `refinery VERB: message` and exit 2, never a
traceback; an unexpected error says so and how to see its traceback (`-v`).

Adding a verb: one module under pipeline/app/ and one line in VERBS.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline.app.common import StageError, UsageError

# verb: (module, one line for `refinery --help`)
VERBS: dict[str, tuple[str, str]] = {
    "run": ("pipeline.app.run", "the main job: curate -> tokenizer -> tokens -> pretrain -> eval -> report.html"),
    "ablate": ("pipeline.app.ablate", "data ablation: curate with each config, train the same model, compare"),
    "curate": ("pipeline.app.curate", "WARC files -> curated Parquet dataset with a funnel (stats.json)"),
    "quality": ("pipeline.app.quality", "train, evaluate and apply the fastText quality classifier"),
    "domains": ("pipeline.app.domains", "train the text classifier for domain labels"),
    "tokenizer": ("pipeline.app.tokenizer", "train the sentencepiece BPE tokenizer on a curated dataset"),
    "tokenize": ("pipeline.app.tokenize", "curated dataset -> token shards per domain (Beam)"),
    "publish": ("pipeline.app.publish", "dataset card (README.md) and manifest.json for a curated dataset"),
    "verify": ("pipeline.app.verify", "re-check a published dataset or a token folder"),
    "train": ("pipeline.app.train", "pretrain the model on token shards (CPU or GPU; DDP under torchrun)"),
    "export": ("pipeline.app.export", "a checkpoint -> Hugging Face Llama folder (safetensors + config.json)"),
    "eval": ("pipeline.app.eval", "benchmarks (log-likelihood multiple choice, LAMBADA) and wikitext bits per byte"),
    "contamination": ("pipeline.app.contamination", "did a model see a benchmark file? (Oren et al. order test)"),
    "scaling": ("pipeline.app.scaling", "scaling-law sweeps and fits, learning-rate and data-mix laws, cost"),
    "generate": ("pipeline.app.generate", "sample a continuation of a prompt (KV cache; temperature, top-k, top-p)"),
    "chat": ("pipeline.app.chat", "talk to a model in the terminal (our role tokens or the model's template)"),
    "sft": ("pipeline.app.sft", "supervised fine-tuning on conversations (loss on the assistant's tokens)"),
    "selfinstruct": ("pipeline.app.selfinstruct", "synthetic SFT data from an instruct model (Self-Instruct)"),
    "reward": ("pipeline.app.reward", "train a reward model on preference pairs (Bradley-Terry)"),
    "dpo": ("pipeline.app.dpo", "direct preference optimisation on preference pairs (DPO / IPO)"),
    "ppo": ("pipeline.app.ppo", "RLHF by PPO against a reward model (KL-penalised, GAE, clipped losses)"),
    "label": ("pipeline.app.label", "a local web page for preference labels, and their statistics"),
}


# bad input, a missing or unreadable file, a busy port or a locked folder, a missing optional package
USER_ERRORS = (UsageError, ValueError, OSError, ImportError, UnicodeError)


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {verb:<14} {text}" for verb, (_, text) in VERBS.items())
    parser = argparse.ArgumentParser(
        prog="refinery", usage="refinery [-v] VERB [options]  (refinery VERB --help)",
        description="webrefinery: web crawl -> curated dataset -> trained model.\n\nverbs:\n" + lines,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level; show tracebacks")
    parser.add_argument("verb", nargs="?", metavar="VERB")
    return parser


def verb_parser(verb: str):
    """(the verb's module, its parser)."""
    module = importlib.import_module(VERBS[verb][0])
    parser = argparse.ArgumentParser(prog=f"refinery {verb}", description=VERBS[verb][1])
    module.configure(parser)
    return module, parser


def run_verb(verb: str, handler, args, rest: list[str], verbose: bool = False) -> int:
    """The handler's exit code; its errors as one line `refinery VERB: ...`."""
    try:
        return handler(args, rest)
    except KeyboardInterrupt:
        print(f"refinery {verb}: interrupted", file=sys.stderr)
        return 130
    except StageError as e:
        print(f"refinery {verb}: {e}", file=sys.stderr)
        return 1
    except USER_ERRORS as e:
        if verbose:
            logging.getLogger("refinery").exception("refinery %s failed", verb)
        message = str(e) or type(e).__name__
        if isinstance(e, UnicodeError):
            message = f"text that is not valid UTF-8 or cannot be encoded: {e}"
        print(f"refinery {verb}: {message}", file=sys.stderr)
        return 2
    except Exception as e:
        if verbose:
            raise
        print(f"refinery {verb}: unexpected error ({type(e).__name__}: {e}); rerun with -v for the traceback",
              file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    head = []                                   # -v and the verb; everything after the verb is the verb's
    while argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        head.append(argv.pop(0))
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    options = top.parse_args([*head])
    if verb not in VERBS:
        top.error(f"unknown verb {verb!r}; the verbs are {', '.join(VERBS)}")
    module, parser = verb_parser(verb)
    args, unknown = parser.parse_known_args(rest)
    stray = [a for a in unknown if not a.startswith("--")]
    if stray:
        parser.error(f"unexpected argument(s): {' '.join(stray)}")
    if unknown and not getattr(module, "BEAM", False):     # only the Beam jobs hand unknown options on
        parser.error(f"unknown option(s) {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO if options.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_verb(verb, module.main, args, unknown, options.verbose)


if __name__ == "__main__":
    sys.exit(main())
