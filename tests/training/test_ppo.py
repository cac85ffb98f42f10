"""PPO through the shared loop: reply-aligned log-probs, the update moving the policy toward positive advantage,
a run under the KL bound, the bound stopping a run, a killed run resumed with the same losses, the config's
sections."""
import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.app.cli import main
from training.checkpoint import load_model_weights
from training.config import ConfigError
from training.loop import make_optimizer
from training.post.conversation import read_prompts
from training.post.heads import ScalarHead
from training.post.policy import load_policy
from training.post.ppo import (Rollouts, collate_rollouts, load_ppo_config, ppo_objective, reply_logprobs,
                               split_prompts)
from training.post.reward import load_reward_model

REPO = Path(__file__).resolve().parents[2]


def test_reply_logprobs_are_the_next_token_ones(small_base):
    model = load_model_weights(small_base).eval()
    rows = [{"prompt": [3, 10, 11], "reply": [12, 13]}, {"prompt": [3, 20], "reply": [21, 22, 23]}]
    batch = collate_rollouts(rows, pad_id=0)
    logp = reply_logprobs(model(batch["input"]).logits, batch["positions"], batch["tokens"])
    assert batch["mask"].tolist() == [[True, True, False], [True, True, True]]
    for b, row in enumerate(rows):                                      # each row alone, by hand
        seq = torch.tensor([row["prompt"] + row["reply"]])
        full = torch.log_softmax(model(seq).logits[0].detach().float(), -1)
        p = len(row["prompt"])
        for j, token in enumerate(row["reply"]):
            assert float(logp[b, j].detach()) == pytest.approx(float(full[p - 1 + j, token]), abs=1e-5)
    assert float(logp[0, 2]) == 0.0                                     # past the reply: nothing


def test_prompts_from_pairs_and_jsonl(data, scrambled_pairs, tmp_path):
    from pipeline.app.common import HH_RLHF
    prompts = read_prompts([data / HH_RLHF[0]])
    assert len(prompts) > 2000 and all(p[-1]["role"] == "user" for p in prompts)
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "Hi"}\n{"messages": [{"role": "user", "content": "a"}, '
                    '{"role": "assistant", "content": "b"}]}\n')
    assert read_prompts([rows]) == [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "a"}]]


def test_the_old_flat_keys_say_where_they_went():
    with pytest.raises(ConfigError, match="lr is optim.lr, iterations is ppo.iterations"):
        load_ppo_config(None, ["lr=1e-4", "iterations=3"])
    assert load_ppo_config(None, ["ppo.iterations=3"]).ppo.iterations == 3


def ppo_args(base, reward, pairs, out, *extra):
    return ["ppo", "--model", str(base), "--reward-model", str(reward), "--prompts", str(pairs), "--output", str(out),
            "--set", "ppo.iterations=8", "--set", "ppo.rollouts=8", "--set", "ppo.minibatch=4",
            "--set", "sampling.max_new_tokens=16", "--set", "data.held_out_prompts=8", "--set", "ppo.eval_every=4",
            "--set", "optim.lr=3e-4", "--set", "run.progress=false", *extra]


