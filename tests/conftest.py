import gzip
import json
import logging
import tempfile
from pathlib import Path

import pytest

from pipeline.app.cli import main as cli
from pipeline.shared_data import shared_data_dir

logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def temporary_files_under_basetemp(tmp_path_factory):
    """What the code under test puts in the temporary folder, in this process, goes under pytest's own folder,
    which pytest prunes: Beam makes a `beam-pipeline-temp*` folder for every pipeline built and removes it only
    when the pipeline runs, so the tests that build a graph without running it left one in /tmp each."""
    before, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = before


@pytest.fixture(scope="session")
def data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def sample_warcs(data) -> list[str]:
    return sorted(str(p) for p in (data / "warc" / "sample-crawl").glob("*.warc.gz"))


@pytest.fixture(scope="session")
def articles(data) -> list[str]:
    """Clean English article bodies (scrapinghub benchmark gold), longest first."""
    truth = json.loads((data / "extraction/scrapinghub-article-extraction-benchmark/ground-truth.json").read_text())
    return sorted((v["articleBody"] for v in truth.values()), key=len, reverse=True)


@pytest.fixture(scope="session")
def article(articles) -> str:
    """A real news article of a few thousand characters that passes every heuristic filter."""
    from filters.c4 import clean_c4
    from filters.fineweb import check_fineweb
    from filters.gopher import check_gopher_quality, check_gopher_repetition
    for text in articles[20:]:
        if 3000 < len(text) < 8000 and check_gopher_repetition(text) is None and check_gopher_quality(text) is None \
                and clean_c4(text)[1] is None and check_fineweb(text) is None:
            return text
    raise AssertionError("no clean article found")


@pytest.fixture(scope="session")
def chinese(data) -> list[str]:
    root = data / "extraction/htmltotext-benchmark-multilingual/zh/text"
    return [p.read_text(encoding="utf-8") for p in sorted(root.glob("*.txt"))]


