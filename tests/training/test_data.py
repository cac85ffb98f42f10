"""Pretraining batches from the sample crawl's token shards: windows, weights, held-out split, determinism,
bits-per-byte."""
import math

import numpy as np
import pytest

from training.data import DataConfig, DomainStream, PretrainBatches, TokenData
from training.heldout import unigram_loss
from training.shards import open_tokens
from training.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def token_data(sample_tokens):
    return TokenData(sample_tokens, seq_len=64)


def test_a_domain_reads_as_one_stream_across_shards(sample_tokens):
    paths = sorted((sample_tokens / "other").glob("*.bin"))
    assert len(paths) > 1
    stream = DomainStream(paths)
    whole = np.concatenate([open_tokens(p)[1] for p in paths]).astype(np.int64)
    assert len(stream) == len(whole)
    boundary = int(stream.offsets[1])
    assert np.array_equal(stream.read(boundary - 10, 25), whole[boundary - 10:boundary + 15])
    assert np.array_equal(stream.read(0, len(whole)), whole)


def test_batches_are_windows_of_the_streams_and_a_function_of_step_and_index(token_data):
    x, y = token_data.batch(step=3, index=1, rows=8)
    assert x.shape == y.shape == (8, 64) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])                    # targets are inputs shifted by one
    again, _ = token_data.batch(step=3, index=1, rows=8)
    assert np.array_equal(x, again)
    assert not np.array_equal(x, token_data.batch(step=3, index=0, rows=8)[0])
    assert not np.array_equal(x, token_data.batch(step=4, index=1, rows=8)[0])
    # each row is a real stretch of some domain's training part
    for row in x[:3]:
        assert any(_contains(token_data.streams[d].read(0, token_data.split[d]), row) for d in token_data.streams)


def _contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    starts = np.flatnonzero(haystack[:len(haystack) - len(needle) + 1] == needle[0])
    return any(np.array_equal(haystack[s:s + len(needle)], needle) for s in starts)


def test_held_out_tail_starts_after_an_eos_and_is_never_sampled(token_data):
    for name, stream in token_data.streams.items():
        split = token_data.split[name]
        assert 0.5 * len(stream) < split <= 0.98 * len(stream) + 1      # 2 %, or more to end on a document
        assert stream.read(split - 1, 1)[0] == 3                  # the training part ends with a whole document
    rng_rows = np.concatenate([token_data.batch(s, 0, 16)[1] for s in range(50)])
    news, split = token_data.streams["news"], token_data.split["news"]
    tail, train_part = news.read(split, len(news) - split), news.read(0, split)
    only_in_tail = set(tail[:200].tolist()) - set(train_part.tolist())
    assert not only_in_tail & set(rng_rows.ravel().tolist())


def test_weights_choose_the_domains(sample_tokens):
    only_news = TokenData(sample_tokens, seq_len=32, weights={"news": 1.0})
    news = only_news.streams["news"].read(0, only_news.split["news"])
    for row in only_news.batch(0, 0, 6)[0]:
        assert _contains(news, row)
    assert only_news.weights["other"] == 0
    natural = TokenData(sample_tokens, seq_len=32)
    assert natural.weights["other"] > 0.6                          # most of the sample crawl is unlabelled
    with pytest.raises(ValueError, match="no tokens in"):
        TokenData(sample_tokens, seq_len=32, weights={"sport": 1.0})
    with pytest.raises(ValueError, match="sum to 0"):
        TokenData(sample_tokens, seq_len=32, weights={"news": 0.0})


def test_wsd_decay_phase_draws_from_the_decay_mix(sample_tokens):
    cfg = DataConfig(tokens=str(sample_tokens), seq_len=32, decay_weights={"reference": 1.0})
    batches = PretrainBatches(cfg, rows=4, decay_start=10)
    reference = batches.main.streams["reference"].read(0, batches.main.split["reference"])
    assert np.array_equal(batches.batch(9, 0)["input"], batches.main.batch(9, 0, 4)[0])
    for row in batches.batch(10, 0)["input"]:
        assert _contains(reference, row)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="refinery tokenize"):
        TokenData(tmp_path, seq_len=32)


def test_bits_per_byte_of_the_unigram_baseline_by_hand(sample_tokens, token_data):
    token_bytes = Tokenizer(str(sample_tokens / "tokenizer")).token_bytes()     # the copy `refinery tokenize` keeps
    windows = token_data.val_windows(4096)
    counts = np.bincount(np.concatenate([w for _, w in windows]), minlength=len(token_bytes))
    result = unigram_loss(counts, windows, token_bytes)
    probs = (counts + 1.0) / (counts + 1.0).sum()
    targets = np.concatenate([w[1:] for _, w in windows])
    nll = -np.log(probs[targets]).sum()
    assert result["tokens"] == len(targets)
    assert result["bytes"] == int(token_bytes[targets].sum())
    assert result["bpb"] == pytest.approx(nll / result["bytes"] / math.log(2))
    assert 2.0 < result["bpb"] < 5.0
