import pytest

from pipeline.cli import main


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


