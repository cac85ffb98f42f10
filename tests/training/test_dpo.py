"""DPO: reply-only labels, a first step at exactly log 2 (the reference is the starting model), and a run that
widens the held-out margin on a preference a tiny model can learn."""
import json
import math
from dataclasses import replace

import pytest

from pipeline.app.cli import main
from training.losses import IGNORE
from training.post.conversation import encode_reply
from training.post.reward import PreferenceData, encode_pair_side, encode_pairs
from training.tokenizer import Tokenizer


def test_only_the_final_reply_is_labelled(sample_tokens):
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    ids, labels = encode_reply(tokenizer, messages, 256)
    labelled = [t for t, label in zip(ids, labels) if label != IGNORE]
    assert labelled == tokenizer.encode("Blue.") + [tokenizer.roles["<|end|>"], tokenizer.eos_id]
    short_ids, short_labels = encode_reply(tokenizer, messages, 8)          # cut from the start, reply kept
    assert short_ids == ids[-8:] and short_labels == labels[-8:]
    with pytest.raises(ValueError, match="end with the assistant"):
        encode_reply(tokenizer, messages[:-1], 256)


def test_too_long_pairs_are_cut_or_dropped_as_data_truncation_says(sample_tokens):
    """keep_end (ours) keeps the reply; keep_start (TRL's DPO) keeps the beginning and drops a pair whose reply
    it cuts away whole; drop (TRL's reward model) leaves a too-long pair out; each counted."""
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    long = [{"role": "user", "content": "Tell me about rivers. " * 20}, {"role": "assistant", "content": "Water."}]
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    ids, labels = encode_reply(tokenizer, long, 10 ** 6)
    start_ids, start_labels = encode_reply(tokenizer, long, len(ids) - 2, "keep_start")      # two reply tokens cut
    assert start_ids == ids[:-2] and start_labels == labels[:-2]
    assert encode_reply(tokenizer, long, 16, "keep_start") is None                          # no reply left
    assert encode_reply(tokenizer, long, 16, "drop") is None
    assert encode_reply(tokenizer, short, 16, "drop") == encode_reply(tokenizer, short, 16)
    with pytest.raises(ValueError, match="truncation must be one of keep_end, keep_start, drop"):
        encode_reply(tokenizer, long, 16, "middle")
    pairs = [(long, long[:1] + [{"role": "assistant", "content": "Ice."}]),
             (short, short[:1] + [{"role": "assistant", "content": "Hey."}])] * 3
    data = PreferenceData(pairs=("x",), seq_len=32, held_out_every=3, truncation="drop")
    kept, dropped = encode_pairs(tokenizer, pairs, data)
    assert len(kept) == 3 and dropped == 3 and all(len(side) <= 32 for pair in kept for side in pair)
    kept, dropped = encode_pairs(tokenizer, pairs, replace(data, truncation="keep_end"))
    assert len(kept) == 6 and dropped == 0 and kept[0][0] == encode_pair_side(tokenizer, long, 32)
    with pytest.raises(ValueError, match="data.truncation must be one of"):
        PreferenceData(truncation="both")


def _dpo(base, pairs, out, *extra):
    assert main(["dpo", "--model", str(base), "--pairs", str(pairs), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "data.limit=240", "--set", "run.steps=24",
                 "--set", "run.batch_size=8",
                 "--set", "run.log_every=1", "--set", "run.progress=false", "--set", "run.eval_every=0",
                 "--set", "optim.lr=1e-3", "--set", "lengths.prompts=4", "--set", "lengths.max_new_tokens=24",
                 *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert rows[0]["eval"] and rows[0]["step"] == 0                     # measured before the first step
    first = next(r for r in rows if not r.get("eval"))
    return summary, first


def test_dpo_widens_the_held_out_margin(small_base, scrambled_pairs, tmp_path, capsys):
    summary, first = _dpo(small_base, scrambled_pairs, tmp_path / "dpo")
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)        # policy == reference at step 0
    before, after = summary["held_out_before"], summary["held_out_after"]
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-4)
    assert after["reward_margin"] > 0.05 and after["reward_accuracy"] > 0.7, after
    assert after["logp_margin"] > before["logp_margin"] + 0.5, (before, after)
    for key in ("lengths_before", "lengths_after"):
        assert summary[key]["prompts"] == 4 and 1 <= summary[key]["mean_reply_tokens"] <= 24
    assert "reply length" in capsys.readouterr().out
    # the tuned policy loads and generates like any of our runs
    assert main(["generate", "--model", str(tmp_path / "dpo"), "--prompt", "Hi", "--max-new-tokens", "3"]) == 0


def test_ipo_with_length_normalisation_runs_from_log2_too(small_base, scrambled_pairs, tmp_path):
    summary, first = _dpo(small_base, scrambled_pairs, tmp_path / "ipo", "--set", "variant=ipo",
                          "--set", "length_normalized=true", "--set", "beta=0.5", "--set", "run.steps=3")
    assert first["loss"] == pytest.approx((1 / (2 * 0.5)) ** 2, abs=1e-4)   # IPO at zero margin: (1/2β)²
    assert summary["held_out_after"]["reward_margin"] > 0


def test_bad_options_are_clear(small_base, capsys):
    assert main(["dpo", "--model", str(small_base), "--output", "/tmp/x", "--set", "variant=kto"]) == 2
    assert "variant must be sigmoid or ipo" in capsys.readouterr().err
