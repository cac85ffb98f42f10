"""PPO: reply-aligned log-probs, a run that raises the reward model's held-out score under the KL bound, and
the bound stopping a run."""
import json

import pytest
import torch

from pipeline.cli import main
from training.checkpoint import load_model_weights
from training.ppo import batch_rows, read_prompts, reply_logprobs


def test_reply_logprobs_are_the_next_token_ones(small_base):
    model = load_model_weights(small_base).eval()
    rows = [{"prompt": [3, 10, 11], "reply": [12, 13]}, {"prompt": [3, 20], "reply": [21, 22, 23]}]
    ids, positions, tokens, mask = batch_rows(rows, pad_id=0)
    logp = reply_logprobs(model(ids).logits, positions, tokens)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    for b, row in enumerate(rows):                                      # each row alone, by hand
        seq = torch.tensor([row["prompt"] + row["reply"]])
        full = torch.log_softmax(model(seq).logits[0].detach().float(), -1)
        p = len(row["prompt"])
        for j, token in enumerate(row["reply"]):
            assert float(logp[b, j].detach()) == pytest.approx(float(full[p - 1 + j, token]), abs=1e-5)


def test_prompts_from_pairs_and_jsonl(data, scrambled_pairs, tmp_path):
    from training.reward import HH_RLHF
    prompts = read_prompts([data / HH_RLHF[0]])
    assert len(prompts) > 2000 and all(p[-1]["role"] == "user" for p in prompts)
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "Hi"}\n{"messages": [{"role": "user", "content": "a"}, '
                    '{"role": "assistant", "content": "b"}]}\n')
    assert read_prompts([rows]) == [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "a"}]]


def _ppo(base, reward, pairs, out, *extra):
    return main(["ppo", "--model", str(base), "--reward-model", str(reward), "--prompts", str(pairs),
                 "--output", str(out), "--set", "iterations=8", "--set", "rollouts=8", "--set", "minibatch=4",
                 "--set", "max_new_tokens=16", "--set", "held_out_prompts=8", "--set", "eval_every=4",
                 "--set", "lr=3e-4", *extra])


def test_ppo_raises_the_reward_under_the_kl_bound(small_base, reward_run, scrambled_pairs, tmp_path, capsys):
    assert _ppo(small_base, reward_run, scrambled_pairs, tmp_path / "ppo", "--set", "kl_bound=20") == 0
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert summary["stopped_at"] is None and after["kl"] < 20
    assert after["score"] > before["score"], summary
    log = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if r.get("eval")] == [0, 4, 8]
    assert all(0 <= r["clip_fraction"] <= 1 for r in log if not r.get("eval"))
    assert "held-out reward score" in capsys.readouterr().out


def test_the_kl_bound_stops_the_run_and_keeps_the_last_weights_within_it(small_base, reward_run, scrambled_pairs,
                                                                         tmp_path):
    assert _ppo(small_base, reward_run, scrambled_pairs, tmp_path / "ppo", "--set", "kl_bound=1e-6",
                "--set", "iterations=1") == 0
    summary = json.loads((tmp_path / "ppo" / "summary.json").read_text())
    assert summary["stopped_at"] == 1 and summary["kept_iteration"] == 0
    start, kept = load_model_weights(small_base).state_dict(), load_model_weights(tmp_path / "ppo").state_dict()
    assert all(torch.equal(start[k], kept[k]) for k in start)           # the iteration-0 weights were kept


def test_a_language_model_is_not_a_reward_model(small_base, scrambled_pairs, tmp_path, capsys):
    assert _ppo(small_base, small_base, scrambled_pairs, tmp_path / "ppo") == 2
    assert "not a reward model" in capsys.readouterr().err
