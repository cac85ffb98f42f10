"""The training loop on real tokens of the curated sample crawl: schedules, exact resume after a kill, DDP,
mixture-of-experts balance and the collapse warning, continual pretraining at a longer context."""
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.app.cli import main
from training.loop import OptimConfig, decay_start, lr_at, read_log, tokens_axis
from training.pretrain import load_train_config, pretrain

REPO = Path(__file__).resolve().parents[2]


def tiny(tokens, out, *extra) -> list[str]:
    """--set overrides for a ~0.3 M-parameter model on the sample crawl's tokens."""
    return ["--set", f"data.tokens={tokens}", "--set", f"run.out_dir={out}", "--set", "data.seq_len=32",
            "--set", "model.dim=32", "--set", "model.max_seq_len=32", "--set", "model.n_layers=2", "--set", "model.n_heads=4",
            "--set", "model.n_kv_heads=2", "--set", "run.batch_size=4", "--set", "run.progress=false",
            "--set", "run.log_every=1", "--set", "run.threads=1", "--set", "data.val_tokens=2048",
            "--set", "optim.warmup_steps=3", *extra]


def sets(args: list[str]) -> list[str]:
    return [a for a in args if a != "--set"]


def losses(run: Path) -> dict[int, float]:
    rows, _ = read_log(run / "log.jsonl")
    return {r["step"]: r["loss"] for r in rows}


# ---- schedules


def test_cosine_warms_up_peaks_and_ends_at_the_floor():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    rates = [lr_at(s, cfg, 100) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(rates[10:], rates[11:]))
    assert lr_at(100, cfg, 100) == pytest.approx(1e-4)
    assert rates[55] == pytest.approx(1e-4 + 0.5 * 0.9e-3)                   # half way down at half way


def test_wsd_holds_then_decays_over_the_last_fraction():
    cfg = OptimConfig(lr=1e-3, warmup_steps=10, schedule="wsd", decay_fraction=0.2, min_lr_ratio=0.0)
    assert decay_start(cfg, 100) == 80
    assert all(lr_at(s, cfg, 100) == pytest.approx(1e-3) for s in range(9, 80))
    tail = [lr_at(s, cfg, 100) for s in range(80, 100)]
    assert all(a > b for a, b in zip(tail, tail[1:])) and tail[-1] == pytest.approx(0.0)


def test_bad_optim_values_name_the_key():
    with pytest.raises(ValueError, match="schedule must be one of"):
        OptimConfig(schedule="exponential")
    with pytest.raises(ValueError, match="lr must be > 0"):
        OptimConfig(lr=0)


# ---- resume


def test_killed_run_resumes_with_the_same_losses(sample_tokens, tmp_path):
    """SIGKILL a CPU run after a checkpoint; `refinery train --resume` continues with the losses of a run that
    was never interrupted."""
    steps = 400
    common = ["--set", f"run.steps={steps}", "--set", "run.checkpoint_every=5", "--set", "run.eval_every=0"]
    whole = tmp_path / "whole"
    assert main(["train", *tiny(sample_tokens, whole), *common]) == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "train", *tiny(sample_tokens, killed), *common],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest").exists():
        assert time.time() < deadline and proc.poll() is None, "no checkpoint within 2 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = killed / "checkpoints" / (killed / "checkpoints" / "latest").read_text()
    resumed_at = json.loads((latest / "state.json").read_text())["step"]
    assert 5 <= resumed_at < steps, "the run was not killed part way"
    assert main(["train", "--resume", str(killed)]) == 0
    ours, reference = losses(killed), losses(whole)
    assert sorted(ours) == list(range(1, steps + 1))           # steps logged after the checkpoint are redone once
    assert [ours[s] for s in range(resumed_at + 1, steps + 1)] == \
        [reference[s] for s in range(resumed_at + 1, steps + 1)]


def test_stop_and_resume_in_process_matches_exactly(sample_tokens, tmp_path):
    whole = load_train_config(None, sets(tiny(sample_tokens, tmp_path / "a", "--set", "run.steps=12")))
    pretrain(whole)
    stopped = load_train_config(None, sets(tiny(sample_tokens, tmp_path / "b", "--set", "run.steps=12",
                                                "--set", "run.stop_at_step=7")))
    summary = pretrain(stopped)
    assert summary["stopped_early"] and summary["steps"] == 7
    resumed = load_train_config(None, sets(tiny(sample_tokens, tmp_path / "b", "--set", "run.steps=12")))
    pretrain(resumed, resume=True)
    assert losses(tmp_path / "b") == losses(tmp_path / "a")
    a = torch.load(tmp_path / "a/checkpoints/step-000012/model.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/step-000012/model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err


# ---- DDP


def test_two_gloo_processes_equal_one_process_with_twice_the_accumulation(sample_tokens, tmp_path):
    common = ["--set", "run.steps=4", "--set", "run.eval_every=0", "--set", "run.checkpoint_every=0"]
    one = tmp_path / "one"
    assert main(["train", *tiny(sample_tokens, one), *common, "--set", "run.grad_accum=2"]) == 0
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "pipeline.app.cli", "train", *tiny(sample_tokens, two), *common],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    a = torch.load(one / "checkpoints/step-000004/model.pt", weights_only=True)
    b = torch.load(two / "checkpoints/step-000004/model.pt", weights_only=True)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5
    assert losses(one)[4] == pytest.approx(losses(two)[4], abs=1e-5)    # logged loss: mean over both ranks


