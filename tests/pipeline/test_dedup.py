"""Deduplication stages in Beam on planted near-duplicates of real article texts, and the connected-components
transform against networkx (the pure maths is tested in tests/filters/test_minhash.py, test_components.py)."""
import json
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from filters import minhash
from filters.dedup import DedupConfig, Reason
from pipeline.dedup import ConnectedComponents, DecideByKeys, ExactDedup, LineDedup, MinHashDedup, UrlDedup, key_spec
from pipeline.staging import StageChunks
from tests.filters.test_components import nx_labels
from tests.filters.test_minhash import mutate, true_jaccard

URL_DUPLICATE, EXACT_DUPLICATE, NEAR_DUPLICATE = Reason.URL_DUPLICATE, Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE


def doc(i: int, text: str, url: str, crawl_date: str = "2024-05-01T00:00:00Z") -> dict:
    return {"kind": "doc", "id": f"<urn:uuid:{i:08d}>", "url": url, "warc_file": "planted.warc.gz",
            "warc_record_id": f"<urn:uuid:{i:08d}>", "warc_offset": i, "crawl_date": crawl_date, "text": text,
            "language": "en", "trace": []}


# ---------------------------------------------------------------------------------------------- components

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


def run_dedup(docs, tmp_path, cfg=DedupConfig(), url=True, exact=True, near=True, lines=False) -> list[dict]:
    """The dedup stages the flags name, as curation runs them (items staged per chunk, the key stages deciding
    from the staged keys, their verdicts applied, then line dedup on the documents), on the DirectRunner;
    every item that comes out."""
    keyed = [stage.keeping_rejected(True) for stage, on in ((UrlDedup(), url), (ExactDedup(), exact),
                                                            (MinHashDedup(cfg), near)) if on]
    work = str(tmp_path / "work")
    with BeamTestPipeline() as p:
        items = (p | beam.Create(docs) | StageChunks(work, key_spec(keyed)) | DecideByKeys(keyed, work, True))
        if lines:
            items = items | LineDedup(cfg).keeping_rejected(True)
        (items | beam.Map(json.dumps) | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template=""))
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
    other = [{"kind": "tally", "warc_file": "planted.warc.gz", "chunk": 0, "pages": 2, "errors": 0,
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
