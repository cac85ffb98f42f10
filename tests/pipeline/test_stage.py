"""The stage protocol (Ledger, ApplyFilter) and one TestPipeline test per composite transform, on real WARC records."""
import enum
import json

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from collections import Counter

from filters.verdict import Verdict
from pipeline import doc as items
from pipeline.dataset import WriteDataset, file_funnel, shard_name
from pipeline.extract import ExtractText
from pipeline.extraction import ExtractConfig
from pipeline.read import ReadWarc
from pipeline.stage import ApplyFilter, Ledger
from pipeline.warc import ReadConfig


@pytest.fixture(scope="module")
def resiliparse(data):
    return str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz")


def kinds(pcoll):
    return pcoll | beam.Map(lambda item: item["kind"]) | beam.combiners.Count.PerElement()


def test_read_warc(resiliparse, data):
    missing = str(data / "warc/no-such-file.warc.gz")
    with BeamTestPipeline() as p:
        out = p | ReadWarc([resiliparse, missing], ReadConfig())
        tallies = (out | "Tallies" >> beam.Filter(lambda i: i["kind"] == items.TALLY)
                   | beam.Map(lambda t: (t["warc_file"].rsplit("/", 1)[-1], t["pages"], t["errors"],
                                         sum(t["skipped"].values()))))
        assert_that(tallies, equal_to([("cc-main-2020-34_resiliparse-warcfile.warc.gz", 16, 0, 34),
                                       ("no-such-file.warc.gz", 0, 1, 0)]), label="tallies")
        assert_that(kinds(out), equal_to([(items.DOC, 16), (items.TALLY, 2), (items.ERROR, 1)]), label="kinds")


def test_read_warc_splits_big_files(sample_warcs):
    with BeamTestPipeline() as p:
        out = p | ReadWarc([sample_warcs[0]], ReadConfig(split_bytes=1 << 20))
        docs = (out | "Docs" >> beam.Filter(lambda i: i["kind"] == items.DOC) | beam.Map(lambda d: d["id"])
                | beam.Distinct() | "CountDocs" >> beam.combiners.Count.Globally())
        chunks = (out | "Tallies" >> beam.Filter(lambda i: i["kind"] == items.TALLY)
                  | "CountChunks" >> beam.combiners.Count.Globally())
        assert_that(docs, equal_to([690]), label="docs")
        assert_that(chunks, equal_to([15]), label="chunks")


def test_extract_text(resiliparse):
    with BeamTestPipeline() as p:
        out = (p | ReadWarc([resiliparse], ReadConfig()) | ExtractText(ExtractConfig()))
        docs = out | "Docs" >> beam.Filter(lambda i: i["kind"] == items.DOC)
        assert_that(docs | "Fields" >> beam.Map(lambda d: (bool(d["text"]), "html" in d, d["trace"][0][0])),
                    equal_to([(True, False, "extract")] * 15), label="docs")
        assert_that(kinds(out), equal_to([(items.DOC, 15), (items.DROPPED, 1), (items.TALLY, 1)]), label="kinds")


class Length(str, enum.Enum):
    SHORT = "too_short"


def check_length(text: str, cfg: int = 2000, *, language=None, resources=None):
    return Length.SHORT if len(text) < cfg else None


def all_of(predicate):
    """A Beam matcher: at least one element, and every element satisfies `predicate`."""
    def match(got):
        if not got or not all(predicate(g) for g in got):
            raise AssertionError(f"unexpected elements: {got[:5]}")
    return match


def test_apply_filter_counts_and_tags(resiliparse):
    p = BeamTestPipeline()
    out = (p | ReadWarc([resiliparse], ReadConfig()) | ExtractText(ExtractConfig())
           | ApplyFilter("length", check_length, 2000))
    dropped = out | "Dropped" >> beam.Filter(lambda i: i["kind"] == items.DROPPED and i["stage"] == "length")
    kept = out | "Kept" >> beam.Filter(lambda i: i["kind"] == items.DOC)
    assert_that(dropped, all_of(lambda d: (d["reason"], "text" in d, d["trace"][-1][2]) == ("too_short", False, 0)),
                label="dropped")
    assert_that(kept, all_of(lambda d: len(d["text"]) >= 2000 and d["trace"][-1][0] == "length"), label="kept")
    result = p.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed for m in result.metrics().query()["counters"]}
    assert counters["length/kept"] + counters["length/dropped/too_short"] == 15 and counters["length/kept"] > 0


