"""`refinery run` and `refinery ablate` end to end on real data: the first 100 pages of a sample-crawl WARC, a
0.1 M-parameter model, a few evaluation items (~60 s in all)."""
import json
import re
import shutil
from html import unescape

import pytest

from pipeline.app.ablate import verdict
from pipeline.app.cli import main
from pipeline.app.report import funnel_rows, write_run_report
from pipeline.corpus import summary
from tests.conftest import TINY


def _rows(html: str) -> list[list[str]]:
    """Every table row of the page as unescaped cell texts."""
    return [[unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", html)]


def test_run_writes_a_report_whose_funnel_is_stats_json(tiny_run):
    code, out = tiny_run
    assert code == 0
    stats = json.loads((out / "curated" / "stats.json").read_text())
    record = json.loads((out / "run.json").read_text())
    html = (out / "report.html").read_text()
    assert list(record["stages"]) == ["quality", "curate", "tokenizer", "tokenize", "train", "eval"]
    assert [s["status"] for s in record["stages"].values()] == ["off", "ran", "ran", "ran", "ran", "ran"]
    # every record in is accounted for, and the page says so
    dropped = sum(sum(r.values()) for r in stats["dropped"].values())
    assert stats["records_in"] == 301
    assert stats["records_in"] == stats["kept"] + sum(stats["skipped"].values()) + sum(stats["errors"].values()) + dropped
    assert f"records in ({stats['records_in']:,}) = kept ({stats['kept']:,})" in html and ": holds</p>" in html
    # the funnel table: each stage's in / dropped / kept are stats.json's
    rows = {r[0]: r[1:] for r in _rows(html) if r}
    assert rows["records in"][-1] == f"{stats['records_in']:,}" and rows["kept"][-1] == f"{stats['kept']:,}"
    for stage in stats["stages"]:
        n_in, n_dropped, n_kept = (int(x.replace(",", "")) for x in rows[f"stage: {stage}"])
        assert n_dropped == sum(stats["dropped"].get(stage, {}).values())
        assert n_kept == n_in - n_dropped
    assert funnel_rows(stats)[-1]["kept"] == stats["kept"] > 0
    for reason, n in stats["skipped"].items():
        assert rows[f"skipped: {reason}"][1] == f"{n:,}"
    # the drop table has every reason; the eval table every task, with the numbers of eval.json
    reasons = {(r[0], r[1]): r[2] for r in _rows(html) if len(r) == 5}
    for stage, counts in stats["dropped"].items():
        for reason, n in counts.items():
            assert reasons[(stage, reason)] == f"{n:,}"
    results = json.loads((out / "eval.json").read_text())
    evals = {(r[0], r[2]): r[3] for r in _rows(html) if len(r) == 6}
    assert evals[("wikitext", "bits per byte")] == f"{results['wikitext']['bpb']:.4f}"
    for task in ("arc_easy", "piqa"):
        assert evals[(task, "acc")].startswith(f"{results[task]['acc']:.3f} ± ")
        assert 0 < results[task]["chance"] <= 0.5
    # corpus statistics: stats.json's, with their chart
    assert summary(stats["corpus"]) in unescape(html) and stats["corpus"]["docs"] == stats["kept"]
    # self-contained: charts inline (funnel, corpus, loss), no script, nothing fetched
    assert html.count('src="data:image/png;base64,') == 3
    assert "<script" not in html and 'src="http' not in html and "<link" not in html
    assert "refinery curate --input" in unescape(html) and "refinery train --config" in unescape(html)


def test_report_escapes_text(tiny_run, tmp_path):
    _, out = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    record = json.loads((copy / "run.json").read_text())
    record["command"] = 'refinery run <script>alert("x")</script> & <b>'
    record["machine"]["cpu"] = "<img src=x onerror=alert(1)>"
    (copy / "run.json").write_text(json.dumps(record))
    html = write_run_report(copy).read_text()
    assert "<script" not in html and "<img src=x" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_resume_reuses_complete_stages_and_a_failing_stage_names_itself(tiny_run, crawl_slice, tmp_path, capsys):
    _, out = tiny_run
    shutil.copytree(out / "curated", tmp_path / "curated")
    shutil.copy(out / "run.json", tmp_path / "run.json")          # what marks the folder as an earlier run's
    code = main(["run", "configs/sample.yaml", "--output", str(tmp_path), "--input", crawl_slice, "--no-quality",
                 "--resume", *TINY, "--vocab-size", "100000"])      # far more pieces than 100 pages hold
    assert code == 1
    assert "refinery run: stage 3/6 tokenizer failed:" in capsys.readouterr().err
    record = json.loads((tmp_path / "run.json").read_text())
    first = json.loads((out / "run.json").read_text())
    assert record["stages"]["curate"]["status"] == "reused"
    # a reused stage keeps the time of the run that made it (was 0.0 s), and says how long the check took
    assert record["stages"]["curate"]["seconds"] == first["stages"]["curate"]["seconds"] > 0
    assert "checked_s" in record["stages"]["curate"]
    assert record["machine"]["gpu"] and record["machine"]["load_average_1m"] >= 0


def test_a_run_again_replaces_only_what_its_stages_wrote(tiny_run, crawl_slice, tmp_path):
    """`refinery run` into its own folder without --resume (`make run` twice): each stage removes what its
    manifest lists and runs again, to the same results; files of yours in the stage folders stay, unlisted."""
    from tests.conftest import REPO
    _, first = tiny_run
    out = tmp_path / "run"
    shutil.copytree(first, out)
    mine = ["notes.txt", "curated/notes.txt", "curated/data/notes.txt", "tokenizer/notes.txt", "tokens/notes.txt",
            "train/notes.txt", "train/checkpoints/notes.txt"]
    for rel in mine:
        (out / rel).write_text("mine")
    assert main(["run", str(REPO / "configs/sample.yaml"), "--output", str(out), "--input", crawl_slice,
                 "--no-quality", "--steps", "20", *TINY]) == 0
    assert all((out / rel).read_text() == "mine" for rel in mine)
    for stage in ("curated", "tokenizer", "tokens", "train"):
        listed = json.loads((out / stage / "manifest.json").read_text())["files"]
        assert not any(name.endswith("notes.txt") for name in listed), stage
    before, after = (json.loads((d / "curated/stats.json").read_text()) for d in (first, out))
    assert {k: v for k, v in after.items() if k != "wall_s"} == {k: v for k, v in before.items() if k != "wall_s"}
    losses = [json.loads((d / "train/summary.json").read_text())["final_eval"]["bpb"] for d in (first, out)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("case, expected", [
    ("unknown_key", "nonsense"), ("missing_input", "no input file matches"), ("train_key", "nonsense")])
def test_bad_config_or_missing_input_exits_2_before_any_work(case, expected, tmp_path, capsys, crawl_slice):
    config = tmp_path / "bad.yaml"
    config.write_text("stages:\n  nonsense: true\n")
    args = {"unknown_key": [str(config), "--input", crawl_slice],
            "missing_input": ["configs/sample.yaml", "--input", str(tmp_path / "none-*.warc.gz")],
            "train_key": ["configs/sample.yaml", "--input", crawl_slice, "--set", "model.nonsense=1"]}[case]
    assert main(["run", *args, "--output", str(tmp_path / "out"), "--no-quality"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refinery run: ") and expected in err
    assert not (tmp_path / "out").exists()


def test_ablate_trains_each_arm_on_equal_tokens(tiny_run, crawl_slice, tmp_path):
    """Arm 1: the slice curated by configs/sample.yaml (the run's folder); arm 2: configs/extract-only.yaml."""
    _, run = tiny_run
    out = tmp_path / "ablate"
    code = main(["ablate", str(run / "curated"), "configs/extract-only.yaml", "--output", str(out),
                 "--input", crawl_slice, "--tokens", "10000", "--seeds", "0", *TINY])
    assert code == 0
    result = json.loads((out / "ablation.json").read_text())
    rows = result["rows"]
    assert [r["arm"] for r in rows] == ["run", "extract-only"]
    assert rows[0]["train_tokens"] == rows[1]["train_tokens"] == result["tokens"] == 10 * 8 * 128  # 10 steps
    # extraction only keeps more of the same pages than every filter does
    assert rows[1]["documents"] > rows[0]["documents"] > 0 and rows[1]["unique_tokens"] > rows[0]["unique_tokens"]
    # one tokenizer for both arms
    shas = {json.loads((out / arm / "tokens" / "tokens.json").read_text())["tokenizer_sha256"]
            for arm in ("run", "extract-only")}
    assert len(shas) == 1
    md = (out / "ablation.md").read_text()
    for r in rows:
        assert f"| {r['arm']} | 0 |" in md and f"{r['wikitext']['bpb']:.4f}" in md
    means = result["wikitext_bpb"]
    assert f"`run` reached {means['run']['mean']:.4f}" in result["verdict"]
    assert f"`extract-only` {means['extract-only']['mean']:.4f}" in result["verdict"]
    assert (out / "ablation.png").stat().st_size > 0 and (out / "report.html").is_file()


@pytest.mark.parametrize("a, b, expected", [
    ([2.90, 2.92], [3.00, 3.01], "Yes"),                      # apart by more than the seeds spread
    ([3.00, 3.01], [2.90, 2.92], "No, it hurt"),
    ([2.95, 3.00], [2.97, 2.99], "Not measurably"),           # within the spread
    ([2.90], [3.00], "unconfirmed"),                          # one seed: noise unknown
])
def test_verdict_sets_the_difference_against_the_seed_spread(a, b, expected):
    text = verdict({"curated": a, "raw": b}, 1000)
    assert expected in text and "`curated`" in text and "`raw`" in text
