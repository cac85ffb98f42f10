"""Reward model: hh-rlhf parsing, the Wilson interval, and a model that learns a real preference signal."""
import gzip
import json
import random

import pytest

from pipeline.cli import main
from training.reward import HH_RLHF, parse_dialogue, read_pairs, wilson_interval


def test_hh_rlhf_reads_as_alternating_turns(data):
    pairs = read_pairs([data / p for p in HH_RLHF])
    assert len(pairs) == 8552                                   # the HF Anthropic/hh-rlhf test split
    chosen, rejected = pairs[0]
    assert [m["role"] for m in chosen][:2] == ["user", "assistant"] and chosen[0] == rejected[0]
    assert parse_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_reward_model_learns_to_prefer_real_replies_over_scrambled_ones(sample_tokens, data, tmp_path):
    """Chosen: hh-rlhf's chosen dialogue; rejected: the same with the last reply's words shuffled. A reward
    model on a small pretrained backbone must rank held-out pairs above chance with confidence."""
    rng = random.Random(0)
    rows = []
    with gzip.open(data / HH_RLHF[1], "rt", encoding="utf-8") as fh:
        for line in list(fh)[:600]:
            chosen = json.loads(line)["chosen"]
            head, _, reply = chosen.rpartition("\n\nAssistant: ")
            words = reply.split()
            if len(words) < 8:
                continue
            rng.shuffle(words)
            rows.append({"chosen": chosen, "rejected": f"{head}\n\nAssistant: {' '.join(words)}"})
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = tmp_path / "base"
    assert main(["train", "--set", f"data.tokens={sample_tokens}", "--set", f"run.out_dir={base}",
                 "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "model.dim=64",
                 "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.steps=150", "--set", "run.progress=false", "--set", "run.batch_size=8",
                 "--set", "run.eval_every=0"]) == 0
    out = tmp_path / "reward"
    assert main(["reward", "--model", str(base), "--pairs", str(pairs), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "run.steps=120", "--set", "run.batch_size=8",
                 "--set", "run.progress=false", "--set", "run.eval_every=0", "--set", "optim.lr=1e-3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    after = summary["held_out_after"]
    assert summary["held_out_before"]["accuracy"] == 0.5                # a zero head ties every pair
    assert after["ci95"][0] > 0.5, after
