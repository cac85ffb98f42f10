"""Mixing: the plan's arithmetic, and the Beam stage on real texts hitting target token shares."""
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from pipeline import quality
from pipeline.mix import Mix, MixConfig, cut_below, estimate_tokens, plan, position

URLS = {"news": "https://news.example.com/story/{}", "reference": "https://en.wikipedia.org/wiki/Page_{}",
        "forum": "https://forum.example.org/thread/{}", "blog": "https://someone.blogspot.com/{}",
        "code": "https://github.com/someone/repo{}"}


@pytest.fixture(scope="module")
def docs(data):
    """~1,400 real texts (DCLM pages, articles, Alpaca answers, wikitext) spread over five URL domains,
    unevenly: news gets the most, code the fewest."""
    texts = [t for spec in ("text/dclm-human-quality-labels/majority_data.jsonl",
                            "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json",
                            "sft/alpaca_data_1k.json", "text/wikitext-2-raw-v1.test.txt")
             for path in quality.resolve_inputs(spec) for t in quality.read_texts(path)]
    order = ["news"] * 5 + ["reference"] * 3 + ["blog"] * 2 + ["forum", "code"]
    out = []
    for i, text in enumerate(texts):
        domain = order[i % len(order)]
        out.append({"kind": "doc", "id": f"doc-{i}", "url": URLS[domain].format(i), "warc_file": "f",
                    "warc_record_id": str(i), "warc_offset": i, "crawl_date": "", "text": text, "trace": []})
    return out


def run_mix(docs, cfg, tmp_path, name="out"):
    with BeamTestPipeline() as p:
        (p | beam.Create(docs) | Mix(cfg) | beam.Map(json.dumps)
         | beam.io.WriteToText(str(tmp_path / name), shard_name_template=""))
    return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]


def shares(items):
    tokens = {}
    for d in items:
        if d["kind"] == "doc":
            tokens[d["domain"]] = tokens.get(d["domain"], 0) + estimate_tokens(d["text"]) * d.get("repeat", 1)
    total = sum(tokens.values())
    return {k: v / total for k, v in tokens.items()}


def test_cut_below_finds_the_token_quantile():
    uniform = np.full(4096, 10)
    assert cut_below(uniform, 0.25) == pytest.approx(0.25)
    assert cut_below(uniform, 1.0) == 1.0 and cut_below(uniform, 0.0) == 0.0
    skewed = np.zeros(4096, dtype=int)
    skewed[:2048] = 1
    skewed[2048:] = 3                                   # three quarters of the tokens in the upper half
    assert cut_below(skewed, 0.25) == pytest.approx(0.5)


def test_plan_shrinks_and_grows_within_max_repeat():
    histograms = {"news": np.full(4096, 30), "code": np.full(4096, 1)}
    the_plan = plan(histograms, MixConfig(weights={"news": 0.5, "code": 0.5}, max_repeat=4))
    code, news = the_plan["domains"]["code"], the_plan["domains"]["news"]
    assert code["whole"] == 4 and code["cut"] == 0.0                    # capped at 4 copies
    assert the_plan["size_tokens"] == 2 * 4 * 4096                       # code's 4× sets the size
    assert news["whole"] == 0 and news["cut"] == pytest.approx(4 / 30, rel=1e-3)


def test_labels_only_without_weights(docs, tmp_path):
    out = run_mix(docs[:60], MixConfig(), tmp_path)
    assert len(out) == 60 and all(d["kind"] == "doc" and "repeat" not in d for d in out)
    assert {d["domain"] for d in out} == set(URLS)


def test_mixing_hits_target_shares_and_is_deterministic(docs, tmp_path):
    before = shares([{**d, "domain": next(k for k, v in URLS.items() if d["url"] == v.format(i))}
                     for i, d in enumerate(docs)])
    target = {"news": 0.2, "reference": 0.2, "blog": 0.2, "forum": 0.2, "code": 0.2}
    cfg = MixConfig(weights=target)
    out = run_mix(docs, cfg, tmp_path)
    assert len(out) == len(docs)                                    # every document kept or dropped, once
    got = shares(out)
    assert before["news"] > 0.35 and before["code"] < 0.12         # far from the target before
    for domain, share in target.items():
        assert abs(got[domain] - share) < 0.02, (domain, got)
    assert max(d.get("repeat", 0) for d in out) > 1                # code and forum had to grow
    dropped = [d for d in out if d["kind"] == "dropped"]
    assert dropped and {d["reason"] for d in dropped} == {"mix_downsampled"}
    again = run_mix(list(reversed(docs)), cfg, tmp_path, "again")
    key = lambda items: sorted((d["id"], d["kind"], d.get("repeat")) for d in items)
    assert key(again) == key(out)


def test_a_domain_left_out_of_the_weights_is_dropped(docs, tmp_path):
    out = run_mix(docs[:240], MixConfig(weights={"news": 1.0}), tmp_path)
    assert {d["domain"] for d in out if d["kind"] == "doc"} == {"news"}
    assert {d["reason"] for d in out if d["kind"] == "dropped"} >= {"mix_domain_not_wanted"}


def test_position_is_stable_and_seeded():
    assert position("a", 0) == position("a", 0) != position("a", 1)
    assert 0 <= position("x", 3) < 1


def test_bad_mix_config():
    with pytest.raises(ValueError, match="unknown domain"):
        MixConfig(weights={"sports": 1.0})
    with pytest.raises(ValueError, match="max_repeat"):
        MixConfig(max_repeat=0)


def test_domain_classifier_trains_on_url_labelled_documents(docs, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.app.cli import main
    from pipeline.mix import DOMAIN_LABELS, classify_domain
    from pipeline.resources import load_fasttext
    pq.write_table(pa.Table.from_pylist([{"url": d["url"], "text": d["text"]} for d in docs]), tmp_path / "d.parquet")
    model = str(tmp_path / "domain.bin")
    assert main(["domains", "train", "--input", str(tmp_path / "d.parquet"), "--output", model]) == 0
    classifier = load_fasttext(model, DOMAIN_LABELS, "domain model")
    labels = {classify_domain(classifier, d["text"], 0.0) for d in docs[:50]}
    assert labels <= set(URLS) and labels
    assert main(["domains", "train", "--input", str(tmp_path / "none"), "--output", model]) == 2
    # a domain model is not a quality model, nor the other way round: refused by their labels
    from pipeline.quality import load_classifier
    with pytest.raises(ValueError, match="not a quality model"):
        load_classifier(model)
