import pytest

from pipeline.app.cli import main


@pytest.fixture(scope="session")
def sample_tokenizer_dir(sample_run, tmp_path_factory) -> str:
    """A 4,000-piece tokenizer trained on the curated sample crawl."""
    _, output = sample_run
    directory = tmp_path_factory.mktemp("tok") / "tok"
    assert main(["tokenizer", "train", "--input", str(output / "data"), "--vocab-size", "4000",
                 "--output", str(directory)]) == 0
    return str(directory)


@pytest.fixture(scope="session")
def sample_tokens(sample_run, sample_tokenizer_dir, tmp_path_factory):
    """Token shards of the curated sample crawl (`refinery tokenize`), ~2.4 M tokens in 7 domains."""
    _, output = sample_run
    target = tmp_path_factory.mktemp("tokens") / "out"
    assert main(["tokenize", "--input", str(output), "--tokenizer", sample_tokenizer_dir,
                 "--output", str(target)]) == 0
    return target




@pytest.fixture(scope="session")
def small_base(sample_tokens, tmp_path_factory):
    """A 0.4 M-parameter model (dim 64, 2 layers, context 128) pretrained 150 steps on the sample crawl: the
    starting point of the post-training tests."""
    base = tmp_path_factory.mktemp("base") / "base"
    assert main(["train", "--set", f"data.tokens={sample_tokens}", "--set", f"run.out_dir={base}",
                 "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "model.dim=64",
                 "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.steps=150", "--set", "run.progress=false", "--set", "run.batch_size=8",
                 "--set", "run.eval_every=0"]) == 0
    return base


@pytest.fixture(scope="session")
def scrambled_pairs(data, tmp_path_factory):
    """A real preference signal a tiny model can learn: hh-rlhf's chosen dialogue over the same dialogue with
    the last reply's words shuffled (helpful-base, first 600 rows, replies of 8+ words)."""
    import gzip
    import json
    import random

    from pipeline.app.common import HH_RLHF
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
    pairs = tmp_path_factory.mktemp("pairs") / "scrambled.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return pairs


@pytest.fixture(scope="session")
def reward_run(small_base, scrambled_pairs, tmp_path_factory):
    """`refinery reward` on the scrambled pairs: a reward model for fluent replies."""
    out = tmp_path_factory.mktemp("reward") / "reward"
    assert main(["reward", "--model", str(small_base), "--pairs", str(scrambled_pairs), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "run.steps=120", "--set", "run.batch_size=8",
                 "--set", "run.progress=false", "--set", "run.eval_every=0", "--set", "optim.lr=1e-3"]) == 0
    return out