@pytest.fixture(scope="session")
def dolma_docs(data) -> list[dict]:
    with gzip.open(data / "text/dolma-cc-docs/cc-main-2023-06_documents-000.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, data):
    """`refinery curate` of the whole sample crawl with the default config (once per test session, ~60 s)."""
    output = tmp_path_factory.mktemp("sample") / "out"
    code = cli(["curate", "--input", str(data / "warc/sample-crawl/*.warc.gz"), "--output", str(output),
                 "--no-progress"])
    return code, output


@pytest.fixture(scope="session")
def quality_model(tmp_path_factory):
    """(path, ClassifierResult): the quality classifier trained on the default positives against the whole-page text
    of one sample-crawl WARC (~20 s)."""
    from pipeline import quality
    path = str(tmp_path_factory.mktemp("quality") / "quality.bin")
    from filters.quality import DEFAULT_POSITIVES
    result = quality.train_classifier(list(DEFAULT_POSITIVES), ["warc/sample-crawl/sample-crawl-00000.warc.gz"], path,
                           log=lambda *_: None)
    return path, result


# ---- the training side: a tokenizer, token shards and small models of the curated sample crawl

@pytest.fixture(scope="session")
def sample_tokenizer_dir(sample_run, tmp_path_factory) -> str:
    """A 4,000-piece tokenizer trained on the curated sample crawl."""
    _, output = sample_run
    directory = tmp_path_factory.mktemp("tok") / "tok"
    assert cli(["tokenizer", "train", "--input", str(output / "data"), "--vocab-size", "4000",
                 "--output", str(directory)]) == 0
    return str(directory)


@pytest.fixture(scope="session")
def sample_tokens(sample_run, sample_tokenizer_dir, tmp_path_factory):
    """Token shards of the curated sample crawl (`refinery tokenize`), ~2.4 M tokens in 7 domains."""
    _, output = sample_run
    target = tmp_path_factory.mktemp("tokens") / "out"
    assert cli(["tokenize", "--input", str(output), "--tokenizer", sample_tokenizer_dir,
                 "--output", str(target)]) == 0
    return target


@pytest.fixture(scope="session")
def small_base(sample_tokens, tmp_path_factory):
    """A 0.4 M-parameter model (dim 64, 2 layers, context 128) pretrained 150 steps on the sample crawl: the
    starting point of the post-training tests."""
    base = tmp_path_factory.mktemp("base") / "base"
    assert cli(["train", "--set", f"data.tokens={sample_tokens}", "--set", f"run.out_dir={base}",
                 "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "model.dim=64",
                 "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.steps=150", "--set", "run.progress=false", "--set", "run.batch_size=8",
                 "--set", "run.eval_every=0"]) == 0
    return base


@pytest.fixture(scope="session")
def scrambled_pairs(data, tmp_path_factory):
    """A real preference signal a tiny model can learn: hh-rlhf's chosen dialogue over the same dialogue with
    the last reply's words shuffled (helpful-base, first 600 rows, replies of 8+ words)."""
    import random

    from pipeline.app.common import HH_RLHF
    rng = random.Random(0)
    rows = []
    with gzip.open(data / HH_RLHF[1], "rt", encoding="utf-8") as fh:
        for line in list(fh)[:600]:
            chosen = json.loads(line)["chosen"]
            head, _, reply = chosen.rpartition("\n\nAssistant: ")
            words = reply.split()
            if len(words) < 8:
                continue
            rng.shuffle(words)
            rows.append({"chosen": chosen, "rejected": f"{head}\n\nAssistant: {' '.join(words)}"})
    pairs = tmp_path_factory.mktemp("pairs") / "scrambled.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return pairs


@pytest.fixture(scope="session")
def reward_run(small_base, scrambled_pairs, tmp_path_factory):
    """`refinery reward` on the scrambled pairs: a reward model for fluent replies."""
    out = tmp_path_factory.mktemp("reward") / "reward"
    assert cli(["reward", "--model", str(small_base), "--pairs", str(scrambled_pairs), "--output", str(out),
                 "--set", "data.seq_len=128", "--set", "run.steps=120", "--set", "run.batch_size=8",
                 "--set", "run.progress=false", "--set", "run.eval_every=0", "--set", "optim.lr=1e-3"]) == 0
    return out


# ---- `refinery run` on 100 pages with a 0.1 M-parameter model (~60 s): the quick start's outputs at test size

TINY = ["--set", "model.dim=64", "--set", "model.n_layers=2", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
        "--set", "data.seq_len=128", "--set", "model.max_seq_len=128", "--set", "run.batch_size=8",
        "--set", "run.eval_every=10", "--set", "data.val_tokens=4096", "--vocab-size", "500", "--eval-limit", "4",
        "--wikitext-bytes", "20000", "--tasks", "wikitext,arc_easy,piqa", "--no-progress",
        # one torch thread and Beam in this process: with other jobs on the 2 cores, two spinning OpenMP
        # threads made the 20 steps take 91 s instead of 8, and worker processes add their start-up
        "--set", "run.threads=1", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="session")
def crawl_slice(sample_warcs, tmp_path_factory) -> str:
    """The first 301 records of a sample-crawl WARC (warcinfo, then 100 request/response/metadata triples), cut at a
    record boundary: a valid per-record-gzip WARC of 100 real pages."""
    from warcio.archiveiterator import ArchiveIterator
    with open(sample_warcs[0], "rb") as fh:
        records = ArchiveIterator(fh)
        for i, _ in enumerate(records):
            if i == 301:
                cut = records.get_record_offset()
                break
    with open(sample_warcs[0], "rb") as fh:
        data = fh.read(cut)
    path = tmp_path_factory.mktemp("slice") / "slice.warc.gz"
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(crawl_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    code = cli(["run", str(REPO / "configs/sample.yaml"), "--output", str(out), "--input", crawl_slice, "--no-quality",
                 "--steps", "20", *TINY])
    return code, out
