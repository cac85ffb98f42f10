"""`refinery chat`: talk to a model in the terminal (training/post/chat.py).

```
refinery chat --model out/sft
```
"""
from __future__ import annotations

import sys

from pipeline.app.common import non_negative_float, non_negative_int, positive_int, seed, text, unit_interval
from training.lm import load_lm
from training.post.chat import reply


def configure(parser) -> None:
    parser.description = ("An interactive chat: each line you type is a user turn; the model's reply follows. /reset "
                          "starts over, /quit (or Ctrl-D) leaves. Our models use their role tokens; HF folders and "
                          "GGUF files their own chat template.")
    parser.add_argument("--model", required=True, metavar="MODEL")
    parser.add_argument("--system", type=text, metavar="TEXT", help="a system message at the start of the conversation")
    parser.add_argument("--max-new-tokens", type=positive_int, default=128, metavar="N")
    parser.add_argument("--temperature", type=non_negative_float, default=0.7, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-k", type=non_negative_int, default=0, metavar="K")
    parser.add_argument("--top-p", type=unit_interval, default=0.95, metavar="P")
    parser.add_argument("--seed", type=seed, default=0)


def _read_line() -> str:
    """One line of the terminal or a pipe; bytes that are not UTF-8 become U+FFFD (whatever the locale says)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:                  # a text stream without bytes under it (tests, embedding)
        return sys.stdin.readline()
    return buffer.readline().decode("utf-8", "replace")


def main(args, beam_args: list[str]) -> int:
    lm = load_lm(args.model)
    start = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(start)
    interactive = sys.stdin.isatty()
    turn = 0
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = _read_line()
        if not line or line.strip() == "/quit":
            return 0
        if line.strip() == "/reset":
            messages = list(start)
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line.strip()})
        text, _ = reply(lm.model, lm.tokenizer, messages, args.max_new_tokens, args.temperature, args.top_k,
                        args.top_p, seed=args.seed + turn)
        turn += 1
        messages.append({"role": "assistant", "content": text})
        print(f"model> {text}", flush=True)
