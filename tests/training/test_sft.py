"""SFT: the chat format's labels, the data readers, and a run that lowers the held-out answer loss."""
import json

import pytest

from pipeline.cli import main
from training.losses import IGNORE
from training.sft import collate, encode_conversation, read_conversations
from training.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(sample_tokens):
    return Tokenizer(str(sample_tokens / "tokenizer"))


def test_labels_cover_the_answer_its_end_and_the_eos_only(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."}]
    ids, labels = encode_conversation(tokenizer, messages, 256)
    answer = tokenizer.encode("Blue.")
    end, eos = tokenizer.roles["<|end|>"], tokenizer.eos_id
    labelled = [t for t, label in zip(ids, labels) if label != IGNORE]
    assert labelled == answer + [end, eos]                              # the EOS is never masked out
    assert ids[0] == eos and ids[1] == tokenizer.roles["<|system|>"] and ids[-1] == eos
    assert tokenizer.decode(ids[1:-1]).count("<|assistant|>") == 1
    batch = collate([(ids, labels), (ids[:5] + [eos], [IGNORE] * 5 + [eos])], tokenizer.pad_id)
    assert tokenizer.pad_id != eos and batch["input"][1, -1] == tokenizer.pad_id
    assert batch["target"][1, -1] == IGNORE and batch["target"][1, 4] == eos


def test_every_data_shape_reads(data, tmp_path):
    alpaca = read_conversations(data / "sft/alpaca_data_1k.json")
    assert len(alpaca) == 1000 and [m["role"] for m in alpaca[0]] == ["user", "assistant"]
    with_input = next(c for c in alpaca if "\n\n" in c[0]["content"])
    assert with_input[0]["content"].split("\n\n")[-1]
    seeds = read_conversations(data / "sft/self_instruct_seed_tasks.jsonl")
    assert len(seeds) >= 175
    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
                     + "\n" + json.dumps({"prompt": "2+2?", "completion": "4"}) + "\n")
    assert [len(c) for c in read_conversations(chats)] == [2, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "?"}) + "\n")
    with pytest.raises(ValueError, match="row 0: expected messages"):
        read_conversations(bad)


def test_sft_lowers_the_held_out_answer_loss(sample_tokens, data, tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["train", "--set", f"data.tokens={sample_tokens}", "--set", f"run.out_dir={base}",
                 "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "model.dim=64",
                 "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.steps=100", "--set", "run.progress=false", "--set", "run.batch_size=8",
                 "--set", "run.eval_every=0"]) == 0
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(base), "--data", str(data / "sft/alpaca_data_1k.json"), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "run.steps=60", "--set", "run.progress=false",
                 "--set", "run.eval_every=30", "--set", "optim.lr=1e-3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_loss_after"] < summary["answer_loss_before"] - 0.2, summary     # measured 7.03 -> 6.62
    assert "held-out answer loss" in capsys.readouterr().out
    # the fine-tuned model answers through refinery generate (its tokenizer copied beside it)
    assert main(["generate", "--model", str(out), "--prompt", "Hello", "--max-new-tokens", "5", "--temperature", "0"]) == 0
