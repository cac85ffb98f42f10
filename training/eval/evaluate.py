"""`refinery eval`: benchmarks by log-likelihood and wikitext bits per byte, for any model `training/lm.py` loads.

bits per byte = Σ NLL (nats) / Σ UTF-8 bytes / ln 2 (lm-evaluation-harness's definition), so models with
different tokenizers compare.
"""
from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.cpu import warn_if_busy
from training.eval.tasks import load_task
from training.lm import load_lm

WIKITEXT = "text/wikitext-2-raw-v1.test.txt"


def choice_chars(continuation: str) -> int:
    """acc_norm's divisor: the choice's length in characters without the space that joins it to the context
    (lm-evaluation-harness divides by len(choice), its target delimiter " " not counted)."""
    return len(continuation.removeprefix(" "))


def score_task(lm, task, progress=None, samples: list | None = None) -> dict:
    """Metrics of `task` (training/eval/tasks.py) for `lm` (training/lm.py): acc, acc_norm, ppl as the task lists,
    with the standard error of acc (binomial) and per-group accuracy for MMLU. `samples`: a list that gets one
    row per item (its requests, each choice's log-likelihood, the predictions), to compare item by item."""
    requests = [r for item in task.items for r in item.requests]
    scores = lm.loglikelihood(requests, progress=progress)
    correct, correct_norm, greedy_ll, groups = [], [], [], defaultdict(list)
    at = 0
    for index, item in enumerate(task.items):
        mine = scores[at:at + len(item.requests)]
        at += len(item.requests)
        lls = [float(ll) for ll, _ in mine]
        row = {"task": task.name, "doc_id": index, "group": item.group, "gold": item.gold,
               "requests": [list(r) for r in item.requests], "loglikelihoods": lls,
               "is_greedy": [bool(g) for _, g in mine], "choice_chars": [choice_chars(c) for _, c in item.requests]}
        if item.kind == "greedy":
            correct.append(mine[0][1])
            greedy_ll.append(mine[0][0])
        else:
            norm = [ll / max(1, choice_chars(cont)) for ll, (_, cont) in zip(lls, item.requests)]
            correct.append(int(np.argmax(lls)) == item.gold)
            correct_norm.append(int(np.argmax(norm)) == item.gold)
            row.update(pred=int(np.argmax(lls)), pred_norm=int(np.argmax(norm)), acc_norm=int(correct_norm[-1]))
        row["acc"] = int(correct[-1])
        if samples is not None:
            samples.append(row)
        if item.group:
            groups[item.group].append(correct[-1])
    n = len(correct)
    acc = float(np.mean(correct)) if n else float("nan")
    out = {"acc": acc, "acc_stderr": math.sqrt(acc * (1 - acc) / max(1, n - 1)), "n": n}
    if "acc_norm" in task.metrics:
        out["acc_norm"] = float(np.mean(correct_norm))
    if "ppl" in task.metrics:
        out["ppl"] = math.exp(-float(np.mean(greedy_ll)))
    if groups:    # MMLU: the mean over subjects (the paper's macro average) beside the mean over questions
        out["acc_subject_mean"] = float(np.mean([np.mean(v) for v in groups.values()]))
        out["subjects"] = {g: float(np.mean(v)) for g, v in sorted(groups.items())}
    out["shots"] = task.shots
    return out


def wikitext_documents(text: str) -> list[str]:
    """wikitext-2's articles, each from its title line (" = Title = ", one '=' a side) to the next: the 62 documents
    of the test split that lm-evaluation-harness scores one by one. Joined they are `text` again."""
    starts = [m.start() for m in re.finditer(r"^ = [^=].* = $", text, flags=re.MULTILINE)]
    cuts = [0, *starts[1:], len(text)] if starts else [0, len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:])]


