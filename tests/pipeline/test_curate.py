"""`refinery curate` end to end on the real WARCs in ../shared/data/warc."""
import json

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from pipeline.app.cli import main


def identity_holds(stats: dict) -> bool:
    accounted = (stats["kept"] + sum(stats["skipped"].values()) + sum(stats["errors"].values())
                 + sum(sum(r.values()) for r in stats["dropped"].values()))
    return stats["records_in"] == accounted


def test_sample_crawl_reads_all_2760_responses(sample_run):
    code, output = sample_run
    assert code == 0
    stats = json.loads((output / "stats.json").read_text())
    assert identity_holds(stats) and stats["balanced"]
    non_pages = sum(stats["skipped"].values())
    assert stats["records_in"] - non_pages == 2760            # every response became a page to extract
    assert stats["skipped"] == {"metadata_record": 2760, "request_record": 2760, "warcinfo_record": 4}
    assert stats["errors"] == {}
    assert stats["kept"] + sum(sum(r.values()) for r in stats["dropped"].values()) == 2760
    assert set(stats["dropped"]) <= set(stats["stages"]) and set(stats["chars"]) == set(stats["stages"])
    assert stats["chars"]["extract"]["in"] > stats["chars"]["extract"]["out"] > 0


def test_sample_crawl_dataset_is_parquet_with_lineage(sample_run, data):
    _, output = sample_run
    table = pads.dataset(str(output / "data"), format="parquet").to_table()
    stats = json.loads((output / "stats.json").read_text())
    assert table.num_rows == stats["kept"]
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    manifest = {json.loads(line)["record_id"].strip("<>").split(":")[-1]
                for line in open(data / "warc/sample-crawl/manifest.jsonl")}
    assert set(table.column("warc_record_id").to_pylist()) <= manifest
    assert all(t.strip() for t in table.column("text").to_pylist())


def test_sample_crawl_dataset_holds_no_pii(sample_run):
    """No e-mail address, public IPv4 address or Luhn-valid card number survives into the dataset."""
    import ipaddress
    import re

    from filters.pii import luhn_valid
    _, output = sample_run
    table = pads.dataset(str(output / "data"), format="parquet").to_table(columns=["text", "pii_email"])
    texts = table.column("text").to_pylist()
    assert sum(table.column("pii_email").to_pylist()) > 0           # there were addresses to redact
    emails = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
    ipv4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]\d)")
    cards = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
    for text in texts:
        assert not emails.search(text)
        for match in ipv4.finditer(text):
            try:
                address = ipaddress.IPv4Address(match.group(0))
            except ValueError:
                continue
            context = text[max(0, match.start() - 10):match.start()].lower()
            assert not address.is_global or re.search(r"\b(?:version|ver\.?|v)\s*$", context), match.group(0)
        for match in cards.finditer(text):
            digits = re.sub(r"[ -]", "", match.group(0))
            assert not luhn_valid(digits), match.group(0)


def test_spam_pages_are_removed_with_reasons(data, tmp_path):
    """The 8 adult and gambling spam pages of the 2020 Common Crawl sample (SOURCES.md) never reach the data."""
    spam = {"037426.cn", "0513mt.com", "05925.net", "096355.com",            # adult video
            "041696.com", "077678u.info", "0755krk.com", "035.psb556.com"}   # lottery / gambling
    output = tmp_path / "out"
    assert main(["curate", "--input", str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz"),
                 "--output", str(output), "--no-progress", "--write-rejected"]) == 0
    host = lambda url: url.split("/")[2]
    kept = pads.dataset(str(output / "data"), format="parquet").to_table(columns=["url"]).column("url").to_pylist()
    rejected = pads.dataset(str(output / "rejected"), format="parquet").to_table(
        columns=["url", "stage", "reason"]).to_pylist()
    assert not spam & {host(u) for u in kept}
    reasons = {host(r["url"]): (r["stage"], r["reason"]) for r in rejected}
    assert spam <= set(reasons)
    assert all(stage and reason for stage, reason in (reasons[h] for h in spam))


