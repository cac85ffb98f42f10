"""Bad input, verb by verb: a table of commands a user might type with a wrong number, a broken or missing file,
an output that would clobber something, and what refinery must answer (docs/files.md). Every row runs the real
command; none may print a Python traceback or fall through to "unexpected error"."""
import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.app.cli import VERBS, main

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    args: object               # the command line: a function of the fixtures (`w`) -> list of strings
    code: int                  # the exit status it must end with
    says: str                  # text the output must hold: the option, file or line, and what was wrong


# ---- files to feed the commands, made once


@pytest.fixture(scope="module")
def w(tmp_path_factory, small_base, sample_tokens, sample_tokenizer_dir, sample_run, quality_model, data):
    root = tmp_path_factory.mktemp("bad")
    f = SimpleNamespace(root=root, model=str(small_base), tokens=str(sample_tokens), tok=sample_tokenizer_dir,
                        dataset=str(sample_run[1]), quality=quality_model[0],
                        warc=str(data / "warc/commoncrawl/commoncrawl.org_jwarc-cc.warc.gz"))

    def write(name, text: str | bytes) -> str:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    pair = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there.", "rejected": "\n\nHuman: Hi\n\nAssistant: No."}
    f.empty = write("empty.jsonl", "")
    f.lists = write("lists.jsonl", json.dumps(pair) + "\n[1, 2]\n")
    f.no_key = write("no-key.jsonl", json.dumps(pair) + "\n" + json.dumps({"chosen": "x"}) + "\n")
    f.not_json = write("not-json.jsonl", json.dumps(pair) + "\n" + json.dumps(pair) + "\n{oops\n")
    f.latin1 = write("latin1.jsonl", json.dumps(pair).replace("Hello", "H\u00e9llo").encode("latin-1"))
    whole = gzip.compress((json.dumps(pair) + "\n").encode() * 400)
    f.truncated_gz = write("truncated.jsonl.gz", whole[:len(whole) // 2])
    f.broken_yaml = write("broken.yaml", "run:\n  steps: [1, 2\n")
    f.not_mapping = write("list.yaml", "- 1\n- 2\n")
    f.a_file = write("a-file.txt", "I am a file, not a folder")
    f.same_lines = write("same.jsonl", (json.dumps({"question": "q", "choices": ["a", "b"], "answer": 0}) + "\n") * 40)
    f.garbage = write("garbage.bin", os.urandom(4096))
    f.half_quality = str(root / "half-quality.bin")
    body = Path(f.quality).read_bytes()
    Path(f.half_quality).write_bytes(body[:len(body) // 2])
    shutil.copy(f.quality + ".json", f.half_quality + ".json")       # its card records the whole model's sha256
    f.bad_tok = str(root / "bad-tok")
    shutil.copytree(f.tok, f.bad_tok)
    Path(f.bad_tok, "tokenizer.model").write_bytes(os.urandom(2048))
    scores = root / "scores.jsonl"
    scores.write_text(json.dumps({"text": "A real sentence about the weather in spring."}) + "\n")
    f.scores = str(scores)
    escape = root / "escape"
    (escape / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "text": ["some text"], "domain": ["../../x"]}),
                   escape / "data" / "part-0.parquet")
    f.escape = str(escape)
    f.used_tokens = str(root / "used-tokens")
    shutil.copytree(f.tokens, f.used_tokens)
    f.label_dir = str(root / "label-dir")
    Path(f.label_dir).mkdir()
    f.others = str(root / "others")
    Path(f.others).mkdir()
    Path(f.others, "notes.txt").write_text("mine")
    f.prompts = write("prompts.jsonl", json.dumps({"prompt": "Say hi."}) + "\n")
    f.number_labeler = write("number-labeler.jsonl", json.dumps({"label": "a", "item": "x", "labeler": 3}) + "\n")
    f.no_reply = write("no-reply.jsonl", json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    f.bad_instances = write("bad-instances.jsonl", json.dumps({"instruction": "Say hi", "instances": [{"input": ""}]})
                            + "\n")
    f.null_item = write("null-item.json", json.dumps([{"messages": [{"role": "user", "content": "Hi"},
                                                                    {"role": "assistant", "content": "Hello"}]},
                                                      None]))
    f.turns_text = write("turns-text.jsonl", json.dumps({"turns": "Hi"}) + "\n")
    # folders that look like a command's own by a file's name only, and a run folder holding its own input
    f.foreign_run, f.foreign_stats, f.run_with_input = root / "foreign-run", root / "foreign-stats", root / "run-in"
    (f.foreign_run / "curated").mkdir(parents=True)
    (f.foreign_run / "run.json").write_text(json.dumps({"my": "notes"}))
    (f.foreign_run / "curated" / "keep.txt").write_text("mine")
    f.foreign_stats.mkdir()
    (f.foreign_stats / "stats.json").write_text(json.dumps({"mine": 1}))
    (f.run_with_input / "curated").mkdir(parents=True)
    (f.run_with_input / "run.json").write_text(json.dumps({"options": {}, "started": "", "machine": {}, "stages": {}}))
    shutil.copy(f.warc, f.run_with_input / "curated" / "a.warc.gz")
    f.dataset_part = str(sorted(Path(f.dataset, "data").glob("*.parquet"))[0])
    f.resp_prompts = write("y.responses.jsonl", json.dumps({"prompt": "Say hi."}) + "\n")
    f.published = root / "published"
    shutil.copytree(f.dataset, f.published)
    (f.published / "README.md").write_text("my notes on this dataset")
    from filters.language import LanguageConfig
    from pipeline.resources import language_model_path
    f.lid = language_model_path(LanguageConfig())
    f.garbage_run = root / "garbage-run"
    f.garbage_run.mkdir()
    (f.garbage_run / "config.json").write_text("{oops")
    f.int_text = root / "int-text"
    (f.int_text / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": [1, 2, 3]}), f.int_text / "data" / "part-0.parquet")
    f.quality_copy = str(root / "quality-copy.bin")
    shutil.copy(f.quality, f.quality_copy)
    shutil.copy(f.quality + ".json", f.quality_copy + ".json")
    f.escaping_manifest = root / "escaping-manifest"
    f.escaping_manifest.mkdir()
    (f.escaping_manifest / "manifest.json").write_text(json.dumps(
        {"kind": "tokens", "files": {"../a-file.txt": {"bytes": 25, "sha256": "0" * 64}}}))
    f.cut_parquet, f.no_text = root / "cut-parquet", root / "no-text"
    (f.cut_parquet / "data").mkdir(parents=True)
    (f.cut_parquet / "data" / "part-0.parquet").write_bytes(Path(f.dataset_part).read_bytes()[:3000])
    (f.no_text / "data").mkdir(parents=True)
    pq.write_table(pa.table({"body": ["words"]}), f.no_text / "data" / "part-0.parquet")
    return f


M = ["--max-new-tokens", "2"]
CASES = {
    # -- numbers: the argument parser says which option, what it expected and what came
    "generate --seed 10**30": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--seed",
                                               str(10 ** 30)], 2,
                                   "argument --seed: expected a seed from 0 to 2**63 - 1"),
    "generate --temperature inf": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--temperature",
                                                  "inf"], 2, "argument --temperature: expected a number >= 0, got inf"),
    "generate --top-p 0": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--top-p", "0"], 2,
                               "argument --top-p: expected a number in (0, 1], got 0"),
    "generate --top-k -1": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--top-k", "-1"], 2,
                                "argument --top-k: expected an integer >= 0, got -1"),
    "generate --temperature -1": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--temperature",
                                                 "-1"], 2, "argument --temperature: expected a number >= 0, got -1"),
    "generate --max-new-tokens -5": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi",
                                                    "--max-new-tokens", "-5"], 2, "expected an integer >= 1, got -5"),
    "generate --seed x": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi", "--seed", "x"], 2,
                              "argument --seed: expected a seed from 0 to 2**63 - 1, got 'x'"),
    "chat --top-p 1.5": Case(lambda w: ["chat", "--model", w.model, "--top-p", "1.5"], 2,
                             "argument --top-p: expected a number in (0, 1], got 1.5"),
    "eval --limit -1": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy", "--limit", "-1"], 2,
                            "argument --limit: expected an integer >= 1, got -1"),
    "eval --limit 0": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy", "--limit", "0"], 2,
                           "argument --limit: expected an integer >= 1, got 0"),
    "eval --text-bytes 0": Case(lambda w: ["eval", "--model", w.model, "--tasks", "wikitext", "--text-bytes", "0"],
                                2, "argument --text-bytes: expected an integer >= 1, got 0"),
    "eval --tasks nosuch": Case(lambda w: ["eval", "--model", w.model, "--tasks", "nosuch"], 2, "nosuch"),
    "contamination --permutations 0": Case(lambda w: ["contamination", "--model", w.model, "--benchmark",
                                                      w.same_lines, "--permutations", "0"], 2,
                                           "argument --permutations: expected an integer >= 1, got 0"),
    "label serve --port 70000": Case(lambda w: ["label", "serve", "--prompts", w.prompts, "--output",
                                                str(w.root / "l.jsonl"), "--port", "70000"], 2,
                                     "argument --port: expected a port number 0-65535, got 70000"),
    "tokenizer train --vocab-size 0": Case(lambda w: ["tokenizer", "train", "--input", w.dataset, "--vocab-size",
                                                      "0", "--output", str(w.root / "t0")], 2,
                                           "argument --vocab-size: expected an integer >= 1, got 0"),
    "curate --warc-files -1": Case(lambda w: ["curate", "--crawl", "CC-MAIN-2024-10", "--warc-files", "-1",
                                              "--output", str(w.root / "c")], 2,
                                   "argument --warc-files: expected an integer >= 1, got -1"),
    "selfinstruct --n 0": Case(lambda w: ["selfinstruct", "--model", w.model, "--output", str(w.root / "s.jsonl"),
                                          "--n", "0"], 2, "argument --n: expected an integer >= 1, got 0"),
    "scaling cost --mfu 2": Case(lambda w: ["scaling", "cost", "--params", "1e9", "--tokens", "2e10", "--gpus", "8",
                                            "--mfu", "2"], 2, "argument --mfu"),
    "run --steps 0": Case(lambda w: ["run", "--output", str(w.root / "r"), "--steps", "0"], 2,
                          "--steps must be >= 1, got 0"),
    "ablate --tokens -1": Case(lambda w: ["ablate", "--output", str(w.root / "a"), "--tokens", "-1", "default"], 2,
                               "--tokens must be >= 1, got -1"),
    # -- config values: the key, what it must be, what came
    "train model.n_heads=0": Case(lambda w: ["train", "--set", f"data.tokens={w.tokens}", "--set",
                                             f"run.out_dir={w.root / 't1'}", "--set", "model.n_heads=0"], 2,
                                  "n_heads"),
    "train optim.warmup_steps=-1": Case(lambda w: ["train", "--set", f"data.tokens={w.tokens}", "--set",
                                                   f"run.out_dir={w.root / 't2'}", "--set", "optim.warmup_steps=-1"],
                                        2, "warmup_steps must be >= 0, got -1"),
    "train run.steps=-1": Case(lambda w: ["train", "--set", f"data.tokens={w.tokens}", "--set",
                                          f"run.out_dir={w.root / 't3'}", "--set", "run.steps=-1"], 2,
                               "steps must be >= 1, got -1"),
    "train run.batch_size=x": Case(lambda w: ["train", "--set", f"data.tokens={w.tokens}", "--set",
                                              f"run.out_dir={w.root / 't4'}", "--set", "run.batch_size=x"], 2,
                                   "run.batch_size"),
    "train nosuch.key=1": Case(lambda w: ["train", "--set", "nosuch.key=1"], 2, "nosuch"),
    "train --config broken.yaml": Case(lambda w: ["train", "--config", w.broken_yaml], 2, "broken.yaml"),
    "train --config list.yaml": Case(lambda w: ["train", "--config", w.not_mapping], 2, "list.yaml"),
    "train --config missing": Case(lambda w: ["train", "--config", str(w.root / "missing.yaml")], 2, "missing.yaml"),
    "train data.tokens missing": Case(lambda w: ["train", "--set", f"data.tokens={w.root / 'none'}", "--set",
                                                 f"run.out_dir={w.root / 't5'}"], 2, "data.tokens: no such folder"),
    "train --resume missing": Case(lambda w: ["train", "--resume", str(w.root / "never")], 2, "never"),
    "reward data.held_out_every=0": Case(lambda w: ["reward", "--model", w.model, "--pairs", w.lists, "--output",
                                                    str(w.root / "r1"), "--set", "data.held_out_every=0"], 2,
                                         "held_out_every must be >= 2, got 0"),
    "sft run.batch_size=0": Case(lambda w: ["sft", "--model", w.model, "--data", w.prompts, "--output",
                                            str(w.root / "s1"), "--set", "run.batch_size=0"], 2,
                                 "batch_size must be >= 1, got 0"),
    "ppo ppo.rollouts=0": Case(lambda w: ["ppo", "--model", w.model, "--reward-model", w.model, "--output",
                                          str(w.root / "p1"), "--set", "ppo.rollouts=0"], 2,
                               "ppo.rollouts must be >= 1, got 0"),
    "ppo sampling.top_p=0": Case(lambda w: ["ppo", "--model", w.model, "--reward-model", w.model, "--output",
                                            str(w.root / "p2"), "--set", "sampling.top_p=0"], 2, "top_p"),
    "curate --config broken.yaml": Case(lambda w: ["curate", "--input", w.warc, "--output", str(w.root / "c1"),
                                                   "--config", w.broken_yaml], 2, "broken.yaml"),
    "curate read.http_attempts=0": Case(lambda w: ["curate", "--input", w.warc, "--output", str(w.root / "c3"),
                                                   "--set", "read.http_attempts=0"], 2, "http_attempts must be >= 1"),
    # -- files of rows: the file, the line, what was wrong
    "dpo empty pairs": Case(lambda w: ["dpo", "--model", w.model, "--pairs", w.empty, "--output",
                                       str(w.root / "d1")], 2, "empty.jsonl"),
    "reward rows that are lists": Case(lambda w: ["reward", "--model", w.model, "--pairs", w.lists, "--output",
                                                  str(w.root / "r2")], 2,
                                       "lists.jsonl, line 2: expected a JSON object, got a list"),
    "reward a row without rejected": Case(lambda w: ["reward", "--model", w.model, "--pairs", w.no_key, "--output",
                                                     str(w.root / "r3")], 2,
                                          "no-key.jsonl, line 2: expected chosen and rejected"),
    "dpo a line that is not JSON": Case(lambda w: ["dpo", "--model", w.model, "--pairs", w.not_json, "--output",
                                                   str(w.root / "d2")], 2, "not-json.jsonl, line 3: not JSON"),
    "dpo truncated gz": Case(lambda w: ["dpo", "--model", w.model, "--pairs", w.truncated_gz, "--output",
                                        str(w.root / "d3")], 2, "truncated.jsonl.gz: cannot read it"),
    "sft latin-1 file": Case(lambda w: ["sft", "--model", w.model, "--data", w.latin1, "--output",
                                        str(w.root / "s2")], 2, "latin1.jsonl: not UTF-8 text"),
    "sft missing data": Case(lambda w: ["sft", "--model", w.model, "--data", str(w.root / "nope.jsonl"), "--output",
                                        str(w.root / "s3")], 2, "nope.jsonl"),
    "label stats missing": Case(lambda w: ["label", "stats", str(w.root / "nope.jsonl")], 2, "nope.jsonl"),
    "label stats lists": Case(lambda w: ["label", "stats", w.lists], 2, "lists.jsonl, line 2"),
    "label stats without judgements": Case(lambda w: ["label", "stats", w.prompts], 2,
                                           "prompts.jsonl: no judgements in it"),
    "label stats with a number for a labeler": Case(lambda w: ["label", "stats", w.number_labeler], 2,
                                                    "number-labeler.jsonl, line 1: item and labeler must be text"),
    "selfinstruct missing seeds": Case(lambda w: ["selfinstruct", "--model", w.model, "--seeds",
                                                  str(w.root / "nope.jsonl"), "--output", str(w.root / "s.jsonl")],
                                       2, "nope.jsonl"),
    "quality score not JSON": Case(lambda w: ["quality", "score", "--model", w.quality, "--input", w.not_json,
                                              "--output", str(w.root / "q0.jsonl")], 2,
                                   "not-json.jsonl, line 3: not JSON"),
    # -- models and folders that are missing, damaged or something else
    "generate a model that is not there": Case(lambda w: ["generate", "--model", str(w.root / "nope"), "--prompt",
                                                          "Hi"], 2, "nope"),
    "generate a folder that is not a model": Case(lambda w: ["generate", "--model", w.label_dir, "--prompt", "Hi"],
                                                  2, "label-dir"),
    "generate a corrupt tokenizer": Case(lambda w: ["generate", "--model", w.model, "--prompt", "Hi",
                                                    "--tokenizer", w.bad_tok, *M], 2, "tokenizer.model"),
    "tokenize a corrupt tokenizer": Case(lambda w: ["tokenize", "--input", w.dataset, "--tokenizer", w.bad_tok,
                                                    "--output", str(w.root / "k1")], 2, "tokenizer.model"),
    "quality score a half-written model": Case(lambda w: ["quality", "score", "--model", w.half_quality, "--input",
                                                          w.scores, "--output", str(w.root / "q1.jsonl")], 2,
                                               "half-quality.bin: sha256 differs"),
    "quality score a file that is not a model": Case(lambda w: ["quality", "score", "--model", w.garbage,
                                                                "--input", w.scores, "--output",
                                                                str(w.root / "q2.jsonl")], 2,
                                                     "garbage.bin: not a fastText model"),
    "ppo a reward model that is not one": Case(lambda w: ["ppo", "--model", w.model, "--reward-model", w.model,
                                                          "--output", str(w.root / "p3"), "--set",
                                                          "ppo.iterations=1"], 2, "reward"),
    "verify a missing folder": Case(lambda w: ["verify", str(w.root / "nope")], 2, "nope"),
    "verify a file": Case(lambda w: ["verify", w.a_file], 2, "a-file.txt: a file; give the folder"),
    "publish a missing folder": Case(lambda w: ["publish", str(w.root / "nope")], 2, "nope"),
    "domains train a missing dataset": Case(lambda w: ["domains", "train", "--input", str(w.root / "nope"),
                                                       "--output", str(w.root / "dm.bin")], 2, "nope"),
    "curate a missing input": Case(lambda w: ["curate", "--input", str(w.root / "nope*.warc.gz"), "--output",
                                              str(w.root / "c2"), "--no-progress"], 2, "nope"),
    # -- outputs: never inside a file, never over the input, never over a folder refinery does not own
    "tokenizer train into a file's folder": Case(lambda w: ["tokenizer", "train", "--input", w.dataset,
                                                            "--output", f"{w.a_file}/tok"], 2, "a-file.txt"),
    "tokenize into a file's folder": Case(lambda w: ["tokenize", "--input", w.dataset, "--tokenizer", w.tok,
                                                     "--output", f"{w.a_file}/tokens"], 2, "a-file.txt"),
    "export into a file's folder": Case(lambda w: ["export", "--model", w.model, "--output", f"{w.a_file}/hf"], 2,
                                        "a-file.txt"),
    "eval --log-samples into a file's folder": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy",
                                                                "--limit", "2", "--log-samples",
                                                                f"{w.a_file}/s.jsonl"], 2, "a-file.txt is a file"),
    "quality score into a file's folder": Case(lambda w: ["quality", "score", "--model", w.quality, "--input",
                                                          w.scores, "--output", f"{w.a_file}/s.jsonl"], 2,
                                               "a-file.txt"),
    "train into a file's folder": Case(lambda w: ["train", "--set", f"data.tokens={w.tokens}", "--set",
                                                  f"run.out_dir={w.a_file}/run"], 2, "a-file.txt"),
    "quality score over its input": Case(lambda w: ["quality", "score", "--model", w.quality, "--input", w.scores,
                                                    "--output", w.scores], 2, "is the input"),
    "tokenize over its input": Case(lambda w: ["tokenize", "--input", w.dataset, "--tokenizer", w.tok, "--output",
                                               w.dataset], 2, "is the input"),
    "tokenize into an earlier token folder": Case(lambda w: ["tokenize", "--input", w.dataset, "--tokenizer", w.tok,
                                                             "--output", w.used_tokens], 2, "--overwrite"),
    "tokenize a domain that leaves the folder": Case(lambda w: ["tokenize", "--input", w.escape, "--tokenizer",
                                                                w.tok, "--output", str(w.root / "k2")], 2,
                                                     "domain label in"),
    "publish a folder with someone's stats.json": Case(lambda w: ["publish", w.foreign_stats], 2,
                                                        "stats.json: not the stats.json `refinery curate` writes"),
    "verify a manifest naming a file outside": Case(lambda w: ["verify", w.escaping_manifest], 1,
                                                    "file '../a-file.txt' is not inside the folder"),
    "quality train --epoch 10**20": Case(lambda w: ["quality", "train", "--epoch", str(10 ** 20), "--output",
                                                     str(w.root / "q11.bin")], 2, "--epoch must be from 1 to 10,000"),
    "quality train on random bytes": Case(lambda w: ["quality", "train", "--positive", w.garbage, "--output",
                                                      str(w.root / "q9.bin")], 2, "garbage.bin: not text"),
    "quality train with a field no row has": Case(lambda w: ["quality", "train", "--positive", w.scores, "--field",
                                                             "nosuch", "--output", str(w.root / "q10.bin")], 2,
                                                  "under the field 'nosuch'"),
    "domains train over a quality model": Case(lambda w: ["domains", "train", "--input", w.dataset, "--output",
                                                           w.quality_copy], 2, "not a domain model's card"),
    "sft on conversations without a reply": Case(lambda w: ["sft", "--model", w.model, "--data", w.no_reply, "--output",
                                                            str(w.root / "s9")], 2,
                                                 "no-reply.jsonl: no conversation with an assistant reply"),
    "sft with a seq_len of 10**11": Case(lambda w: ["sft", "--model", w.model, "--data", w.no_reply, "--output",
                                                    str(w.root / "s11"), "--set", "data.seq_len=100000000000"], 2,
                                         "seq_len must be <= 1,048,576, got 100,000,000,000"),
    "sft on instances without an output": Case(lambda w: ["sft", "--model", w.model, "--data", w.bad_instances,
                                                          "--output", str(w.root / "s13")], 2,
                                               "bad-instances.jsonl, line 1: instances[0] must be an object with an "
                                               "output"),
    "sft on a JSON list with a null item": Case(lambda w: ["sft", "--model", w.model, "--data", w.null_item,
                                                           "--output", str(w.root / "s14")], 2,
                                                "null-item.json, item 2: expected a JSON object, got null"),
    "label serve on prompts whose turns are a string": Case(lambda w: ["label", "serve", "--model", w.model,
                                                                       "--prompts", w.turns_text, "--output",
                                                                       str(w.root / "turns.jsonl")], 2,
                                                            "turns-text.jsonl, line 1: turns must be a list of "
                                                            "strings, got a string"),
    "sft on a folder": Case(lambda w: ["sft", "--model", w.model, "--data", w.others, "--output",
                                       str(w.root / "s12")], 2, "others: a folder, expected a JSON or JSONL file"),
    "sft with a learning rate of nan": Case(lambda w: ["sft", "--model", w.model, "--data", w.no_reply, "--output",
                                                       str(w.root / "s10"), "--set", "optim.lr=nan"], 2,
                                            "optim.lr: expected a finite number, got 'nan'"),
    "eval with more shots than items": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy", "--shots",
                                                       "100000"], 2, "arc_easy: --shots 100000 leaves no item"),
    "tokenize a cut Parquet file": Case(lambda w: ["tokenize", "--input", w.cut_parquet, "--tokenizer", w.tok,
                                                    "--output", str(w.root / "k3")], 2,
                                        "cut-parquet/data/part-0.parquet: not a Parquet file"),
    "tokenize a Parquet file without text": Case(lambda w: ["tokenize", "--input", w.no_text, "--tokenizer", w.tok,
                                                            "--output", str(w.root / "k4")], 2,
                                                 "part-0.parquet: no text column (it has body)"),
    "curate into a folder of other files": Case(lambda w: ["curate", "--input", w.warc, "--output", w.others,
                                                           "--no-progress"], 2, "not a curated dataset"),
    "run into a folder with someone's run.json": Case(lambda w: ["run", "--output", w.foreign_run, "--input", w.warc,
                                                                "--no-quality"], 2, "no run.json of its own"),
    "run on an input inside its output": Case(lambda w: ["run", "--output", w.run_with_input, "--input",
                                                         w.run_with_input / "curated" / "a.warc.gz", "--no-quality"],
                                              2, "holds the input"),
    "curate into a folder with someone's stats.json": Case(lambda w: ["curate", "--input", w.warc, "--output",
                                                                      w.foreign_stats, "--no-progress"], 2,
                                                           "not a curated dataset"),
    "quality train over its input": Case(lambda w: ["quality", "train", "--positive", w.scores, "--negative", w.warc,
                                                    "--output", w.scores], 2, "is the input"),
    "quality train over someone's file": Case(lambda w: ["quality", "train", "--positive", w.scores, "--negative",
                                                         w.warc, "--output", w.a_file], 2,
                                              "a-file.txt: a file is there that is not a fastText model"),
    "quality train a line that is not JSON": Case(lambda w: ["quality", "train", "--positive", w.not_json,
                                                             "--negative", w.warc, "--output", w.root / "q9.bin"], 2,
                                                  "not-json.jsonl, line 3: not JSON"),
    "quality score over its model": Case(lambda w: ["quality", "score", "--model", w.quality, "--input", w.scores,
                                                    "--output", w.quality], 2, "is the input"),
    "quality score over its model's card": Case(lambda w: ["quality", "score", "--model", w.quality, "--input",
                                                           w.scores, "--output", w.quality + ".json"], 2,
                                                "is the input"),
    "quality eval a model of another kind": Case(lambda w: ["quality", "eval", "--model", w.lid], 2,
                                                 "not a quality model"),
    "curate with a quality model of another kind": Case(lambda w: ["curate", "--input", w.warc, "--output",
                                                                   w.root / "c8", "--quality-model", w.lid,
                                                                   "--no-progress"], 2, "not a quality model"),
    "domains train over its input": Case(lambda w: ["domains", "train", "--input", w.dataset, "--output",
                                                    w.dataset_part], 2, "is inside the input"),
    "eval over the model's files": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy", "--limit", "2",
                                                   "--output", Path(w.model) / "results.json"], 2, "is inside the input"),
    "eval over someone's file": Case(lambda w: ["eval", "--model", w.model, "--tasks", "arc_easy", "--limit", "2",
                                                "--output", w.a_file], 2, "not a results file"),
    "contamination over its benchmark": Case(lambda w: ["contamination", "--model", w.model, "--benchmark",
                                                        w.same_lines, "--output", w.same_lines], 2, "is the input"),
    "selfinstruct over its seeds": Case(lambda w: ["selfinstruct", "--model", w.model, "--seeds", w.prompts,
                                                   "--output", w.prompts], 2, "is the input"),
    "label serve over its prompts": Case(lambda w: ["label", "serve", "--model", w.model, "--prompts",
                                                    w.resp_prompts, "--output", w.root / "y.jsonl",
                                                    "--generate-only"], 2, "is the input"),
    "publish over someone's README": Case(lambda w: ["publish", w.published], 2,
                                          "README.md: not a file refinery publish wrote"),
    "eval --tasks ,": Case(lambda w: ["eval", "--model", w.model, "--tasks", ","], 2, "names no task"),
    "eval --stride above --window": Case(lambda w: ["eval", "--model", w.model, "--tasks", "wikitext", "--window", "8",
                                                    "--stride", "100", "--text-bytes", "2000"], 2,
                                         "--stride 100 is more than the window of 8 tokens"),
    "scaling sweep --budgets -5": Case(lambda w: ["scaling", "sweep", "--tokens", w.tokens, "--output", w.root / "sw",
                                                  "--budgets", "-5"], 2, "--budgets: expected numbers > 0"),
    "run --tasks nosuch": Case(lambda w: ["run", "--output", w.root / "r2", "--input", w.warc, "--no-quality",
                                          "--tasks", "wikitext,nosuch"], 2, "nosuch"),
    "curate --input ''": Case(lambda w: ["curate", "--input", "", "--output", w.root / "c7", "--no-progress"], 2,
                              "names no file"),
    "curate --input a folder": Case(lambda w: ["curate", "--input", w.label_dir, "--output", w.root / "c6",
                                               "--no-progress"], 2, "label-dir: a folder"),
    "curate gopher_quality.min_words=-10": Case(lambda w: ["curate", "--input", w.warc, "--output", w.root / "c5",
                                                           "--set", "gopher_quality.min_words=-10"], 2,
                                                "gopher_quality.min_words must be >= 0, got -10"),
    "curate mix.min_confidence=5": Case(lambda w: ["curate", "--input", w.warc, "--output", w.root / "c4",
                                                   "--set", "mix.min_confidence=5"], 2,
                                        "mix.min_confidence must be in [0, 1]"),
    "ppo ppo.minibatch above rollouts": Case(lambda w: ["ppo", "--model", w.model, "--reward-model", w.model,
                                                        "--output", w.root / "p4", "--set", "ppo.rollouts=4", "--set",
                                                        "ppo.minibatch=8"], 2, "ppo.minibatch (8) must be at most"),
    "contamination an empty benchmark": Case(lambda w: ["contamination", "--model", w.model, "--benchmark", w.empty],
                                             2, "empty.jsonl: no examples"),
    "train --resume a broken config.json": Case(lambda w: ["train", "--resume", w.garbage_run], 2,
                                                "config.json: not readable JSON"),
    "sft --resume a broken config.json": Case(lambda w: ["sft", "--resume", w.garbage_run], 2,
                                              "config.json: not readable JSON"),
    "tokenizer train over an earlier tokenizer": Case(lambda w: ["tokenizer", "train", "--input", w.dataset,
                                                                 "--output", w.tok], 2, "pass --overwrite"),
    "tokenizer train a text column of numbers": Case(lambda w: ["tokenizer", "train", "--input", w.int_text,
                                                                "--output", w.root / "t9"], 2,
                                                     "column text holds int64, expected text"),
    "label serve into a folder": Case(lambda w: ["label", "serve", "--model", w.model, "--prompts", w.prompts,
                                                 "--output", w.label_dir, "--generate-only"], 2,
                                    "label-dir is a folder"),
    "label serve under a missing folder": Case(lambda w: ["label", "serve", "--model", w.model, "--prompts", w.prompts,
                                                          "--output", str(w.root / "no" / "pairs.jsonl"),
                                                          "--generate-only"], 2, "does not exist"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_clear_answer(name, w, capsys):
    case = CASES[name]
    before = snapshot(w)
    try:
        code = main([str(a) for a in case.args(w)])
    except SystemExit as e:                           # the argument parser's refusal
        code = e.code
    out = capsys.readouterr()
    said = out.out + out.err
    assert "Traceback" not in said and "unexpected error" not in said, said
    assert code == case.code, said
    assert case.says in said, said
    after = snapshot(w)
    assert after == before, f"changed: {sorted(set(after.items()) ^ set(before.items()))}"


def snapshot(w) -> dict:
    """Every file and folder under the table's inputs, with size and mtime: a refused command leaves no trace."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder" for p in sorted(w.root.rglob("*"))}


# ---- what needs a process of its own: bytes that are not UTF-8 in argv and stdin, a loop that could hang


def refinery(*args, stdin: bytes = b"", timeout: float = 300, env: dict | None = None):
    env = env or {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *args], input=stdin, capture_output=True,
                          timeout=timeout, cwd=REPO, env=env)


def test_argv_that_is_not_utf8(w):
    done = refinery(b"generate", b"--model", w.model.encode(), b"--prompt", b"caf\xe9", *[a.encode() for a in M])
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode in (0, 2) and "Traceback" not in said and "unexpected error" not in said, said


@pytest.mark.parametrize("locale", ["UTF-8", "C"])
def test_chat_on_stdin_that_is_not_utf8(w, locale):
    """Bytes that are not UTF-8 become U+FFFD and the model answers; under the C locale Python once handed them
    on as surrogates that the tokenizer could not take."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update({"LC_ALL": "C.UTF-8" if locale == "UTF-8" else "C"})
    done = refinery("chat", "--model", w.model, *M, stdin=b"caf\xe9 \xff\xfe\n", env=env)
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode == 0 and "model>" in said and "Traceback" not in said, said


def test_contamination_on_identical_lines_ends(w):
    """It once shuffled forever looking for an order that differs from the original."""
    done = refinery("contamination", "--model", w.model, "--benchmark", w.same_lines, "--no-progress", timeout=120)
    said = (done.stdout + done.stderr).decode()
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "same.jsonl: every example is identical" in said


def test_tokenize_overwrite_removes_only_the_earlier_shards(w, tmp_path):
    """--overwrite replaces a token folder: the files its manifest lists go, anything else stays."""
    target = tmp_path / "tokens"
    shutil.copytree(w.tokens, target)
    (target / "notes.txt").write_text("mine")
    assert main(["tokenize", "--input", w.dataset, "--tokenizer", w.tok, "--output", str(target),
                 "--overwrite"]) == 0
    assert (target / "notes.txt").read_text() == "mine"
    (target / "notes.txt").unlink()                            # verify counts any file the manifest does not list
    assert main(["verify", str(target)]) == 0


def test_every_verb_has_a_row():
    """A new verb joins the table (the first word of each row's name is its verb)."""
    assert set(VERBS) - {name.split()[0] for name in CASES} == set()