# wikitext's tokenised spacing undone, rule by rule in this order, as lm-evaluation-harness prepares each
# document before scoring it (its tasks/wikitext preprocess): (pattern, replacement, is_regex)
_DETOKENIZE = [
    ("s '", "s'", False), (r"/' [0-9]/", r"/'[0-9]/", True),                        # contractions
    (" @-@ ", "-", False), (" @,@ ", ",", False), (" @.@ ", ".", False),            # number separators
    *((f" {mark} ", f"{mark} ", False) for mark in ":;.!?,"),                       # punctuation
    (r"\(\s*([^\)]*?)\s*\)", r"(\1)", True), (r"\[\s*([^\]]*?)\s*\]", r"[\1]", True),     # brackets
    (r"{\s*([^}]*?)\s*}", r"{\1}", True), (r"\"\s*([^\"]*?)\s*\"", r'"\1"', True),
    (r"'\s*([^']*?)\s*'", r"'\1'", True),
    ("= = = =", "====", False), ("= = =", "===", False), ("= =", "==", False),     # headings
    (" \u00b0 ", "\u00b0", False), (" \n", "\n", False), ("\n ", "\n", False), (" N ", " 1 ", False),
    (" 's", "'s", False),
]


def wikitext_detokenize(text: str) -> str:
    """A wikitext document as lm-evaluation-harness scores it (its `wikitext_detokenizer`)."""
    for pattern, replacement, regex in _DETOKENIZE:
        text = re.sub(pattern, replacement, text) if regex else text.replace(pattern, replacement)
    return text


def wikitext_harness(lm, documents: list[str], progress=None) -> dict:
    """lm-evaluation-harness's wikitext: each document detokenised and scored on its own by disjoint windows of
    the model's context (`loglikelihood_rolling`: the first window after the start token, each later one with one
    token of context), then word_perplexity = exp(Σ NLL / Σ words), byte_perplexity = exp(Σ NLL / Σ bytes) and
    bits_per_byte = Σ NLL / Σ bytes / ln 2 over all documents (its weighted_perplexity); words are the pieces of
    re.split(r"\\s+") of each document and bytes its UTF-8 bytes, both counted before detokenising, as the harness
    counts them."""
    nll = tokens = words = nbytes = 0
    for document in documents:
        target = wikitext_detokenize(document)
        doc_nll, doc_tokens = lm.rolling_nll(target, lm.max_length, lm.max_length, progress=progress)
        nll, tokens = nll + doc_nll, tokens + doc_tokens
        words += len(re.split(r"\s+", document))       # the harness counts words and bytes on the document as
        nbytes += len(document.encode("utf-8"))         # stored, before detokenising (its process_results)
    return {"word_perplexity": math.exp(nll / max(1, words)), "byte_perplexity": math.exp(nll / max(1, nbytes)),
            "bits_per_byte": nll / max(1, nbytes) / math.log(2), "bpb": nll / max(1, nbytes) / math.log(2),
            "nll": nll, "tokens": tokens, "words": words, "bytes": nbytes, "documents": len(documents),
            "mode": "harness"}


def text_bpb(lm, text: str, window: int | None = None, stride: int | None = None, progress=None) -> dict:
    """Perplexity and bits per byte of `text` (sliding window): bpb = Σ NLL / UTF-8 bytes / ln 2, tokens and
    bytes counted over the whole text, so tokenizers compare."""
    nll, tokens = lm.rolling_nll(text, window, stride, progress=progress)
    nbytes = len(text.encode("utf-8"))
    return {"bpb": nll / nbytes / math.log(2), "ppl_token": math.exp(nll / max(1, tokens)),
            "nll": nll, "tokens": tokens, "bytes": nbytes, "mode": "window"}


