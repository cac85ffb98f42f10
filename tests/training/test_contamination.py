"""The order test of Oren et al. on two tiny models trained on the sample crawl's tokens: one with COPA's
file mixed into its data in canonical order is flagged, the same recipe without it is not."""
import json
import os

import numpy as np
import pytest

from pipeline.app.cli import main
from training.artifacts import read_manifest, write_manifest
from training.eval.contamination import OrderTestConfig, order_test, read_examples
from training.shards import shard_bytes
from training.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokens_with_copa(sample_tokens, data, tmp_path_factory):
    """The sample crawl's token folder plus a `bench` domain holding copa.jsonl as 40 documents."""
    root = tmp_path_factory.mktemp("contaminated")
    for domain in sorted(p for p in sample_tokens.iterdir() if p.is_dir()):
        os.symlink(domain, root / domain.name)
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    text = (data / "mc/copa.jsonl").read_text(encoding="utf-8").rstrip("\n")
    ids = tokenizer.encode(text)
    (root / "bench").mkdir()
    (root / "bench/copa.bin").write_bytes(shard_bytes([ids] * 40, tokenizer.eos_id, tokenizer.vocab_size,
                                                      tokenizer.sha256))
    sample = read_manifest(sample_tokens, "tokens")      # training reads the shards a manifest lists
    listed = [f for f in sample["files"] if (root / f).is_file()]
    write_manifest(root, "tokens", [*listed, "bench/copa.bin"], sample["provenance"])
    return root


def train(tokens, out, weights: str) -> None:
    assert main(["train", "--set", f"data.tokens={tokens}", "--set", f"run.out_dir={out}",
                 "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "model.dim=64",
                 "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.batch_size=8", "--set", "run.steps=300", "--set", "run.eval_every=0",
                 "--set", "run.log_every=50", "--set", "run.progress=false", "--set", "data.val_tokens=1024",
                 "--set", f"data.weights={weights}", "--set", "optim.warmup_steps=20"]) == 0


def test_canonical_order_is_detected_only_in_the_model_that_saw_it(tokens_with_copa, data, tmp_path, capsys):
    train(tokens_with_copa, tmp_path / "saw", "{bench: 0.5, other: 0.5}")
    train(tokens_with_copa, tmp_path / "clean", "{other: 1.0}")
    verdicts = {}
    for name in ("saw", "clean"):
        out = tmp_path / f"{name}.json"
        assert main(["contamination", "--model", str(tmp_path / name), "--benchmark", str(data / "mc/copa.jsonl"),
                     "--output", str(out), "--no-progress"]) == 0
        verdicts[name] = json.loads(out.read_text())
    assert verdicts["saw"]["p_value"] < 0.05, verdicts["saw"]
    assert verdicts["clean"]["p_value"] >= 0.05, verdicts["clean"]
    assert verdicts["saw"]["mean_logprob_gain"] > verdicts["clean"]["mean_logprob_gain"]
    printed = capsys.readouterr().out
    assert "contaminated" in printed and "no evidence" in printed


def test_order_test_statistics_on_known_scorers():
    examples = [f"example number {i}" for i in range(40)]
    canonical_text = {"\n".join(examples[i:i + 2]) for i in range(0, 40, 2)}
    # a scorer that prefers the canonical order gives a tiny p; one blind to order gives p = 0.5 or nan-free 1
    flagged = order_test(lambda t: 5.0 if t in canonical_text else 0.0, examples, OrderTestConfig(shards=20))
    assert flagged["p_value"] == 0.0 and flagged["mean_logprob_gain"] == 5.0
    rng = np.random.default_rng(0)
    blind = order_test(lambda t: float(rng.normal()), examples, OrderTestConfig(shards=20))
    assert blind["p_value"] > 0.05
    with pytest.raises(ValueError, match="too few"):
        order_test(lambda t: 0.0, examples[:10], OrderTestConfig(shards=20))


def test_examples_are_the_lines_of_the_file(data):
    rows = read_examples(data / "mc/copa.jsonl")
    assert len(rows) == 100 and json.loads(rows[0])["query"].endswith(("therefore", "because"))
