"""Deduplication: MinHash signatures against datasketch, components against networkx, and the Beam stage on
planted near-duplicates of real article texts."""
import json
import random

import apache_beam as beam
import networkx as nx
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from datasketch import MinHash, MinHashLSH
from hypothesis import given, settings, strategies as st

from pipeline import components, minhash
from pipeline.dedup import (EXACT_DUPLICATE, NEAR_DUPLICATE, URL_DUPLICATE, ConnectedComponents, DedupConfig,
                            Deduplicate, normalize_url)


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


def doc(i: int, text: str, url: str, crawl_date: str = "2024-05-01T00:00:00Z") -> dict:
    return {"kind": "doc", "id": f"<urn:uuid:{i:08d}>", "url": url, "warc_file": "planted.warc.gz",
            "warc_record_id": f"<urn:uuid:{i:08d}>", "warc_offset": i, "crawl_date": crawl_date, "text": text,
            "language": "en", "trace": []}


# ---------------------------------------------------------------------------------------------- signatures

def test_normalize_folds_case_punctuation_and_space():
    assert minhash.normalize("Hello,   World!\n\nIt's  DONE.") == "hello world it s done"
    assert minhash.normalize("—…") == ""


def test_words_by_script():
    """Letters, digits and combining marks make words (Devanagari vowel signs stay inside theirs), `_` and
    symbols split, CJK characters are words each, Thai runs are cut every 4 letters like filters.text."""
    assert minhash.normalize("naïve café_bar 3.14 😀emoji 中文字 ภาษาไทยครับ हिन्दी") == \
        "naïve café bar 3 14 emoji 中 文 字 ภาษา ไทยค รับ हिन्दी"


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


# ---------------------------------------------------------------------------------------------- components

def nx_labels(edges) -> dict[int, int]:
    graph = nx.Graph()
    graph.add_edges_from((a, b) for a, b in edges if a != b)
    return {node: min(c) for c in nx.connected_components(graph) for node in c}


edge_lists = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(edges=edge_lists, rounds=st.integers(0, 5))
def test_components_equal_networkx(edges, rounds):
    labels, _ = components.connected_components(edges, rounds)
    assert labels == nx_labels(edges)


@settings(max_examples=50, deadline=None)
@given(length=st.integers(2, 300), seed=st.integers(0, 1000), rounds=st.integers(0, 3))
def test_long_shuffled_chains_converge_through_the_fallback(length, seed, rounds):
    """A chain needs ~log2(length) rounds; with fewer, union-find finishes the job."""
    nodes = list(range(length))
    random.Random(seed).shuffle(nodes)                  # a path through the ids in random order
    edges = list(zip(nodes, nodes[1:]))
    labels, changes = components.connected_components(edges, rounds)
    assert labels == {n: 0 for n in nodes}
    assert len(changes) <= rounds


def test_star_rounds_count_changes_and_stop():
    edges = [(i + 1, i) for i in range(64)]
    _, changes = components.connected_components(edges, rounds=20)
    assert changes[0] > 0 and changes[-1] == 0 and len(changes) < 20


def test_components_in_beam_equal_networkx():
    rng = random.Random(3)
    random_graph = [(rng.randrange(300), rng.randrange(300)) for _ in range(250)]
    chain = [(1000 + i, 1000 + i + 1) for i in range(100)]           # needs ~7 rounds; the stage runs 2
    star = [(5000, 5000 + i) for i in range(1, 50)]
    edges = [(max(a, b), min(a, b)) for a, b in random_graph + chain + star if a != b]
    with BeamTestPipeline() as p:
        labels = p | beam.Create(edges) | ConnectedComponents(rounds=2)
        assert_that(labels, equal_to(sorted(nx_labels(edges).items())))


# ---------------------------------------------------------------------------------------------- the Beam stage

@pytest.fixture(scope="module")
def planted(articles):
    """Real article texts, each with one mutated copy under another URL. The word-edit rate is set for a 5-gram
    Jaccard spread evenly over 0.3-1 (an edit breaks ~5 shingles: J ≈ (1-r)^5 / (2 - (1-r)^5))."""
    rng = random.Random(11)
    docs, pairs = [], []
    for text in articles[:160]:
        target = rng.uniform(0.3, 1.0)
        rate = 1 - (2 * target / (1 + target)) ** 0.2
        original = doc(len(docs), text, f"https://news.example/{len(docs)}")
        copy = doc(len(docs) + 1, mutate(text, rate, rng), f"https://mirror.example/{len(docs)}")
        docs += [original, copy]
        pairs.append((original["id"], copy["id"], true_jaccard(original["text"], copy["text"])))
    return docs, pairs


def run_dedup(docs, tmp_path, cfg=DedupConfig(), **parts) -> list[dict]:
    """Deduplicate `docs` on the DirectRunner; every item that comes out."""
    with BeamTestPipeline() as p:
        (p | beam.Create(docs) | Deduplicate(cfg, keep_rejected=True, **parts)
         | beam.Map(json.dumps) | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template=""))
    return [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]


