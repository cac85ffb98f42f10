"""The tokenizer on the curated sample crawl: lossless, never unknown, pair encoding."""
import pyarrow.dataset as pads
import pytest

from pipeline.app.cli import main
from training.tokenizer import ROLE_TOKENS, Tokenizer


@pytest.fixture(scope="module")
def curated(sample_run):
    _, output = sample_run
    return str(output / "data")


@pytest.fixture(scope="module")
def tokenizer(curated, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok") / "tok8k"
    assert main(["tokenizer", "train", "--input", curated, "--vocab-size", "8000", "--output", str(directory)]) == 0
    return Tokenizer(str(directory))


def test_every_curated_document_round_trips_without_unknown_tokens(tokenizer, curated):
    texts = pads.dataset(curated, format="parquet").to_table(columns=["text"]).column("text").to_pylist()
    assert len(texts) > 1500
    encoded = tokenizer.encode_batch(texts)
    assert all(tokenizer.decode(ids) == text for ids, text in zip(encoded, texts))
    assert not any(tokenizer.unk_id in ids for ids in encoded)


@pytest.mark.parametrize("text", ["t0kenization", "  def f(x):\n\treturn x  # code keeps its spaces\n",
                                  "Ünïcödé ✓ 漢字 🦜 \u2028 end", "", "1234567890"])
def test_odd_text_round_trips(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.unk_id not in ids


def test_digits_are_split_and_specials_reserved(tokenizer):
    assert len(tokenizer.encode("2024")) == 4
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert sorted(tokenizer.roles) == sorted(ROLE_TOKENS) and len(set(tokenizer.roles.values())) == len(ROLE_TOKENS)
    assert tokenizer.encode("<|user|>") == [tokenizer.roles["<|user|>"]]


def test_pair_encoding_and_padding(tokenizer):
    question, context = "Who wrote the report?", "The report was written by the city council in 2008. " * 20
    pair = tokenizer.encode_pair(question, context, max_length=32)
    assert len(pair["input_ids"]) == 32 and pair["input_ids"][0] == tokenizer.bos_id
    assert pair["input_ids"][-1] == tokenizer.eos_id
    sep = pair["input_ids"].index(tokenizer.roles["<|sep|>"])
    assert tokenizer.decode(pair["input_ids"][1:sep]) == question          # the question stays whole
    assert pair["segment_ids"] == [0] * (sep + 1) + [1] * (32 - sep - 1)
    short = tokenizer.encode_pair("Why?", "Because.", max_length=32)
    batch = tokenizer.pad_batch([pair, short])
    assert all(len(row) == 32 for rows in batch.values() for row in rows)
    assert batch["attention_mask"][1].count(1) == len(short["input_ids"])
    assert batch["input_ids"][1][len(short["input_ids"]):] == [tokenizer.pad_id] * (32 - len(short["input_ids"]))


def test_missing_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["tokenizer", "train", "--input", str(tmp_path / "none"), "--output", str(tmp_path / "t")]) == 2
    assert "no dataset" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="refinery tokenizer train"):
        Tokenizer(str(tmp_path))


def test_the_dataset_folder_or_its_data_give_the_same_tokenizer(tokenizer, sample_run, tmp_path):
    """Like every verb that reads a curated dataset, `tokenizer train` takes the folder (or its data/)."""
    _, dataset = sample_run
    assert main(["tokenizer", "train", "--input", str(dataset), "--vocab-size", "8000", "--output",
                 str(tmp_path / "tok")]) == 0
    assert Tokenizer(str(tmp_path / "tok")).sha256 == tokenizer.sha256


def test_the_same_text_gives_the_same_tokenizer_bytes_anywhere(tokenizer, curated, tmp_path):
    """A tokenizer's sha256 is its identity (models record it): training again, into another folder, must give
    the same bytes. sentencepiece records its input and output paths unless fed from memory."""
    other = tmp_path / "elsewhere" / "tok"
    assert main(["tokenizer", "train", "--input", curated, "--vocab-size", "8000", "--output", str(other)]) == 0
    assert Tokenizer(str(other)).sha256 == tokenizer.sha256
    assert str(tmp_path).encode() not in (other / "tokenizer.model").read_bytes()
