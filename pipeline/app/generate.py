"""`refinery generate`: sample a continuation of a prompt (training/generate.py).

```
refinery generate --model out/run/train --prompt "The city council said" --temperature 0.8
```
"""
from __future__ import annotations

from pipeline.app.common import non_negative_float, non_negative_int, positive_int, seed, text, unit_interval
from training.generate import generate
from training.lm import load_lm


def configure(parser) -> None:
    parser.description = ("Continue PROMPT with a model: one of our runs/checkpoints, an HF Llama folder or a GGUF "
                          "file. Stops at EOS or --max-new-tokens.")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--prompt", type=text, required=True, metavar="TEXT")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N")
    parser.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy (default 0.8)")
    parser.add_argument("--top-k", type=non_negative_int, default=0, metavar="K",
                        help="keep the K most likely tokens (0 = all)")
    parser.add_argument("--top-p", type=unit_interval, default=0.95, metavar="P",
                        help="nucleus sampling mass (default 0.95)")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--tokenizer", metavar="DIR")
    parser.add_argument("--other-tokenizer", action="store_true",
                        help="use --tokenizer even if it is not the one the model was trained with (sha256)")


def main(args, beam_args: list[str]) -> int:
    lm = load_lm(args.model, tokenizer=args.tokenizer, other_tokenizer=args.other_tokenizer)
    prompt = lm.tokenizer.prefix + lm.encode(args.prompt)          # our models: after an EOS, as in training
    ids = generate(lm.model, prompt or lm.tokenizer.rolling_prefix, args.max_new_tokens, args.temperature,
                   args.top_k, args.top_p, eos_id=lm.tokenizer.eos_id, seed=args.seed)
    print(args.prompt + lm.tokenizer.decode([i for i in ids if i != lm.tokenizer.eos_id]))
    return 0
