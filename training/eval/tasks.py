"""Evaluation tasks read from ../shared/data, as lm-evaluation-harness poses them.

Each task turns into items of (context, continuation) requests scored by log-likelihood:

| task | context | continuations | metrics |
|---|---|---|---|
| arc_easy, arc_challenge, piqa | `Question: …\\nAnswer:` | ` <choice>` | acc, acc_norm |
| hellaswag | `<activity>: <context>` | ` <ending>` | acc, acc_norm |
| openbookqa | the question stem | ` <choice>` | acc, acc_norm |
| copa | premise + ` because` / ` therefore` | ` <choice, first letter lowered>` | acc |
| boolq | `<passage>\\nQuestion: …?\\nAnswer:` | ` no`, ` yes` | acc |
| winogrande | the sentence up to the blank, once per option (partial scoring) | ` <the rest>` | acc |
| lambada | the passage without its last word | ` <last word>` | acc (greedy), ppl |
| mmlu | harness / original paper: header, K dev examples in order, `…\\nAnswer:` | ` A` … ` D` | acc |
| mmlu_cloze | the same question without the lettered options | ` <answer text>` | acc, acc_norm |
| mmlu_<subject> | `mmlu` on one subject, as the harness names it (mmlu_anatomy) | ` A` … ` D` | acc |

acc = argmax of the summed log-likelihood; acc_norm = argmax of log-likelihood / character length of the
choice (the continuation without its leading space, as the harness counts it). Few-shot examples: MMLU's dev split in order; for the other tasks (which have no dev split
here) the first K items, which are then not scored.
"""
from __future__ import annotations

import bz2
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

MMLU_FORMATS = ("mmlu", "mmlu_cloze")
TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "openbookqa", "copa", "winogrande", "lambada", "boolq",
         "mmlu", "mmlu_cloze")
_FILES = {"arc_easy": "arc_easy.jsonl", "arc_challenge": "arc_challenge.jsonl", "piqa": "piqa.jsonl",
          "openbookqa": "openbook_qa.jsonl", "copa": "copa.jsonl", "boolq": "boolq.jsonl",
          "winogrande": "winogrande.jsonl", "lambada": "lambada_openai.jsonl"}


@dataclass
class Item:
    requests: list[tuple[str, str]]          # (context, continuation) per choice
    gold: int
    kind: str = "choice"                     # choice | greedy (lambada: one request, right if greedy)
    group: str = ""                          # MMLU subject


@dataclass
class Task:
    name: str
    items: list[Item]
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    shots: int = 0
    notes: dict = field(default_factory=dict)


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _fewshot_prefix(examples: list[tuple[str, str]]) -> str:
    return "".join(f"{context}{answer}\n\n" for context, answer in examples)


def _mc(rows, context_of, choices_of, shots: int) -> list[Item]:
    examples = [(context_of(r), choices_of(r)[r["gold"]]) for r in rows[:shots]]
    prefix = _fewshot_prefix(examples)
    return [Item([(prefix + context_of(r), c) for c in choices_of(r)], r["gold"]) for r in rows[shots:]]


def load_task(name: str, data_dir: Path, shots: int = 0, limit: int | None = None) -> Task:
    """The task's items (the first `limit` after the few-shot examples; for MMLU `limit` per subject); a task
    that `shots` leaves no item of is an error, not a score of nan."""
    task = _load_task(name, data_dir, shots, limit)
    if not task.items:
        raise ValueError(f"{name}: --shots {shots} leaves no item to score (the examples come from the task's own "
                         f"items, which it would use up)")
    return task


