"""MinHash signatures against datasketch, dedup keys and the dedup config (filters/minhash.py, filters/dedup.py)."""
import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from filters import minhash
from filters.dedup import DedupConfig, normalize_url


def word_ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The truth: the set of word n-grams of the normalised text, no hashing involved."""
    words = minhash.normalize(text).split()
    return set(zip(*(words[i:] for i in range(n))))


def true_jaccard(a: str, b: str) -> float:
    x, y = word_ngrams(a), word_ngrams(b)
    return len(x & y) / len(x | y)



def mutate(text: str, rate: float, rng: random.Random) -> str:
    """Each word replaced by another word of the text (or dropped, or doubled) with probability `rate`."""
    words, out = text.split(), []
    for word in words:
        if rng.random() >= rate:
            out.append(word)
            continue
        edit = rng.random()
        if edit < 0.6:
            out.append(rng.choice(words))
        elif edit < 0.8:
            out.extend((word, rng.choice(words)))
        # else: deleted
    return " ".join(out)


# ---------------------------------------------------------------------------------------------- signatures

def test_normalize_folds_case_punctuation_and_space():
    assert minhash.normalize("Hello,   World!\n\nIt's  DONE.") == "hello world it s done"
    assert minhash.normalize("—…") == ""


def test_words_by_script():
    """Letters, digits and combining marks make words (Devanagari vowel signs stay inside theirs), `_` and
    symbols split, CJK characters are words each, Thai runs are cut every 4 letters like filters.text."""
    assert minhash.normalize("naïve café_bar 3.14 😀emoji 中文字 ภาษาไทยครับ हिन्दी") == \
        "naïve café bar 3 14 emoji 中 文 字 ภาษา ไทยค รับ हिन्दी"


def test_normalize_is_the_words_joined_by_spaces(articles, chinese):
    """normalize builds its string from code points in one go; it must equal the words themselves, cut from
    the lower-cased text where word_spans puts them, joined by one space."""
    for text in articles[:100] + chinese[:5] + ["naïve café_bar 😀x 𝒜b İstanbul ΣΑΣ \ud800 ภาษาไทยครับ", "", " — "]:
        lowered = text.lower()
        assert minhash.normalize(text) == " ".join(lowered[a:b] for a, b in minhash.word_spans(text))


def test_words_match_a_regex_split_on_real_text(articles, chinese):
    import re

    from filters.text import split_words
    words = re.compile(r"[^\W_]+")
    same = sum(minhash.normalize(t).split() == words.findall(t.lower()) for t in articles)
    assert same >= 0.95 * len(articles)       # they differ only where a combining mark or rare symbol occurs
    for text in chinese[:5]:
        assert minhash.normalize(text).split() == list(split_words(" ".join(words.findall(text.lower()))))


def test_shingles_of_short_and_empty_texts():
    assert len(minhash.shingle_hashes("")) == 0
    assert len(minhash.shingle_hashes("two words")) == 1           # fewer words than n: one shingle
    assert len(minhash.shingle_hashes("one two three four five six")) == 2
    assert np.array_equal(minhash.shingle_hashes("One, two; THREE four five six"),
                          minhash.shingle_hashes("one two three four five six"))


def test_chinese_is_shingled_per_character(chinese):
    text = chinese[0]
    assert len(minhash.shingle_hashes(text, language="zh")) > len(text.split())


def test_signature_estimates_jaccard_as_well_as_datasketch(articles):
    """Same shingle sets into our signature and datasketch's MinHash (112 permutations each): the estimation
    errors against the exact Jaccard are of the same size, and ours is unbiased."""
    rng = random.Random(7)
    ours, theirs = [], []
    for text in articles[:80]:
        copy = mutate(text, rng.uniform(0.0, 0.2), rng)
        a, b = minhash.shingle_hashes(text), minhash.shingle_hashes(copy)
        exact = minhash.jaccard(a, b)
        ours.append(minhash.estimate_jaccard(minhash.signature(a), minhash.signature(b)) - exact)
        m1, m2 = MinHash(num_perm=112), MinHash(num_perm=112)
        m1.update_batch([h.tobytes() for h in a])
        m2.update_batch([h.tobytes() for h in b])
        theirs.append(m1.jaccard(m2) - exact)
    assert abs(np.mean(ours)) < 0.015                        # no bias
    assert np.mean(np.abs(ours)) < np.mean(np.abs(theirs)) + 0.01
    assert np.mean(np.abs(ours)) < 0.05                      # √(J(1-J)/112) ≤ 0.047


def test_signature_is_deterministic_and_seeded():
    shingles = minhash.shingle_hashes("the quick brown fox jumps over the lazy dog again and again")
    assert np.array_equal(minhash.signature(shingles, 112, 1), minhash.signature(shingles.copy(), 112, 1))
    assert not np.array_equal(minhash.signature(shingles, 112, 1), minhash.signature(shingles, 112, 2))
    huge = np.arange(10_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)   # several blocks
    assert np.array_equal(minhash.signature(huge), np.minimum(minhash.signature(huge[:5000]),
                                                              minhash.signature(huge[5000:])))


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_bands_rows_for_a_threshold_match_datasketch(threshold):
    lsh = MinHashLSH(threshold=threshold, num_perm=112)
    assert minhash.choose_bands_rows(threshold, 112) == (lsh.b, lsh.r)
    assert DedupConfig(threshold=threshold).bands_rows() == (lsh.b, lsh.r)


def test_s_curve():
    s = np.linspace(0, 1, 101)
    curve = minhash.s_curve(s, 14, 8)
    assert curve[0] == 0 and curve[-1] == 1 and np.all(np.diff(curve) >= 0)
    assert abs(minhash.s_curve(0.685, 14, 8) - 0.5) < 0.01


def test_bad_dedup_config_is_rejected():
    for bad in (dict(bands=0), dict(rounds=-1), dict(threshold=1.5), dict(ngram=0)):
        with pytest.raises(ValueError, match="dedup"):
            DedupConfig(**bad)


@pytest.mark.parametrize("url, key", [
    ("https://www.Example.com/a/b/?x=1#frag", "example.com/a/b?x=1"),
    ("http://example.com:80/a/b", "example.com/a/b"),
    ("http://example.com:8080/", "example.com:8080"),
    ("http://EXAMPLE.com/Path", "example.com/Path"),
    ("not a url", "not a url"),
])
def test_normalize_url(url, key):
    assert normalize_url(url) == key


def test_node_id_does_not_depend_on_where_the_crawl_is_read_from():
    record = "<urn:uuid:748834e9-36aa-4a1a-85f6-948f6bee18e3>"
    places = ["../shared/data/warc/sample-crawl/sample-crawl-00001.warc.gz", "sample-crawl-00001.warc.gz",
              "/work/shared/data/warc/sample-crawl/sample-crawl-00001.warc.gz", "gs://bucket/crawl/sample-crawl-00001.warc.gz"]
    assert len({minhash.node_id(record, place) for place in places}) == 1
    assert minhash.node_id(record, "sample-crawl-00002.warc.gz") != minhash.node_id(record, places[0])
    assert 0 <= minhash.node_id(record, places[0]) < 2 ** 63
