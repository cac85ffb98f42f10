"""`refinery selfinstruct`: synthetic SFT data, Self-Instruct style (Wang et al. 2023), from an instruct model.

```
refinery selfinstruct --output out/synthetic.jsonl --n 50                 # SmolLM2-135M-Instruct (GGUF), offline
refinery selfinstruct --model path/to/model.gguf --seeds my_seeds.jsonl --output out/synthetic.jsonl --n 200
refinery sft --model out/train --data out/synthetic.jsonl --output out/sft-synthetic
```
Each round shows the model a few seed (and already accepted) instructions as the paper's numbered list ("Come up
with a series of tasks: Task 1: … Task 4:") and takes the line it continues with; then asks it, through its chat
template, to carry that instruction out. What it writes is filtered as the paper does (§2.3), with every candidate accounted
for in OUTPUT.stats.json by reason: an instruction of 3-150 words, starting with a letter, without the keywords of
tasks a text model cannot do (image, graph, file, draw, …), ROUGE-L below 0.7 against every instruction kept so
far (the near-duplicate filter); a reply that is non-empty, not a copy of the instruction, and finished (ended at
the model's stop token). Output rows are `{"prompt", "completion"}` JSONL, the shape `refinery sft` reads.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.files import read_rows, write_atomic
from training.generate import generate
from training.hf import smollm2_gguf
from training.lm import load_lm
from training.post.chat import reply, stop_ids

BLOCKED = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
           "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence, β = 1)."""
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def instruction_problem(instruction: str, kept: list[list[str]], max_similarity: float = 0.7) -> str | None:
    """Why a generated instruction is rejected, or None."""
    tokens = words(instruction)
    if not 3 <= len(tokens) <= 150:
        return "length"
    if not instruction[:1].isalpha():
        return "not_a_letter_first"
    lowered = f" {' '.join(tokens)} "
    if any(f" {word} " in lowered for word in BLOCKED):
        return "blocked_keyword"
    if any(rouge_l(tokens, other) >= max_similarity for other in kept):
        return "near_duplicate"
    return None


def reply_problem(instruction: str, reply: str, finished: bool) -> str | None:
    if not reply.strip():
        return "empty_reply"
    if not finished:
        return "unfinished_reply"
    if words(reply) == words(instruction):
        return "reply_copies_instruction"
    return None


def read_seed_instructions(path: str | Path) -> list[str]:
    rows = [row for _, row in read_rows(path)]
    if not rows or "instruction" not in rows[0]:
        raise ValueError(f"{path}: expected JSONL rows with an instruction field (Self-Instruct seed tasks)")
    return [row["instruction"].strip() for row in rows]


@dataclass(frozen=True)
class SelfInstructConfig:
    n: int = 20                       # instructions to accept
    max_rounds: int = 0               # give up after this many candidates (0 = 5 x n)
    examples: int = 3                 # in-context instructions per request
    instruction_tokens: int = 48
    reply_tokens: int = 128
    temperature: float = 0.9
    top_p: float = 0.95
    max_similarity: float = 0.7
    seed: int = 0


def request(examples: list[str]) -> str:
    """The paper's prompt (Table 5), continued by the model as plain text: the next task is its next line."""
    listed = "".join(f"Task {i + 1}: {text}\n" for i, text in enumerate(examples))
    return f"Come up with a series of tasks:\n\n{listed}Task {len(examples) + 1}:"


def newline_ids(tokenizer) -> set[int]:
    """Ids whose text holds a line break: generation of an instruction stops at the end of its line."""
    return {i for i in range(tokenizer.vocab_size) if "\n" in tokenizer.decode([i])}


def self_instruct(lm, seeds: list[str], cfg: SelfInstructConfig, progress=None) -> tuple[list[dict], Counter]:
    """Accepted {"prompt", "completion"} rows and the count of every candidate by outcome."""
    rng = np.random.default_rng(cfg.seed)
    line_end = newline_ids(lm.tokenizer) | stop_ids(lm.tokenizer)
    kept_tokens = [words(s) for s in seeds]
    accepted, machine, outcomes = [], [], Counter()
    rounds = cfg.max_rounds or 5 * cfg.n
    for round_ in range(rounds):
        if len(accepted) >= cfg.n:
            break
        pool = seeds if not machine or rng.random() < 0.7 else machine     # mostly human seeds, as the paper
        picks = [pool[i] for i in rng.choice(len(pool), size=min(cfg.examples, len(pool)), replace=False)]
        ids = generate(lm.model, lm.tokenizer.prefix + lm.encode(request(picks)), cfg.instruction_tokens,
                       cfg.temperature, 0, cfg.top_p, eos_id=line_end, seed=cfg.seed * 1_000_003 + 2 * round_)
        instruction = lm.tokenizer.decode(ids).split("\n")[0].strip()
        problem = instruction_problem(instruction, kept_tokens, cfg.max_similarity)
        if problem is None:
            answer, ids = reply(lm.model, lm.tokenizer, [{"role": "user", "content": instruction}], cfg.reply_tokens,
                                0.7, 0, cfg.top_p, seed=cfg.seed * 1_000_003 + 2 * round_ + 1)
            problem = reply_problem(instruction, answer, bool(ids) and ids[-1] in stop_ids(lm.tokenizer))
        outcomes[problem or "accepted"] += 1
        if problem is None:
            accepted.append({"prompt": instruction, "completion": answer})
            machine.append(instruction)
            kept_tokens.append(words(instruction))
        if progress:
            progress(round_ + 1, len(accepted), problem)
    return accepted, outcomes


def run_self_instruct(model: str | None, seeds: list[str], output: str | Path, cfg: SelfInstructConfig,
                      log=print) -> dict:
    """`seeds`: the seed instructions (read_seed_instructions), read before the model loads."""
    if model is None:
        model = str(smollm2_gguf())
    lm = load_lm(model)
    started = time.perf_counter()

    def progress(done, kept, problem):
        if done % 5 == 0:
            log(f"[selfinstruct] {done} candidates, {kept} accepted ({time.perf_counter() - started:.0f} s)")

    rows, outcomes = self_instruct(lm, seeds, cfg, progress)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, "".join(json.dumps({**row, "source": f"self-instruct:{Path(model).name}"}, ensure_ascii=False)
                                 + "\n" for row in rows))
    stats = {"model": str(model), "seeds": len(seeds), "candidates": sum(outcomes.values()),
             "outcomes": dict(outcomes), "accepted": len(rows), "wall_s": round(time.perf_counter() - started, 1)}
    write_atomic(f"{output}.stats.json", json.dumps(stats, indent=1))
    return stats