def test_an_iteration_of_updates_moves_the_policy_toward_replies_with_positive_advantage(small_base, reward_run,
                                                                                       scrambled_pairs):
    """The PPO update itself, deterministically: rollouts from the real base, scored by the real reward model,
    one iteration of minibatch updates through the objective the loop runs; afterwards the policy puts more
    log-probability on tokens with positive advantage and less on those with negative (Σ A·Δlog π > 0). A sign
    error in the rewards, the advantages or the clipped loss makes it negative. (At this scale the held-out
    score after a few iterations is noise: +0.47 -> +0.31, +0.23 -> +0.03, +0.41 -> +0.46 over three seeds.)"""
    cfg = load_ppo_config(None, ["ppo.rollouts=8", "ppo.minibatch=4", "sampling.max_new_tokens=16",
                                 "optim.lr=3e-4", f"data.prompts=[{scrambled_pairs}]"])
    policy = load_policy(small_base)
    model = ScalarHead(policy.model)
    train_prompts, _ = split_prompts(cfg, policy.tokenizer, policy.model.cfg.max_seq_len)
    rollouts = Rollouts(cfg, model, copy.deepcopy(policy.model).eval(), load_reward_model(reward_run),
                        policy.tokenizer, train_prompts, (0.0, 1.0))
    optimizer = make_optimizer(model, cfg.optim, torch.device("cpu"))
    objective = ppo_objective(cfg.ppo)
    for step in range(cfg.ppo.updates):                                # as the loop runs them
        loss, _ = objective(model, rollouts.batch(step, 0, 1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    data, mask = rollouts.data, rollouts.data["mask"]
    with torch.no_grad():
        new_logp = reply_logprobs(model(data["input"])[0], data["positions"], data["tokens"])
    moved = (new_logp - data["old_logp"]) * mask
    assert float((moved * data["advantages"]).sum() / mask.sum()) > 0
    assert float(moved[data["advantages"] > 0].mean()) > float(moved[data["advantages"] < 0].mean())


def test_ppo_runs_through_the_loop_under_the_kl_bound(small_base, reward_run, scrambled_pairs, tmp_path, capsys):
    assert main(ppo_args(small_base, reward_run, scrambled_pairs, tmp_path / "ppo", "--set", "ppo.kl_bound=20")) == 0
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert summary["stopped_at"] is None and before["kl"] == 0.0 and 0 < after["kl"] < 20   # it moved, within
    assert summary["reward_normalization"]["std"] > 0 and summary["kept_iteration"] == 8
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if r.get("eval")] == [0, 4, 8]
    train_rows = [r for r in log if not r.get("eval")]
    assert [r["iteration"] for r in train_rows] == list(range(1, 9))            # one line per iteration
    assert all(0 <= r["clip_fraction"] <= 1 for r in train_rows)
    assert "held-out reward score" in capsys.readouterr().out


def test_the_kl_bound_stops_the_run_and_keeps_the_last_weights_within_it(small_base, reward_run, scrambled_pairs,
                                                                         tmp_path):
    assert main(ppo_args(small_base, reward_run, scrambled_pairs, tmp_path / "ppo", "--set", "ppo.kl_bound=1e-6",
                         "--set", "ppo.iterations=1")) == 0
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert summary["stopped_at"] == 1 and summary["kept_iteration"] == 0
    start, kept = load_model_weights(small_base).state_dict(), load_model_weights(tmp_path / "ppo").state_dict()
    assert all(torch.equal(start[k], kept[k]) for k in start)           # the iteration-0 weights were kept


def test_killed_ppo_run_resumes_with_the_same_losses(small_base, reward_run, scrambled_pairs, tmp_path):
    """SIGKILL a PPO run after its first checkpoint (an iteration boundary); `refinery ppo --resume` samples the
    same rollouts from the same weights and logs the losses of a run that was never interrupted."""
    extra = ["--set", "ppo.iterations=6", "--set", "ppo.eval_every=2", "--set", "ppo.kl_bound=100"]
    whole = tmp_path / "whole"
    assert main(ppo_args(small_base, reward_run, scrambled_pairs, whole, *extra)) == 0
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli",
                             *ppo_args(small_base, reward_run, scrambled_pairs, killed, *extra)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    latest = killed / "checkpoints" / "latest"
    while not (latest.exists() and latest.read_text().strip() != "step-000000"):
        assert time.time() < deadline and proc.poll() is None, "no checkpoint past the start within 3 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_at = json.loads((killed / "checkpoints" / latest.read_text().strip() / "state.json").read_text())["step"]
    assert 0 < resumed_at < 6 * 4
    assert main(["ppo", "--resume", str(killed)]) == 0

    def losses(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return {r["step"]: (r["loss"], r["policy_loss"], r["value_loss"], r["score"]) for r in rows if not r.get("eval")}
    ours, reference = losses(killed), losses(whole)
    assert sorted(ours) == sorted(reference) and ours == reference
    assert json.loads((killed / "summary.json").read_text())["held_out_after"] == \
        json.loads((whole / "summary.json").read_text())["held_out_after"]


def test_a_language_model_is_not_a_reward_model(small_base, scrambled_pairs, tmp_path, capsys):
    assert main(ppo_args(small_base, small_base, scrambled_pairs, tmp_path / "ppo")) == 2
    assert "not a reward model" in capsys.readouterr().err