def run_eval(model: str, tasks: list[str], data_dir, limit: int | None = None, shots: int = 0,
             tokenizer: str | None = None, batch_size: int = 16, window: int | None = None,
             stride: int | None = None, text_bytes: int | None = None, progress: bool = True, log=print,
             other_tokenizer: bool = False, samples: list | None = None, prefix_cache: bool = True,
             wikitext_mode: str | None = None, dtype: str = "float32") -> dict:
    """Evaluate `model` on `tasks` (names from training/eval/tasks.py, plus `wikitext` for bits per byte).
    `samples`: a list that gets a row per multiple-choice item (see score_task). `wikitext_mode`: "harness" (each
    article on its own, lm-evaluation-harness's numbers; the default) or "window" (the text as one, in sliding
    windows of `window` tokens advancing by `stride`, cut to `text_bytes`; the default when one of those is set)."""
    wikitext_mode = wikitext_mode or ("window" if window or stride or text_bytes else "harness")
    if wikitext_mode not in ("harness", "window"):
        raise ValueError(f"wikitext mode must be harness or window, got {wikitext_mode!r}")
    if wikitext_mode == "harness" and (window or stride or text_bytes):
        raise ValueError("wikitext: window, stride and text bytes are for the sliding-window mode; the harness's "
                         "mode scores each article whole in windows of the model's context")

    data_dir = Path(data_dir)
    started = time.monotonic()
    lm = load_lm(model, tokenizer=tokenizer, batch_size=batch_size, other_tokenizer=other_tokenizer)
    lm.prefix_cache, lm.dtype = prefix_cache, dtype
    lm.precision()                                                     # an unknown dtype fails here, before work
    log(f"[eval] {model}: {lm.model.num_params() / 1e6:.1f} M parameters, context {lm.max_length}")
    warn_if_busy(tqdm.write if progress else log, "[eval]")
    results = {}
    for name in tasks:
        t0 = time.monotonic()
        if name == "wikitext":
            text = (data_dir / WIKITEXT).read_text(encoding="utf-8")
            documents = wikitext_documents(text)[:limit or None]     # the first N articles, as for any other task
            bar = tqdm(desc=name, unit="tok", dynamic_ncols=True, leave=False) if progress else None
            if wikitext_mode == "harness":
                if bar is not None:
                    bar.total = sum(len(lm.encode(wikitext_detokenize(d))) for d in documents)
                results[name] = wikitext_harness(lm, documents, progress=(lambda new, total: bar.update(new))
                                                 if bar is not None else None)
            else:
                text = "".join(documents)
                if text_bytes:
                    text = text.encode("utf-8")[:text_bytes].decode("utf-8", "ignore")

                def advance(new, total):
                    bar.total = total
                    bar.update(new)
                results[name] = text_bpb(lm, text, window, stride, progress=advance if bar is not None else None)
        else:
            task = load_task(name, data_dir, shots=shots, limit=limit)
            bar = None
            if progress:
                bar = tqdm(total=sum(len(i.requests) for i in task.items), desc=name, unit="req",
                           dynamic_ncols=True, leave=False)
            results[name] = score_task(lm, task, progress=bar.update if bar is not None else None, samples=samples)
        if bar is not None:
            bar.close()
        results[name]["seconds"] = round(time.monotonic() - t0, 1)
        log(f"[eval] {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[name].items()
                                           if k in ("acc", "acc_norm", "ppl", "bpb", "word_perplexity",
                                                    "acc_subject_mean")))
    results["_meta"] = {"model": str(model), "limit": limit, "shots": shots, "prefix_cache": prefix_cache,
                        "dtype": dtype,
                        "wikitext_mode": wikitext_mode,
                        "wall_s": round(time.monotonic() - started, 1),
                        "parameters": lm.model.num_params()}
    return results


def markdown_table(results: dict) -> str:
    lines = ["| task | n | acc | acc_norm | other |", "|---|---:|---:|---:|---|"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        other = ", ".join(f"{k} {r[k]:.4f}" for k in ("bpb", "ppl", "ppl_token", "acc_subject_mean") if k in r)
        acc = f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}" if "acc" in r else ""
        norm = f"{r['acc_norm']:.4f}" if "acc_norm" in r else ""
        lines.append(f"| {name} | {r.get('n', r.get('tokens', ''))} | {acc} | {norm} | {other} |")
    return "\n".join(lines)
