"""`refinery export`: a checkpoint -> a Hugging Face Llama folder (training/hf.py).

```
refinery export --model out/run/train --output out/hf-model
```
"""
from __future__ import annotations

from training.checkpoint import load_model_weights
from training.hf import save_hf


def configure(parser) -> None:
    parser.description = ("Write a checkpoint (or a run folder's latest) in the transformers Llama format: "
                          "LlamaForCausalLM.from_pretrained(OUTPUT) loads it.")
    parser.add_argument("--model", "--checkpoint", dest="model", required=True, metavar="RUN_OR_CHECKPOINT",
                        help="one of our runs or checkpoints (--checkpoint: the earlier name of this option)")
    parser.add_argument("--output", required=True, metavar="HF_DIR")


def main(args, beam_args: list[str]) -> int:
    model = load_model_weights(args.model)
    save_hf(model, args.output)
    print(f"[export] {model.num_params() / 1e6:.2f} M parameters -> {args.output} (config.json, model.safetensors)")
    return 0
