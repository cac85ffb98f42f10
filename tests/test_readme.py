"""The README's command list runs as written after the quick start: each `refinery …` line, in order, in a folder
holding what `make run` makes (`out/run/`, `out/models/quality.bin`; here from `refinery run` on 100 pages).

The test runs the README's own text: paths, verbs and flags exactly as a user copies them. Two things change:
`../shared/data` and `configs/` point at the real folders, and a few flags are appended to make the heavy
commands test-sized (a later flag wins over the line's own, as it would for the user). The lines it leaves out,
with the reason for each, are SKIPPED.
"""
import io
import re
import shlex
import shutil
from pathlib import Path

from pipeline.app.cli import main
from tests.conftest import REPO

SKIPPED = {      # the start of a line -> why this test does not run it
    "refinery run": "the quick start itself (make run); tiny_run made its outputs, tests/pipeline/test_run.py checks it",
    "refinery ablate": "trains 2 arms x 2 seeds for minutes; tests/pipeline/test_run.py runs it on 100 pages",
    "refinery curate --input '../shared": "the whole sample crawl (~60 s); the session fixture sample_run runs this "
                                          "same command",
    "refinery curate --input 'gs://": "needs Google Cloud (Dataflow, GCS buckets)",
    "refinery curate --crawl": "downloads from Common Crawl (no network here)",
    "refinery quality train": "reads ~50 MB of text for ~45 s; the session fixture quality_model and "
                              "tests/pipeline/test_quality.py train and evaluate it",
    "refinery scaling sweep": "trains a grid of models for minutes; tests/training/test_scaling.py runs sweep and fit",
    "refinery scaling fit": "fits what the sweep writes",
    "refinery selfinstruct": "generates with SmolLM2-135M for minutes; tests/training/test_selfinstruct.py",
    "refinery label serve": "a server that runs until stopped; tests/training/test_label.py drives it in Chromium",
    "refinery label stats": "reads the judgements `label serve` writes; tests/training/test_label.py",
}
TRAIN = ["--set", "model.dim=32", "--set", "model.n_layers=1", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
         "--set", "data.seq_len=64", "--set", "model.max_seq_len=64", "--set", "run.batch_size=4",
         "--set", "run.progress=false", "--set", "run.threads=1"]
POST = ["--set", "run.steps=2", "--set", "run.progress=false", "--set", "run.threads=1", "--set", "data.seq_len=64"]
SMALLER = {      # verb (and sub-verb) -> flags appended to make the line test-sized
    "tokenizer train": ["--vocab-size", "600"],
    "train --config": [*TRAIN, "--set", "run.steps=4", "--set", "run.eval_every=2", "--set", "optim.warmup_steps=1",
                       "--set", "data.val_tokens=2048"],
    "eval": ["--limit", "2", "--text-bytes", "3000", "--no-progress"],
    "contamination": ["--limit", "40", "--shards", "4", "--permutations", "2", "--no-progress"],
    "generate": ["--max-new-tokens", "8"],
    "sft": POST,
    "reward": [*POST, "--set", "data.limit=40"],
    "dpo": [*POST, "--set", "data.limit=40", "--set", "lengths.prompts=2", "--set", "lengths.max_new_tokens=4"],
    "ppo": ["--set", "ppo.iterations=1", "--set", "ppo.rollouts=4", "--set", "ppo.minibatch=2",
            "--set", "sampling.max_new_tokens=4", "--set", "data.held_out_prompts=2", "--set", "data.limit=20",
            "--set", "run.progress=false", "--set", "run.threads=1"],
}
STDIN = {"chat": "Hello there\n/quit\n"}


def readme_commands() -> list[str]:
    """The `refinery` lines of the README's command list (continuations joined, comments removed), each part of
    an `a && b` line on its own."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## `refinery`.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    lines = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        lines += [part.strip() for part in line.split("&&")] if line.startswith("refinery ") else []
    return lines


def _args(line: str, data: Path) -> list[str]:
    line = line.replace("../shared/data", str(data)).replace(" configs/", f" {REPO}/configs/")
    args = shlex.split(line)[1:]
    for key, extra in SMALLER.items():
        if " ".join(args).startswith(key):
            return [*args, *extra]
    return args


def test_the_readme_lists_every_verb_and_the_skips_exist():
    from pipeline.app.cli import VERBS
    lines = readme_commands()
    assert {shlex.split(line)[1] for line in lines} == set(VERBS)
    for start in SKIPPED:
        assert any(line.startswith(start) for line in lines), f"SKIPPED names a line the README no longer has: {start}"


def test_every_readme_command_runs_after_the_quick_start(tiny_run, quality_model, data, tmp_path, monkeypatch,
                                                         capsys):
    code, run = tiny_run
    assert code == 0
    shutil.copytree(run, tmp_path / "out" / "run")
    (tmp_path / "out" / "models").mkdir()
    shutil.copy(quality_model[0], tmp_path / "out" / "models" / "quality.bin")
    monkeypatch.chdir(tmp_path)
    ran, lines = [], readme_commands()
    for line in lines:
        if any(line.startswith(start) for start in SKIPPED):
            continue
        args = _args(line, data)
        monkeypatch.setattr("sys.stdin", io.StringIO(STDIN.get(args[0], "")))
        try:
            code = main(args)
        except SystemExit as e:          # argparse's --help exits 0
            code = e.code
        assert code == 0, f"README line failed: {line}\n{capsys.readouterr().err[-2000:]}"
        ran.append(line)
    assert len(ran) == len([x for x in lines if not any(x.startswith(start) for start in SKIPPED)]) == 20
    assert (tmp_path / "out/hf-model/tokenizer.json").is_file() and (tmp_path / "out/ppo/manifest.json").is_file()
    err = capsys.readouterr().err
    assert "Traceback" not in err