def _load_task(name: str, data_dir: Path, shots: int, limit: int | None) -> Task:
    mc = data_dir / "mc"
    if name in MMLU_FORMATS:
        return _mmlu(data_dir / "mmlu", name, shots, limit)
    if name.startswith("mmlu_"):                       # one subject, lm-evaluation-harness's task name
        return _mmlu(data_dir / "mmlu", "mmlu", shots, limit, only=name.removeprefix("mmlu_"))
    if name == "hellaswag":
        with bz2.open(mc / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        rows = [{"query": lines[i], "gold": int(lines[i + 1]), "choices": lines[i + 2:i + 6]}
                for i in range(0, len(lines) - 5, 6)]
        items = _mc(rows, lambda r: r["query"], lambda r: [" " + c for c in r["choices"]], shots)
        return Task(name, items[:limit], shots=shots)
    if name not in _FILES:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    rows = _jsonl(mc / _FILES[name])
    if name in ("arc_easy", "arc_challenge", "piqa", "boolq"):
        items = _mc(rows, lambda r: r["query"].rstrip("\n") + "\nAnswer:",
                    lambda r: [" " + c for c in r["choices"]], shots)
        metrics = ("acc",) if name == "boolq" else ("acc", "acc_norm")
    elif name == "openbookqa":
        items = _mc(rows, lambda r: r["query"], lambda r: [" " + c for c in r["choices"]], shots)
        metrics = ("acc", "acc_norm")
    elif name == "copa":
        items = _mc(rows, lambda r: r["query"], lambda r: [" " + c[0].lower() + c[1:] for c in r["choices"]], shots)
        metrics = ("acc",)
    elif name == "winogrande":
        prefix = _fewshot_prefix([(r["context_options"][r["gold"]], " " + r["continuation"]) for r in rows[:shots]])
        items = [Item([(prefix + option, " " + r["continuation"]) for option in r["context_options"]], r["gold"])
                 for r in rows[shots:]]
        metrics = ("acc",)
    else:   # lambada: the last word, right when it is the greedy continuation
        prefix = _fewshot_prefix([(r["context"], " " + r["continuation"]) for r in rows[:shots]])
        items = [Item([(prefix + r["context"], " " + r["continuation"])], 0, kind="greedy") for r in rows[shots:]]
        metrics = ("acc", "ppl")
    return Task(name, items[:limit], metrics=metrics, shots=shots)


def _read_mmlu(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if header[:6] != ["question", "choice0", "choice1", "choice2", "choice3", "answer"]:
            raise ValueError(f"{path}: unexpected header {header}")
        return [{"question": r[0], "choices": r[1:5], "gold": int(r[5])} for r in reader]


def _mmlu(root: Path, name: str, shots: int, limit: int | None, only: str | None = None) -> Task:
    """Hendrycks et al.'s prompt (`mmlu`, as the harness poses it since v0.4: the letters are scored) or the
    answer texts scored as a cloze (`mmlu_cloze`, the harness before v0.4 / OLMES "cloze" formulation)."""
    if not 0 <= shots <= 5:
        raise ValueError(f"MMLU's dev split has 5 examples per subject; shots must be 0-5, got {shots}")
    items = []
    subjects = sorted(p.name.removesuffix("_test.csv") for p in (root / "test").glob("*_test.csv"))
    if not subjects:
        raise FileNotFoundError(f"no MMLU test files under {root}/test")
    if only is not None:
        if only not in subjects:
            raise ValueError(f"unknown task mmlu_{only}: MMLU has no subject {only!r} under {root}/test; "
                             f"known: {', '.join(subjects)}")
        subjects = [only]
    for subject in subjects:
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        dev = _read_mmlu(root / "dev" / f"{subject}_dev.csv")[:shots]
        test = _read_mmlu(root / "test" / f"{subject}_test.csv")[:limit]

        def question(row, with_letters: bool) -> str:
            text = row["question"].strip()
            if with_letters:
                text += "".join(f"\n{letter}. {choice}" for letter, choice in zip("ABCD", row["choices"]))
            return text + "\nAnswer:"

        if name == "mmlu":
            prefix = header + _fewshot_prefix([(question(r, True), " " + "ABCD"[r["gold"]]) for r in dev])
            items += [Item([(prefix + question(r, True), " " + letter) for letter in "ABCD"], r["gold"], group=subject)
                      for r in test]
        else:
            prefix = header + _fewshot_prefix([(question(r, False), " " + r["choices"][r["gold"]]) for r in dev])
            items += [Item([(prefix + question(r, False), " " + c) for c in r["choices"]], r["gold"], group=subject)
                      for r in test]
    return Task(f"mmlu_{only}" if only else name, items,
                metrics=("acc",) if name == "mmlu" else ("acc", "acc_norm"), shots=shots,
                notes={"subjects": len(subjects)})