def test_rerun_skips_complete_inputs(sample_run, data, capsys):
    _, output = sample_run
    shards = sorted((output / "data").iterdir())
    before = {p: p.stat().st_mtime_ns for p in shards}
    stats_before = json.loads((output / "stats.json").read_text())
    code = main(["curate", "--input", str(data / "warc/sample-crawl/*.warc.gz"), "--output", str(output),
                 "--no-progress"])
    assert code == 0
    assert "4 of 4 input files already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in shards} == before
    stats = json.loads((output / "stats.json").read_text())
    assert stats["inputs_skipped_as_complete"] == 4
    assert {k: stats[k] for k in ("records_in", "kept", "skipped", "dropped")} == \
        {k: stats_before[k] for k in ("records_in", "kept", "skipped", "dropped")}


def test_every_shared_warc_runs_to_the_end(data, tmp_path):
    """Format variety and failure cases: exit 0, identity holds, the clipped record is an error."""
    output = tmp_path / "out"
    code = main(["curate", "--input", f"{data}/warc/commoncrawl/*,{data}/warc/other-crawls/*", "--output",
                 str(output), "--no-progress", "--write-rejected"])
    assert code == 0
    stats = json.loads((output / "stats.json").read_text())
    assert identity_holds(stats) and stats["balanced"] and stats["files"] == 10
    assert stats["errors"] == {"truncated_record": 1}
    errors = [json.loads(line) for f in (output / "errors").iterdir() for line in f.read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["warc_file"].endswith("clipped-truncated-record_resiliparse.warc.gz")
    assert errors[0]["warc_offset"] == 0 and errors[0]["reason"] == "truncated_record"
    rejected = pq.read_table(output / "rejected" / "extract")
    assert rejected.num_rows == sum(stats["dropped"].get("extract", {}).values())


def test_rerun_with_another_config_redoes_the_inputs(data, tmp_path, capsys):
    warc = str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")
    output = tmp_path / "out"
    assert main(["curate", "--input", warc, "--output", str(output), "--no-progress", "--write-rejected"]) == 0
    first = json.loads((output / "stats.json").read_text())
    assert (output / "rejected").exists()
    extract_only = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs/extract-only.yaml")
    assert main(["curate", "--input", warc, "--output", str(output), "--no-progress", "--config", extract_only]) == 0
    assert "written under another config: redoing them" in capsys.readouterr().out
    second = json.loads((output / "stats.json").read_text())
    assert second["inputs_skipped_as_complete"] == 0 and second["kept"] > first["kept"]
    assert not any((output / "rejected").rglob("*.parquet"))     # the old run's rejected shards are gone
    assert set(second["dropped"]) <= {"extract"}
    # a marker whose outputs lead out of the folder: redoing it under another config deletes only inside
    marker = next((output / "_progress").glob("*.json"))
    record = json.loads(marker.read_text())
    (tmp_path / "outside.txt").write_text("mine")
    record["outputs"].append("../outside.txt")
    marker.write_text(json.dumps(record))
    assert main(["curate", "--input", warc, "--output", str(output), "--no-progress"]) == 0
    assert (tmp_path / "outside.txt").read_text() == "mine"


def test_missing_input_and_bad_config_are_clear_errors(tmp_path, data, capsys):
    assert main(["curate", "--input", str(tmp_path / "nothing-*.warc.gz"), "--output", str(tmp_path / "o")]) == 2
    assert "no input file matches" in capsys.readouterr().err
    config = tmp_path / "bad.yaml"
    config.write_text("extract:\n  timeout: 3\n")
    assert main(["curate", "--input", str(data / "warc/commoncrawl/*.warc.gz"), "--output", str(tmp_path / "o"),
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) timeout" in err and "timeout_s" in err
    assert main(["curate", "--output", str(tmp_path / "o")]) == 2


def test_help_lists_curate(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["curate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--input" in out and "--crawl" in out and "Beam" in out


def test_sample_crawl_is_deduplicated(sample_run):
    """URL, exact and near duplicates of the sample crawl are dropped with their reason; survivors count them."""
    _, output = sample_run
    stats = json.loads((output / "stats.json").read_text())
    dedup = {stage: stats["dropped"].get(stage, {}) for stage in ("url_dedup", "exact_dedup", "minhash_dedup")}
    assert dedup["url_dedup"] == {"url_duplicate": 1}
    assert set(dedup["exact_dedup"]) == {"exact_duplicate"} and set(dedup["minhash_dedup"]) == {"near_duplicate"}
    table = pads.dataset(str(output / "data"), format="parquet").to_table(columns=["text", "duplicates_removed"])
    assert sum(table.column("duplicates_removed").to_pylist()) == \
        sum(dedup["exact_dedup"].values()) + sum(dedup["minhash_dedup"].values())
    from filters.dedup import text_key
    keys = [text_key(t) for t in table.column("text").to_pylist()]
    assert len(set(keys)) == len(keys)                     # no two kept texts are equal once normalised


def test_output_is_the_same_bytes_with_1_and_2_workers(sample_run, data, tmp_path):
    """The sample run (2 workers) again on 1 worker: dedup's survivors, and so every shard, are identical."""
    _, two_workers = sample_run
    one_worker = tmp_path / "out"
    assert main(["curate", "--input", str(data / "warc/sample-crawl/*.warc.gz"), "--output", str(one_worker),
                 "--no-progress", "--direct_num_workers=1"]) == 0
    shards = lambda root: {p.name: p.read_bytes() for p in (root / "data").iterdir()}
    assert shards(one_worker) == shards(two_workers) and len(shards(one_worker)) == 4


def test_no_dedup_flag(data, tmp_path):
    warc = str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")
    assert main(["curate", "--input", warc, "--output", str(tmp_path / "o"), "--no-progress", "--no-dedup"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert not {"url_dedup", "exact_dedup", "minhash_dedup"} & set(stats["stages"] + list(stats["chars"]))


def test_resumed_run_dedups_against_complete_inputs(data, tmp_path, capsys):
    """A run killed after some inputs were written: the rerun reads them again for dedup, rewrites only the rest."""
    warcs = sorted(str(p) for p in (data / "warc/commoncrawl").glob("*.warc.gz"))[:2]
    output = tmp_path / "o"
    assert main(["curate", "--input", ",".join(warcs), "--output", str(output), "--no-progress"]) == 0
    first = json.loads((output / "stats.json").read_text())
    markers = sorted((output / "_progress").iterdir())
    kept_marker = markers[0]
    before = kept_marker.stat().st_mtime_ns
    markers[1].unlink()                                    # as if the run had died before writing it
    assert main(["curate", "--input", ",".join(warcs), "--output", str(output), "--no-progress"]) == 0
    assert "re-reading the 1 complete ones without rewriting them" in capsys.readouterr().out
    assert kept_marker.stat().st_mtime_ns == before
    second = json.loads((output / "stats.json").read_text())
    assert {k: second[k] for k in ("records_in", "kept", "dropped")} == \
        {k: first[k] for k in ("records_in", "kept", "dropped")}


# ---- the stage protocol end to end: one order, every drop counted three ways


MIX_WEIGHTS = "{news: 0.3, reference: 0.15, blog: 0.15, forum: 0.1, code: 0.1, commerce: 0.05, other: 0.15}"


def test_every_drop_is_counted_by_counter_stats_and_rejected(quality_model, data, tmp_path):
    """Every stage listed, the global decisions included (top fraction, mix sampling, line dedup, decontam cuts):
    for each stage and reason the Beam counter, stats.json and the rows under rejected/<stage>/ agree exactly;
    each stage's kept counter is what reached it minus what it dropped; the identity holds."""
    from pipeline.config import load_config
    from pipeline.curate import curate, expand_inputs, stage_names
    cfg = load_config(None, [f"stages=[{', '.join(stage_names())}]", "output.write_rejected=true",
                             f"quality.model_path={quality_model[0]}", "quality.top_fraction=0.8",
                             f"mix.weights={MIX_WEIGHTS}", "decontam.action=cut"])
    output = tmp_path / "out"
    half = expand_inputs([str(data / "warc/sample-crawl/*.warc.gz")])[:2]    # 1,380 pages: every stage drops some
    result = curate(half, str(output), cfg, progress=False)
    stats, counters = json.loads((output / "stats.json").read_text()), result.counters
    rejected = pads.dataset(str(output / "rejected"), format="parquet").to_table(columns=["stage", "reason"])
    rows: dict = {}
    for row in rejected.to_pylist():
        rows.setdefault(row["stage"], {}).setdefault(row["reason"], 0)
        rows[row["stage"]][row["reason"]] += 1
    from_counters: dict = {}
    for name, value in counters.items():
        stage, _, rest = name.partition("/")
        if rest.startswith("dropped/"):
            from_counters.setdefault(stage, {})[rest.removeprefix("dropped/")] = value
    assert from_counters == stats["dropped"] == rows
    for stage in ("quality", "mix"):                      # the paths whose drops had no counter before
        assert sum(stats["dropped"][stage].values()) > 0, stage
    assert sum(v for k, v in counters.items() if k.startswith("decontam/cut/")) > 0       # cuts, not drops
    assert counters["line_dedup/lines_removed"] > 0
    assert stats["stages"] == stage_names()
    live = counters["read/pages"]
    for stage in stats["stages"]:
        dropped = sum(stats["dropped"].get(stage, {}).values())
        errors = sum(v for k, v in counters.items() if k.startswith(f"{stage}/error/"))
        live -= dropped + errors
        assert counters.get(f"{stage}/kept", 0) == live, stage
    assert live == stats["kept"] == result.funnel["kept"] > 0
    assert counters["read/records_in"] == stats["records_in"]
    assert {k.removeprefix("read/skipped/"): v for k, v in counters.items() if k.startswith("read/skipped/")} \
        == stats["skipped"]
    assert identity_holds(stats) and stats["balanced"]


def test_the_graph_runs_the_stages_in_the_funnels_order(quality_model):
    """There is one order, the recipe's: the graph build() makes has its stages in it, and stats.json's list
    (which orders the funnel) is taken from the same active stages."""
    import apache_beam as beam
    from pipeline.config import load_config
    from pipeline.curate import active_stages, build, recipe, stage_names
    names = stage_names()
    assert len(set(names)) == len(names) and names[:2] == ["url", "extract"] and names[-1] == "mix"
    cfg = load_config(None, [f"stages=[{', '.join(reversed(names))}]",          # listed backwards on purpose
                             f"quality.model_path={quality_model[0]}"])
    pipeline = beam.Pipeline()
    build(pipeline, ["a.warc.gz"], cfg, "/tmp/unused")
    proto = pipeline.to_runner_api()

    def in_order(ids):       # the graph's transforms depth first, as built; a stage is named by its label
        for i in ids:
            transform = proto.components.transforms[i]
            yield transform.unique_name.rsplit("/", 1)[-1]
            yield from in_order(transform.subtransforms)
    assert [name for name in in_order(proto.root_transform_ids) if name in names] == names
    assert [s.name for s in active_stages(cfg)] == names == [s.name for s in recipe(cfg)]


def test_a_stage_runs_only_when_listed(monkeypatch, data, tmp_path):
    """A stage added to the recipe later runs in no existing config: not in the defaults, not in extraction-only
    (the arm `refinery ablate` compares against), whatever else that config says."""
    import enum

    from pipeline import curate as curate_module
    from pipeline.config import load_config
    from pipeline.app.run import curate_config
    from pipeline.stage import ApplyFilter

    class Never(str, enum.Enum):
        DROPPED = "new_stage_dropped_everything"

    original = curate_module.recipe
    monkeypatch.setattr(curate_module, "recipe", lambda cfg, out="": original(cfg, out) + [
        ApplyFilter("new_stage", lambda text, cfg, **_: Never.DROPPED, None)])
    extract_only = curate_config("configs/extract-only.yaml")
    assert [s.name for s in curate_module.active_stages(extract_only)] == ["extract"]
    assert "new_stage" not in [s.name for s in curate_module.active_stages(load_config(None))]
    listed = load_config(None, ["stages=[new_stage]"])
    assert [s.name for s in curate_module.active_stages(listed)] == ["extract", "new_stage"]
    warc = str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")
    result = curate_module.curate([warc], str(tmp_path / "o"), extract_only, progress=False)
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["stages"] == ["extract"] and set(stats["dropped"]) <= {"extract"} and result.funnel["kept"] > 0
    assert not any(name.startswith("new_stage/") for name in result.counters)


def test_old_and_unknown_stage_lists_are_clear_errors(data, tmp_path, capsys):
    warc = str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")
    old = tmp_path / "old.yaml"
    old.write_text("stages:\n  url: false\n  line_dedup: true\n")
    assert main(["curate", "--input", warc, "--output", str(tmp_path / "o"), "--config", str(old)]) == 2
    err = capsys.readouterr().err
    assert "`stages` is now the list of stages to run" in err and "Traceback" not in err
    assert "stages: [language, gopher_repetition" in err and "line_dedup]" in err and "[url" not in err
    assert main(["curate", "--input", warc, "--output", str(tmp_path / "o"), "--set", "stages=[url, gopher]"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage(s) gopher" in err and "gopher_quality" in err
    assert not (tmp_path / "o").exists()


def test_stages_keep_and_drop_only_through_the_ledger():
    """No module of the pipeline but the protocol creates a counter or writes a trace entry by hand."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "pipeline"
    for path in sorted(root.glob("*.py")):
        if path.name in ("stage.py", "doc.py", "dataset.py"):       # the protocol, the items, the funnel's reader
            continue
        source = path.read_text()
        assert not re.search(r"Metrics\.counter|\[\"trace\"\]\.append|items\.dropped\(", source), path.name


def test_remove_dataset_takes_back_only_what_curation_wrote(sample_run, tmp_path):
    """`refinery run` without --resume curates again from scratch: what curation wrote goes (listed, staged or
    marked), a user's files in the same folders stay."""
    import shutil
    from pipeline.curate import remove_dataset
    folder = tmp_path / "curated"
    shutil.copytree(sample_run[1], folder)
    mine = {"keep.txt": "mine", "data/notes.txt": "mine", "_progress/notes.json": '{"input": "x", "outputs": []}'}
    for rel, text in mine.items():
        (folder / rel).write_text(text)
    # a marker and its output left by an interrupted run (no manifest lists them)
    marker = next((folder / "_progress").glob("sample-crawl-00000*.json"))
    extra = json.loads(marker.read_text())
    extra["input"] = extra["input"].replace("00000", "99999")
    from pipeline.dataset import shard_name
    extra["outputs"] = ["data/left-over.parquet", "../outside.parquet"]
    (folder / "data/left-over.parquet").write_bytes(b"x")
    (tmp_path / "outside.parquet").write_bytes(b"x")
    (folder / "_progress" / f"{shard_name(extra['input'])}.json").write_text(json.dumps(extra))
    remove_dataset(folder)
    left = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    assert left == sorted([*mine, "manifest.json"])      # an empty dataset's: curation takes the folder back
    assert json.loads((folder / "manifest.json").read_text())["files"] == {}
    assert (tmp_path / "outside.parquet").exists()      # a marker's path out of the folder is not followed
    # a folder holding someone else's stats.json is not a dataset: refused, nothing touched
    other = tmp_path / "other"
    other.mkdir()
    (other / "stats.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="not a curated dataset"):
        remove_dataset(other)
    assert (other / "stats.json").read_text() == '{"mine": 1}'


def test_names_with_glob_characters_are_taken_as_named(crawl_slice, sample_tokenizer_dir, tmp_path, capsys):
    """Beam's match and delete read a path as a glob: a crawl called crawl[1].warc.gz, or an output called
    run[1], matched nothing, so the run died after writing its shards and a rerun could not delete them."""
    import shutil
    crawl = tmp_path / "crawl[1].warc.gz"
    shutil.copy(crawl_slice, crawl)
    output = tmp_path / "run[1]"
    one = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]      # 100 pages: no worker processes
    assert main(["curate", "--input", str(crawl), "--output", str(output), "--no-progress", *one]) == 0
    first = json.loads((output / "stats.json").read_text())
    assert identity_holds(first) and first["records_in"] == 301 and first["kept"] > 0
    assert main(["curate", "--input", str(crawl), "--output", str(output), "--no-progress", *one]) == 0
    assert "1 of 1 input files already complete" in capsys.readouterr().out
    assert main(["curate", "--input", str(crawl), "--output", str(output), "--no-progress",
                 "--set", "c4.min_sentences=1", *one]) == 0
    assert "written under another config: redoing them" in capsys.readouterr().out
    assert len(list((output / "data").glob("*.parquet"))) == 1 and not (output / "_work").exists()
    tokens = tmp_path / "tokens[1]"
    assert main(["tokenize", "--input", str(output), "--tokenizer", sample_tokenizer_dir, "--output", str(tokens),
                 *one]) == 0
    summary = json.loads((tokens / "tokens.json").read_text())
    assert summary["tokens"] > 0 and summary["shards"] and not (tokens / "_shards").exists()