def test_planted_near_duplicates_recall_and_precision(planted, tmp_path):
    docs, pairs = planted
    out = run_dedup(docs, tmp_path)
    assert len(out) == len(docs)
    removed = {item["id"]: item for item in out if item["kind"] == "dropped"}
    node_of = {d["id"]: minhash.node_id(d["id"], d["warc_file"]) for d in docs}
    text_of = {node_of[d["id"]]: d["text"] for d in docs}
    assert {r["reason"] for r in removed.values()} <= {NEAR_DUPLICATE, EXACT_DUPLICATE}
    high = [(a, b) for a, b, j in pairs if j >= 0.8]
    found = sum(1 for a, b in high if (a in removed) != (b in removed))        # exactly one of the pair removed
    assert len(high) >= 40 and found / len(high) >= 0.95
    false = sum(1 for r in removed.values() if true_jaccard(r["text"], text_of[r["duplicate_of"]]) < 0.6)
    assert removed and 1 - false / len(removed) >= 0.98
    survivors = [item for item in out if item["kind"] == "doc"]
    assert sum(s["duplicates_removed"] for s in survivors) == len(removed)


def test_url_exact_and_near_duplicates_with_reasons(articles, tmp_path):
    text = articles[30]
    docs = [doc(0, text, "https://a.example/page", "2024-01-01T00:00:00Z"),
            doc(1, "Another page entirely. " + articles[31], "http://www.a.example/page/", "2024-03-01T00:00:00Z"),
            doc(2, text.upper(), "https://b.example/copy"),                     # same text once normalised
            doc(3, text + " One more sentence at the end.", "https://c.example/near"),
            doc(4, articles[32], "https://d.example/other")]
    out = {item["id"]: item for item in run_dedup(docs, tmp_path)}
    reason = {i: (out[d["id"]]["kind"], out[d["id"]].get("reason")) for i, d in enumerate(docs)}
    assert reason[0] == ("dropped", URL_DUPLICATE)          # same URL, older capture
    assert reason[1] == ("doc", None)
    assert reason[4] == ("doc", None)
    assert sorted(reason[i] for i in (2, 3)) in ([("doc", None), ("dropped", EXACT_DUPLICATE)],
                                                 [("doc", None), ("dropped", NEAR_DUPLICATE)])
    stages = {out[d["id"]]["trace"][-1][0] for d in docs}
    assert stages <= {"url_dedup", "exact_dedup", "minhash_dedup"}


def test_parts_can_be_turned_off(planted, tmp_path):
    docs, _ = planted
    out = run_dedup(docs[:40], tmp_path, near=False)
    assert all(item["kind"] == "doc" or item["reason"] != NEAR_DUPLICATE for item in out)
    assert all("minhash_dedup" not in [t[0] for t in item["trace"]] for item in out)


def test_non_live_items_pass_through(planted, tmp_path):
    docs, _ = planted
    other = [{"kind": "tally", "warc_file": "planted.warc.gz", "chunk_start": 0, "pages": 2, "errors": 0,
              "skipped": {}},
             {"kind": "error", "warc_file": "planted.warc.gz", "warc_offset": 5, "stage": "read",
              "reason": "truncated_record", "detail": ""}]
    out = run_dedup(docs[:4] + other, tmp_path)
    assert sorted(i["kind"] for i in out if i["kind"] != "doc" and i["kind"] != "dropped") == ["error", "tally"]
    assert len(out) == 6


def test_line_dedup_keeps_a_frequent_line_in_one_document(articles, tmp_path):
    banner = "Subscribe to our newsletter for the latest updates!"
    pair_line = "Shared by two pages only."
    docs = [doc(i, "\n".join([banner.upper() if i == 2 else banner, articles[40 + i], pair_line if i < 2 else ""]),
                f"https://site{i}.example/a") for i in range(4)]
    docs.append(doc(4, f"  {banner}  ", "https://site4.example/only-banner"))
    out = {item["id"]: item for item in run_dedup(docs, tmp_path, url=False, exact=False, near=False, lines=True)}
    keeper = min(docs, key=lambda d: minhash.node_id(d["id"], d["warc_file"]))["id"]
    with_banner = [i for i, item in out.items() if item["kind"] == "doc" and banner.lower() in item["text"].lower()]
    assert with_banner == [keeper]
    assert all(pair_line in out[d["id"]]["text"] for d in docs[:2] if out[d["id"]]["kind"] == "doc")
    if keeper != docs[4]["id"]:
        assert out[docs[4]["id"]]["kind"] == "dropped" and out[docs[4]["id"]]["reason"] == "only_duplicate_lines"
    assert all(articles[40 + i] in out[docs[i]["id"]]["text"] for i in range(4))
