"""Token shards from `refinery tokenize`: headers, documents back from the index, damage detected."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline.app.cli import main
from training.shards import HEADER_BYTES, ShardError, open_tokens, read_header
from training.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer_dir(sample_tokenizer_dir):
    return sample_tokenizer_dir


@pytest.fixture(scope="module")
def tokens(sample_tokens):
    return sample_tokens


def test_shards_hold_every_document_and_decode_back(sample_run, tokens, tokenizer_dir):
    _, output = sample_run
    texts = {r["id"]: (r["text"], r["domain"]) for r in
             pads.dataset(str(output / "data"), format="parquet").to_table(columns=["id", "text", "domain"]).to_pylist()}
    summary = json.loads((tokens / "tokens.json").read_text())
    tokenizer = Tokenizer(tokenizer_dir)
    seen, total = set(), 0
    for shard in summary["shards"]:
        header, ids = open_tokens(tokens / shard)
        assert header.dtype_bytes == 2 and header.tokenizer_sha256 == tokenizer.sha256
        index = pq.read_table(tokens / shard.replace(".bin", ".idx.parquet")).to_pylist()
        assert header.documents == len(index)
        for row in index:
            piece = ids[row["start"]:row["start"] + row["length"]]
            assert ids[row["start"] + row["length"]] == tokenizer.eos_id
            text, domain = texts[row["id"]]
            assert shard.startswith(f"{domain}/")
            if len(seen) % 25 == 0:
                assert tokenizer.decode(piece.tolist()) == text
            seen.add(row["id"])
        total += header.tokens
    assert seen == set(texts) and total == summary["tokens"]


def test_repeats_are_written_out(tmp_path, tokenizer_dir):
    rows = [{"id": "a", "text": "First document.", "domain": "news", "repeat": 3, "warc_file": "f",
             "warc_record_id": "a", "warc_offset": 0},
            {"id": "b", "text": "Second one.", "domain": "news", "repeat": None, "warc_file": "f",
             "warc_record_id": "b", "warc_offset": 1}]
    (tmp_path / "dataset" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "dataset" / "data" / "x.parquet")
    assert main(["tokenize", "--input", str(tmp_path / "dataset"), "--tokenizer", tokenizer_dir, "--output",
                 str(tmp_path / "t")]) == 0
    index = pq.read_table(tmp_path / "t" / "news" / "x.idx.parquet").to_pylist()
    assert [(r["id"], r["copy"]) for r in index] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    header, ids = open_tokens(tmp_path / "t" / "news" / "x.bin")
    assert header.documents == 4 and int(np.sum(ids == Tokenizer(tokenizer_dir).eos_id)) == 4


def test_damaged_shards_are_caught(tokens, tmp_path):
    shard = tokens / json.loads((tokens / "tokens.json").read_text())["shards"][0]
    data = shard.read_bytes()
    (tmp_path / "truncated.bin").write_bytes(data[:-7])
    with pytest.raises(ShardError, match="truncated"):
        read_header(tmp_path / "truncated.bin")
    (tmp_path / "magic.bin").write_bytes(b"X" + data[1:])
    with pytest.raises(ShardError, match="not a token shard"):
        read_header(tmp_path / "magic.bin")
    (tmp_path / "short.bin").write_bytes(data[:HEADER_BYTES - 1])
    with pytest.raises(ShardError, match="shorter than"):
        read_header(tmp_path / "short.bin")


def test_tokenize_needs_a_tokenizer_and_a_dataset(tmp_path, tokenizer_dir):
    assert main(["tokenize", "--input", str(tmp_path), "--tokenizer", tokenizer_dir, "--output", str(tmp_path / "t")]) == 2
    assert main(["tokenize", "--input", str(tmp_path), "--tokenizer", str(tmp_path), "--output", str(tmp_path / "t")]) == 2
