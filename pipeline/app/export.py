"""`refinery export`: a checkpoint -> a Hugging Face Llama folder (training/hf.py).

```
refinery export --model out/run/train --output out/hf-model
```
"""
from __future__ import annotations

from training.artifacts import FolderLock, prepare_output, write_manifest
from training.checkpoint import load_model_weights
from training.hf import save_hf, save_hf_tokenizer
from training.lm import checked_tokenizer, find_tokenizer


def configure(parser) -> None:
    parser.description = ("Write a checkpoint (or a run folder's latest) and its tokenizer in the transformers "
                          "Llama format: LlamaForCausalLM.from_pretrained(OUTPUT) and "
                          "AutoTokenizer.from_pretrained(OUTPUT) load it, and refinery eval/generate/chat take it.")
    parser.add_argument("--model", "--checkpoint", dest="model", required=True, metavar="RUN_OR_CHECKPOINT",
                        help="one of our runs or checkpoints (--checkpoint: the earlier name of this option)")
    parser.add_argument("--output", required=True, metavar="HF_DIR", help="a new or empty folder")
    parser.add_argument("--tokenizer", metavar="DIR",
                        help="the model's tokenizer, when its run folder does not say where it is (checked against "
                             "the one the run recorded)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export there (only the files its manifest lists are removed)")


def main(args, beam_args: list[str]) -> int:
    model = load_model_weights(args.model)
    tokenizer_dir = args.tokenizer or str(find_tokenizer(args.model))
    tokenizer = checked_tokenizer(args.model, tokenizer_dir)         # the run's own, or refused before writing
    out = prepare_output(args.output, "hf-model", [args.model, tokenizer_dir], overwrite=args.overwrite)
    with FolderLock(out):
        files = save_hf(model, out) + save_hf_tokenizer(out, tokenizer_dir)
        write_manifest(out, "hf-model", files, provenance={"source": str(args.model),
                                                           "tokenizer_sha256": tokenizer.sha256})
    print(f"[export] {model.num_params() / 1e6:.2f} M parameters -> {args.output} ({', '.join(files)})")
    return 0
