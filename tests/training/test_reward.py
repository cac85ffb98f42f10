"""Reward model: hh-rlhf parsing, the Wilson interval, and a model that learns a real preference signal."""
import json

import pytest

from pipeline.app.common import HH_RLHF
from training.post.conversation import parse_dialogue, read_pairs
from training.post.reward import PreferenceData, split_pairs, wilson_interval


def test_hh_rlhf_reads_as_alternating_turns(data):
    pairs = read_pairs([data / p for p in HH_RLHF])
    assert len(pairs) == 8552                                   # the HF Anthropic/hh-rlhf test split
    chosen, rejected = pairs[0]
    assert [m["role"] for m in chosen][:2] == ["user", "assistant"] and chosen[0] == rejected[0]
    assert parse_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}]


def test_pairs_whose_two_sides_are_the_same_are_left_out_and_counted(data):
    """36 of hh-rlhf's pairs have the same chosen and rejected dialogue: no preference to learn or to score. They
    leave both parts, the held-out positions of the rest unchanged."""
    pairs = read_pairs([data / p for p in HH_RLHF])
    same = [i for i, (chosen, rejected) in enumerate(pairs) if chosen == rejected]
    train, held, left_out = split_pairs(PreferenceData(pairs=tuple(str(data / p) for p in HH_RLHF)))
    assert left_out == len(same) == 36
    assert held == [p for i, p in enumerate(pairs) if i % 10 == 0 and i not in same]
    assert len(train) + len(held) == 8552 - 36 and all(c != r for c, r in train + held)


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_reward_model_learns_to_prefer_real_replies_over_scrambled_ones(reward_run):
    """Chosen: hh-rlhf's chosen dialogue; rejected: the same with the last reply's words shuffled (the
    `scrambled_pairs` fixture). A reward model on a small pretrained backbone must rank held-out pairs above
    chance with confidence."""
    summary = json.loads((reward_run / "summary.json").read_text())
    after = summary["held_out_after"]
    assert summary["held_out_before"]["accuracy"] == 0.5                # a zero head ties every pair
    assert after["ci95"][0] > 0.5, after


def test_reward_model_loads_for_scoring(reward_run, small_base):
    import torch

    from training.post.reward import load_reward_model
    model = load_reward_model(reward_run)
    assert float(model.head.weight.detach().abs().sum()) > 0                     # the trained head, not the zero init
    assert model(torch.tensor([[3, 5, 6]]), torch.tensor([3])).shape == (1,)
    with pytest.raises(ValueError, match="not a reward model"):
        load_reward_model(small_base)                                   # a language model has no scalar head


def test_dropping_every_long_pair_that_leaves_nothing_is_refused(small_base, tmp_path, capsys):
    """data.truncation=drop (TRL's way) with a seq_len no pair fits: a message naming the options, no traceback."""
    from pipeline.app.cli import main
    out = tmp_path / "reward"
    assert main(["reward", "--model", str(small_base), "--output", str(out), "--set", "data.seq_len=8",
                 "--set", "data.truncation=drop", "--set", "data.limit=30", "--set", "run.progress=false"]) == 2
    err = capsys.readouterr().err
    assert "data.truncation=drop left 0 training and 0 held-out pairs: raise data.seq_len (8)" in err
    assert "Traceback" not in err
    assert main(["reward", "--model", str(small_base), "--output", str(out), "--set", "data.truncation=all"]) == 2
    assert "data.truncation must be one of keep_end, keep_start, drop, got 'all'" in capsys.readouterr().err