# ---- mixture of experts


def test_balancing_loss_keeps_every_expert_near_uniform_load(sample_tokens, tmp_path, caplog):
    """4 experts, top-2, 60 steps: with the Switch loss every expert's load stays near uniform; without it the
    same run collapses onto two experts in the second layer and the warning says so (seen for seeds 0-3)."""
    late = {}
    for coef in (0.05, 0.0):
        out = tmp_path / f"moe-{coef}"
        args = sets(tiny(sample_tokens, out, "--set", "model.n_experts=4", "--set", "model.top_k=2",
                         "--set", "run.steps=60", "--set", "run.batch_size=16", "--set", "run.log_every=5",
                         "--set", "run.eval_every=0", "--set", f"model.balance_coef={coef}"))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="refinery.train"):
            pretrain(load_train_config(None, args))
        rows, _ = read_log(out / "log.jsonl")
        assert len(rows) == 12
        late[coef] = torch.tensor([r["expert_load"] for r in rows[-6:]]).mean(0)     # (layers, experts), last 30 steps
        warned = any("routing collapse" in r.message for r in caplog.records[-6:])
        assert warned == (coef == 0.0)
    assert late[0.05].shape == (2, 4)
    assert float(late[0.05].min()) >= 0.5 and float(late[0.05].max()) <= 1.5, late[0.05]
    assert float(late[0.0].min()) < 0.1, late[0.0]


def test_routing_collapse_warns(sample_tokens, tmp_path, caplog):
    """Constructed collapse: every token's residual stream points one way and the router sends that direction
    to experts 0 and 1 only; experts 2 and 3 get nothing."""
    cfg = load_train_config(None, sets(tiny(sample_tokens, tmp_path / "c", "--set", "model.n_experts=4",
                                            "--set", "model.n_layers=1", "--set", "run.steps=2",
                                            "--set", "run.eval_every=0", "--set", "optim.lr=1e-9")))
    import training.pretrain as pt
    from training.model import Transformer
    built = {}

    def collapsed_model(c):
        model = Transformer(c.model)
        with torch.no_grad():
            model.embed.weight[:, 0] = 10.0                          # a shared direction in every token
            model.layers[0].attn.o.weight.zero_()                    # attention adds nothing to it
            router = model.layers[0].mlp.router.weight
            router.zero_()
            router[0, 0] = router[1, 0] = 5.0
            router[2, 0] = router[3, 0] = -5.0
        built["model"] = model
        return model

    original, pt.build_model = pt.build_model, collapsed_model
    try:
        with caplog.at_level(logging.WARNING, logger="refinery.train"):
            pretrain(cfg)
    finally:
        pt.build_model = original
    assert any("routing collapse" in r.message and "expert 2" in r.message and "expert 3" in r.message
               for r in caplog.records)
    rows, _ = read_log(tmp_path / "c/log.jsonl")
    assert [tuple(x[:2]) for x in rows[-1]["collapsed_experts"]] == [(0, 2), (0, 3)]


# ---- continual pretraining, CLI


def test_continual_pretraining_at_a_longer_context_starts_from_the_learned_weights(sample_tokens, tmp_path):
    assert main(["train", *tiny(sample_tokens, tmp_path / "short"), "--set", "run.steps=40",
                 "--set", "run.eval_every=0"]) == 0
    assert main(["train", *tiny(sample_tokens, tmp_path / "long"), "--set", "run.steps=2",
                 "--set", "data.seq_len=64", "--set", f"run.init_from={tmp_path / 'short'}",
                 "--set", "run.eval_every=0"]) == 0
    assert main(["train", *tiny(sample_tokens, tmp_path / "fresh"), "--set", "run.steps=2",
                 "--set", "data.seq_len=64", "--set", "run.eval_every=0"]) == 0
    short, long, fresh = losses(tmp_path / "short"), losses(tmp_path / "long"), losses(tmp_path / "fresh")
    reached = sum(short[s] for s in range(31, 41)) / 10
    assert abs(long[1] - reached) < 0.5, (long[1], reached)          # it starts where the short run got to,
    assert long[1] < fresh[1] - 0.5, (long[1], fresh[1])             # not where a fresh model starts
    saved = json.loads((tmp_path / "long/checkpoints/step-000002/model.json").read_text())
    assert saved["max_seq_len"] == 64