def test_write_dataset(resiliparse, tmp_path):
    output = str(tmp_path / "out")
    with BeamTestPipeline() as p:
        (p | ReadWarc([resiliparse], ReadConfig()) | ExtractText(ExtractConfig()).keeping_rejected(True)
         | WriteDataset(output, write_rejected=True))
    name = shard_name(resiliparse)
    table = pq.read_table(tmp_path / "out/data" / f"{name}.parquet")
    assert table.num_rows == 15
    assert {"id", "url", "text", "warc_file", "warc_record_id", "crawl_date"} <= set(table.column_names)
    offsets = table.column("warc_offset").to_pylist()
    assert offsets == sorted(offsets)
    rejected = pq.read_table(tmp_path / "out/rejected/extract" / f"{name}.parquet")
    assert rejected.column("reason").to_pylist() == ["no_main_text"]
    marker = json.loads((tmp_path / "out/_progress" / f"{name}.json").read_text())
    assert marker["balanced"] and marker["records_in"] == 50 and marker["kept"] == 15


def test_funnel_notices_a_lost_item():
    file_items = [items.tally("f", 0, pages=2, errors=0, skipped={"request_record": 3}),
                  {"kind": items.DOC, "warc_file": "f", "trace": [("extract", 100, 10)]},
                  {"kind": items.DROPPED, "warc_file": "f", "stage": "extract", "reason": "no_main_text",
                   "trace": [("extract", 50, 0)]}]
    funnel = file_funnel(file_items)
    assert funnel["balanced"] and funnel["records_in"] == 5
    assert funnel["chars"] == {"extract": {"in": 150, "out": 10}}
    assert not file_funnel(file_items[:-1])["balanced"]


# ---- the protocol without Beam: counters injected


def ledger(stage="s", keep_rejected=False):
    counts = Counter()
    return Ledger(stage, keep_rejected, count=lambda name, n: counts.update({name: n})), counts


def doc(text="one two three"):
    return {"kind": items.DOC, "id": "i", "url": "u", "warc_file": "f", "warc_record_id": "i", "warc_offset": 7,
            "crawl_date": "", "text": text, "trace": []}


def test_ledger_keep_drop_rewrite_error_note():
    books, counts = ledger("c4", keep_rejected=True)
    kept = books.keep(doc())
    rewritten = books.rewrite(doc("a long line\nshort"), "a long line")
    dropped = books.drop(doc("spam spam"), Length.SHORT, duplicate_of=42)
    error = books.error(doc(), Length.SHORT, "detail")
    books.note("lines_removed", 3)
    assert kept["trace"] == [("c4", 13, 13)] and rewritten["trace"] == [("c4", 17, 11)]
    assert (dropped["kind"], dropped["stage"], dropped["reason"], dropped["text"], dropped["duplicate_of"],
            dropped["trace"]) == (items.DROPPED, "c4", "too_short", "spam spam", 42, [("c4", 9, 0)])
    assert (error["kind"], error["stage"], error["warc_offset"], error["detail"]) == (items.ERROR, "c4", 7, "detail")
    assert counts == {"kept": 2, "dropped/too_short": 1, "error/too_short": 1, "lines_removed": 3}
    assert "text" not in ledger(keep_rejected=False)[0].drop(doc(), Length.SHORT)


def test_reasons_must_be_enum_members_and_notes_cannot_pose_as_decisions():
    books, _ = ledger()
    with pytest.raises(TypeError, match="Reason enum member"):
        books.drop(doc(), "too_short")
    for name in ("kept", "dropped/x", "error/x"):
        with pytest.raises(ValueError, match="reserved"):
            books.note(name)
    with pytest.raises(TypeError, match="must return None, a Reason or a Verdict"):
        books.apply(doc(), "too_short")


def test_apply_records_what_a_check_returned():
    books, counts = ledger()
    assert books.apply(doc(), None)["kind"] == items.DOC
    assert books.apply(doc(), Length.SHORT)["reason"] == "too_short"
    changed = books.apply(doc("abc def"), Verdict(text="abc", fields={"score": 0.5}, notes={"cut": 2}))
    assert (changed["text"], changed["score"], changed["trace"]) == ("abc", 0.5, [("s", 7, 3)])
    annotated_drop = books.apply(doc(), Verdict(reason=Length.SHORT, fields={"score": 0.1}))
    assert annotated_drop["reason"] == "too_short"
    undecided = books.apply(doc(), Verdict(fields={"score": 0.9}), record_keep=False)
    assert undecided["trace"] == [] and undecided["score"] == 0.9       # a later step of the stage decides
    assert counts == {"kept": 2, "dropped/too_short": 2, "cut": 2}
