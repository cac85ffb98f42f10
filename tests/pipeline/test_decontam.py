"""Decontamination: benchmark items planted in real pages are caught, untouched pages are not."""
import json
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from filters.decontam import BenchmarkIndex, DecontamConfig, Reason, check_contamination, cut_spans
from pipeline.resources import Benchmarks, benchmark_files, benchmark_items, load_benchmark_index
from pipeline.stage import ApplyFilter

DROP = DecontamConfig()


def Decontaminate(cfg: DecontamConfig) -> ApplyFilter:
    """The stage as the recipe builds it (pipeline/curate.py)."""
    return ApplyFilter("decontam", check_contamination, cfg, load=Benchmarks(cfg))


@pytest.fixture(scope="module")
def index(data):
    return load_benchmark_index(DecontamConfig(), data)


@pytest.fixture(scope="module")
def questions(data):
    """One real item from each of several benchmarks, as it would appear on a page that copied it."""
    picks = {}
    for path in benchmark_files(("mmlu/test", "mc"), data):
        name, texts = benchmark_items(path)
        long_enough = [t for t in texts if 15 <= len(t.split()) <= 80]
        if long_enough and name not in picks:
            picks[name] = random.Random(name).choice(long_enough)
    return picks


def plant(page: str, item: str, rng: random.Random) -> str:
    """`item` inserted as its own paragraph somewhere in the page, with its punctuation and case changed."""
    paragraphs = page.split("\n")
    at = rng.randrange(len(paragraphs) + 1)
    return "\n".join(paragraphs[:at] + [item.upper().replace(",", " ,")] + paragraphs[at:])


def test_every_benchmark_is_indexed(index):
    assert {"mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "lambada_openai",
            "winogrande"} <= set(index.items)
    assert index.items["mmlu"] > 14_000 and index.items["hellaswag"] == 10_042


def test_planted_items_are_caught_and_clean_pages_are_not(index, questions, articles):
    rng = random.Random(0)
    pages = articles[:120]
    assert all(check_contamination(page, DROP, resources=index) is None for page in pages)   # real news: clean
    for i, (name, item) in enumerate(sorted(questions.items())):
        planted = plant(pages[i], item, rng)
        assert check_contamination(planted, DROP, resources=index) == Reason.of(name) != Reason.OTHER, (name, item)


def test_cut_removes_the_item_and_keeps_the_page(index, questions, articles):
    page, item = articles[3], questions["mmlu"]
    planted = plant(page, item, random.Random(1))
    cut = cut_spans(planted, index.matches(planted))
    assert check_contamination(cut, DROP, resources=index) is None
    assert len(cut) >= len(page) - 5 and page.split()[0] in cut
    verdict = check_contamination(planted, DecontamConfig(action="cut"), resources=index)
    assert (verdict.text, verdict.reason, dict(verdict.fields), dict(verdict.notes)) == \
        (cut, None, {"decontaminated": "mmlu"}, {"cut/benchmark_mmlu": 1})
    emptied = check_contamination(item, DecontamConfig(action="cut"), resources=index)
    assert (emptied.text, emptied.reason) == (None, Reason.MMLU)      # nothing left: dropped


def test_short_items_match_whole_and_tiny_ones_not_at_all():
    index = BenchmarkIndex({"toy": ["the quick brown fox jumps over the lazy dog",        # 9 words: whole
                                    "too short to matter"]}, ngram=13, min_words=8)
    assert index.items["toy"] == 1
    check = lambda text: check_contamination(text, DROP, resources=index)
    assert check("Yesterday THE quick brown fox jumps over the lazy dog, again.") == Reason.OTHER   # not ours
    assert check("the quick brown fox jumps over a lazy dog") is None
    assert check("it is too short to matter here") is None


def test_bad_config_and_missing_benchmark(tmp_path):
    with pytest.raises(ValueError, match="decontam.action"):
        DecontamConfig(action="delete")
    with pytest.raises(FileNotFoundError, match="decontam benchmark not found"):
        _ = beam.Pipeline() | beam.Create([]) | Decontaminate(DecontamConfig(benchmarks=(str(tmp_path / "none"),)))


@pytest.mark.parametrize("action", ["drop", "cut"])
def test_stage_counts_per_benchmark(action, questions, articles, tmp_path):
    rng = random.Random(2)
    docs = []
    for i, page in enumerate(articles[:40]):
        name = ["mmlu", "arc_easy", "piqa", None][i % 4]
        text = plant(page, questions[name], rng) if name else page
        docs.append({"kind": "doc", "id": str(i), "url": "", "warc_file": "f", "warc_record_id": str(i),
                     "warc_offset": i, "crawl_date": "", "text": text, "trace": [], "planted": name})
    cfg = DecontamConfig(action=action, benchmarks=("mmlu/test", "mc/arc_easy.jsonl", "mc/piqa.jsonl"))
    with BeamTestPipeline() as p:
        (p | beam.Create(docs) | Decontaminate(cfg) | beam.Map(json.dumps)
         | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template=""))
    out = {d["id"]: d for d in map(json.loads, (tmp_path / "out").read_text().splitlines())}
    assert len(out) == len(docs)
    for d in docs:
        got = out[d["id"]]
        if d["planted"] is None:
            assert got["kind"] == "doc" and got["text"] == d["text"]
        elif action == "drop":
            assert got["kind"] == "dropped" and got["reason"] == f"benchmark_{d['planted']}"
        else:
            assert got["kind"] == "doc" and got["decontaminated"] == d["planted"]
            assert len(got["text"]) < len(d["text"]) and got["trace"][-1][0] == "decontam"


def test_the_index_is_cached_and_the_cached_one_is_the_same(data, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("REFINERY_CACHE", str(tmp_path))
    cfg = DecontamConfig(benchmarks=("mc/copa.jsonl", "mc/arc_challenge.jsonl"))
    built = load_benchmark_index(cfg, data)
    first = Benchmarks(cfg)()                          # builds and keeps it
    [kept] = (tmp_path / "decontam").glob("*.npz")
    second = Benchmarks(cfg)()                         # reads it
    for index in (first, second):
        assert (index.names, index.items, index.ngram, list(index.tables)) == \
               (built.names, built.items, built.ngram, list(built.tables))
        for n, (keys, owners) in built.tables.items():
            assert index.tables[n][0].dtype == keys.dtype and (index.tables[n][0] == keys).all()
            assert (index.tables[n][1] == owners).all()
    page = benchmark_items(data / "mc/copa.jsonl")[1][0]
    assert second.matches(page) == built.matches(page) != []
    # other settings, another file; a damaged file is built again, with a warning
    Benchmarks(DecontamConfig(benchmarks=cfg.benchmarks, ngram=12))()
    assert len(list((tmp_path / "decontam").glob("*.npz"))) == 2
    kept.write_bytes(kept.read_bytes()[:1000])
    again = Benchmarks(cfg)()
    assert "unreadable" in caplog.text and again.matches(page) == built.matches(page)
    assert len(kept.read_bytes()) > 1000