def test_train_command_writes_log_checkpoints_summary_and_plot(sample_tokens, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny(sample_tokens, out), "--set", "run.steps=6", "--set", "run.eval_every=3"]) == 0
    printed = capsys.readouterr().out
    assert "unigram baseline" in printed and "bits/byte" in printed
    for name in ("log.jsonl", "config.json", "summary.json", "loss.png", "checkpoints/latest"):
        assert (out / name).exists(), name
    rows, evals = read_log(out / "log.jsonl")
    assert [r["step"] for r in evals] == [3, 6] and all(0 < r["bpb"] < 10 for r in evals)
    assert rows[-1]["tokens"] == 6 * 4 * 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unigram_bpb"] > 0 and summary["final_eval"]["step"] == 6


def test_bad_config_is_a_clear_error(sample_tokens, tmp_path, capsys):
    assert main(["train", *tiny(sample_tokens, tmp_path), "--set", "optim.schedule=exponential"]) == 2
    assert "schedule must be one of" in capsys.readouterr().err
    assert main(["train", *tiny(sample_tokens, tmp_path), "--set", "model.widht=3"]) == 2
    assert "unknown key(s) widht" in capsys.readouterr().err
    assert main(["train", *tiny(tmp_path / "nothing", tmp_path)]) == 2
    assert "data.tokens: no such folder" in capsys.readouterr().err


def test_a_small_model_beats_the_unigram_baseline_on_held_out_text(sample_tokens, tmp_path):
    """The acceptance check at test scale (docs/training.md has the 5 M-parameter run): held-out bits per byte
    of a ~0.4 M-parameter model after 200 k tokens, against a unigram model of the training tokens."""
    out = tmp_path / "small"
    assert main(["train", *tiny(sample_tokens, out), "--set", "model.dim=64", "--set", "model.max_seq_len=64",
                 "--set", "data.seq_len=64", "--set", "run.batch_size=8", "--set", "run.steps=400",
                 "--set", "run.eval_every=0", "--set", "run.log_every=20", "--set", "optim.warmup_steps=20",
                 "--set", "run.threads=0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] == 400 * 8 * 64
    assert summary["final_eval"]["bpb"] < summary["unigram_bpb"] - 0.2, summary


def test_token_axis_labels_are_short():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([0, 150_000, 350_000], [1, 2, 3])
    tokens_axis(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert "160k" in labels and all(len(label) <= 5 for label in labels), labels     # was 100000, 200000, ...


def test_overwrite_and_resume_list_and_remove_only_the_runs_files(sample_tokens, tmp_path, capsys):
    """A user's files in a run folder are never listed in its manifest, so no later --overwrite removes them; a
    listed file someone changed is not replaced; a manifest entry out of the folder is not followed."""
    out = tmp_path / "run"
    args = ["train", *tiny(sample_tokens, out), "--set", "run.steps=2", "--set", "run.eval_every=2"]
    assert main(args) == 0
    (out / "keep.txt").write_text("mine")
    (out / "checkpoints" / "keep.txt").write_text("mine")
    for _ in range(2):                          # the second --overwrite removes what the first listed
        assert main([*args, "--set", "run.overwrite=true"]) == 0
        listed = json.loads((out / "manifest.json").read_text())["files"]
        assert "keep.txt" not in listed and "checkpoints/keep.txt" not in listed and "summary.json" in listed
    assert main([*args[:-4], "--set", "run.steps=3", "--set", "run.eval_every=3", "--resume", str(out)]) == 0
    assert "keep.txt" not in json.loads((out / "manifest.json").read_text())["files"]
    assert main([*args, "--set", "run.overwrite=true"]) == 0
    assert (out / "keep.txt").read_text() == (out / "checkpoints" / "keep.txt").read_text() == "mine"
    # a manifest that lists a path out of the folder: the file there stays
    (tmp_path / "outside.txt").write_text("mine")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = {"bytes": 4, "sha256": "0" * 64}
    (out / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main([*args, "--set", "run.overwrite=true"]) == 2
    assert "outside.txt" in capsys.readouterr().err and (tmp_path / "outside.txt").read_text() == "mine"
    # a listed file changed since: refused, nothing removed
    del manifest["files"]["../outside.txt"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "summary.json").write_text("edited by hand")
    assert main([*args, "--set", "run.overwrite=true"]) == 2
    assert "summary.json" in capsys.readouterr().err and (out / "log.jsonl").is_file()
