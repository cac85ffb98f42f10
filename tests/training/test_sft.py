"""SFT: the chat format's labels, the data readers, and a run that lowers the held-out answer loss."""
import json

import pytest

from pipeline.app.cli import main
from training.losses import IGNORE
from training.post.conversation import encode_conversation, read_conversations
from training.post.sft import collate
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
    with pytest.raises(ValueError, match="bad.jsonl, line 1: expected messages"):
        read_conversations(bad)


def test_sft_lowers_the_held_out_answer_loss(small_base, data, tmp_path, capsys):
    base = small_base
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(base), "--data", str(data / "sft/alpaca_data_1k.json"), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "run.steps=60", "--set", "run.progress=false",
                 "--set", "run.eval_every=30", "--set", "optim.lr=1e-3"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_loss_after"] < summary["answer_loss_before"] - 0.2, summary     # measured 7.03 -> 6.62
    assert "held-out answer loss" in capsys.readouterr().out
    # the fine-tuned model answers through refinery generate (its tokenizer copied beside it)
    assert main(["generate", "--model", str(out), "--prompt", "Hello", "--max-new-tokens", "5", "--temperature", "0"]) == 0


def test_packing_keeps_every_conversation_and_its_labels(tokenizer, data):
    from training.post.sft import pack
    conversations = read_conversations(data / "sft/alpaca_data_1k.json")[:200]
    examples = [e for e in (encode_conversation(tokenizer, c, 128) for c in conversations) if e is not None]
    rows = pack(examples, 128)
    assert len(rows) < len(examples) and all(len(ids) <= 128 for ids, _ in rows)
    # every answer token is still labelled, in order within its conversation: compare the multisets
    labelled = sorted(t for _, labels in examples for t in labels if t != IGNORE)
    assert sorted(t for _, labels in rows for t in labels if t != IGNORE) == labelled
    eos = tokenizer.eos_id
    assert sum(ids.count(eos) for ids, _ in rows) == sum(ids.count(eos) for ids, _ in examples) - (len(examples) - len(rows))
