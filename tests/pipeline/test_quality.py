"""The quality classifier on real data: readers, training, AUC against DCLM's human labels, the Beam stage."""
import itertools
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from filters.quality import QualityConfig
from pipeline import quality
from pipeline.app.cli import main


@pytest.fixture(scope="module")
def model(quality_model):
    path, result = quality_model
    assert result.counts["positive"] > 200 and result.counts["negative"] > 400
    assert result.holdout["auc"] > 0.75
    return path


def test_readers_on_the_shared_files(data):
    wiki = list(quality.read_texts(data / "text/wikitext-2-raw-v1.test.txt"))
    assert 60 <= len(wiki) <= 70 and all(not t.startswith(" = ") for t in wiki)     # articles, not headings
    articles = list(quality.read_texts(data / "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json"))
    assert len(articles) == 181
    labelled = list(quality.read_texts(data / "text/dclm-human-quality-labels/agreement_data.jsonl"))
    assert len(labelled) == 281
    alpaca = list(quality.read_texts(data / "sft/alpaca_data_1k.json"))
    assert len(alpaca) > 900                          # the `output` field
    pages = list(itertools.islice(quality.whole_page_texts(str(data / "warc/commoncrawl/"
                                                                    "cc-main-2020-34_resiliparse-warcfile.warc.gz")), 5))
    assert len(pages) == 5 and all(pages)


def test_relative_inputs_come_from_shared_data_and_missing_ones_are_errors(tmp_path):
    assert quality.resolve_inputs("warc/sample-crawl/*.warc.gz")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        quality.resolve_inputs(str(tmp_path / "none.jsonl"))


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)              # ties on purpose
    labels = rng.random(60) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in scores[labels] for n in scores[~labels]]
    assert quality.roc_auc(scores, labels) == pytest.approx(np.mean(pairs))
    with pytest.raises(ValueError):
        quality.roc_auc([0.1, 0.2], [True, True])


def test_auc_against_human_labels(model):
    """Never trained on them: the agreement subset is where raters agreed."""
    results = quality.evaluate(model)
    assert results["agreement_data.jsonl"]["documents"] == 281
    assert results["agreement_data.jsonl"]["auc"] > 0.75
    assert results["majority_data.jsonl"]["auc"] > 0.7


def test_card_records_the_sources(model):
    card = json.loads(open(model + ".json").read())
    assert card["negatives"] == ["warc/sample-crawl/sample-crawl-00000.warc.gz"] and card["holdout"]["auc"] > 0


def test_score_jsonl_and_cli(model, data, tmp_path):
    out = tmp_path / "scored.jsonl"
    assert main(["quality", "score", "--model", model, "--input",
                 str(data / "text/dclm-human-quality-labels/agreement_data.jsonl"), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 281 and all(0 <= r["quality_score"] <= 1 for r in rows)
    keep = [r["quality_score"] for r in rows if r["label"] == 1]
    drop = [r["quality_score"] for r in rows if r["label"] == 0]
    assert np.median(keep) > np.median(drop)
    assert main(["quality", "score", "--model", str(tmp_path / "none.bin"), "--input", str(out),
                 "--output", str(tmp_path / "x.jsonl")]) == 2


def test_quality_stage_keeps_the_top_fraction(model, data, tmp_path):
    records = [json.loads(line) for line in
               (data / "text/dclm-human-quality-labels/majority_data.jsonl").read_text().splitlines()]
    docs = [{"kind": "doc", "id": str(i), "url": "", "warc_file": "f", "warc_record_id": str(i), "warc_offset": i,
             "crawl_date": "", "text": r["text"], "trace": []} for i, r in enumerate(records)]
    docs.append({"kind": "tally", "warc_file": "f", "chunk": 0, "pages": 0, "errors": 0, "skipped": {}})
    target = tmp_path / "out"
    with BeamTestPipeline() as p:
        (p | beam.Create(docs) | quality.QualityScore(QualityConfig(model_path=model, top_fraction=0.5))
         | beam.Map(json.dumps) | beam.io.WriteToText(str(target), shard_name_template=""))
    out = [json.loads(line) for line in target.read_text().splitlines()]
    kept = [d for d in out if d["kind"] == "doc"]
    dropped = [d for d in out if d["kind"] == "dropped"]
    assert len(out) == len(docs) and {d["reason"] for d in dropped} == {"quality_below_top_fraction"}
    assert abs(len(kept) / len(records) - 0.5) < 0.03
    assert all(d["trace"][-1][0] == "quality" for d in kept + dropped)
    fasttext_model = quality.load_classifier(model)
    scores = {d["id"]: quality.quality_score(fasttext_model, d["text"]) for d in docs if d["kind"] == "doc"}
    cutoff = min(d["quality_score"] for d in kept)
    assert all(scores[d["id"]] < cutoff + 1e-6 for d in dropped)      # nothing dropped scored above a kept one


def test_quality_stage_needs_a_model(tmp_path):
    """Checked when the graph is built, before anything runs; constructing the stage (the recipe does it for
    every stage, listed or not) checks nothing."""
    stage = quality.QualityScore(QualityConfig())
    with pytest.raises(FileNotFoundError, match="refinery quality train"):
        _ = beam.Pipeline() | beam.Create([]) | stage
    with pytest.raises(FileNotFoundError, match="quality model not found"):
        _ = beam.Pipeline() | beam.Create([]) | quality.QualityScore(QualityConfig(model_path=str(tmp_path / "x")))


def test_curate_with_a_quality_model(model, data, tmp_path):
    import pyarrow.dataset as pads
    output = tmp_path / "out"
    warc = str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")
    assert main(["curate", "--input", warc, "--output", str(output), "--no-progress", "--quality-model", model]) == 0
    stats = json.loads((output / "stats.json").read_text())
    assert "quality" in stats["stages"] and stats["config"]["quality"]["model_path"] == model
    scores = pads.dataset(str(output / "data"), format="parquet").to_table().column("quality_score").to_pylist()
    assert len(scores) == stats["kept"] > 0 and all(0 <= s <= 1 for s in scores)
    assert main(["curate", "--input", warc, "--output", str(tmp_path / "o2"), "--quality-model",
                 str(tmp_path / "missing.bin")]) == 2
