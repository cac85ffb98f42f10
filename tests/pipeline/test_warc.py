"""The WARC reader on the real files in ../shared/data/warc, and on real files we damage on purpose."""
import gzip
import os
import re
import zlib
from collections import Counter

import pytest

from pipeline.warc import (Chunk, ErrorReason, Page, ReadConfig, ReadError, Skip, detect_mode, find_record_start,
                           read_file)


def summary(outcomes):
    counts = Counter()
    for o in outcomes:
        if isinstance(o, Page):
            counts["page"] += 1
        elif isinstance(o, ReadError):
            counts[o.reason] += 1
        else:
            counts[o] += 1
    return counts


# Record counts by type are those in ../shared/data/SOURCES.md (counted there with warcio).
@pytest.mark.parametrize("name, expected", [
    ("commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz",
     {Skip.WARCINFO: 1, Skip.REQUEST: 17, "page": 16, Skip.METADATA: 16}),
    ("commoncrawl/cc-main-2024-22_whirlwind.warc.gz",
     {Skip.WARCINFO: 1, Skip.REQUEST: 1, "page": 1, Skip.METADATA: 1}),
    ("commoncrawl/cc-main-2024-22_whirlwind.warc.wet.gz", {Skip.WARCINFO: 1, Skip.CONVERSION: 1}),
    ("commoncrawl/cc-main-2024-22_whirlwind.warc.wat.gz", {Skip.WARCINFO: 1, Skip.METADATA: 1}),
    ("commoncrawl/clipped-truncated-record_resiliparse.warc.gz", {ErrorReason.TRUNCATED_RECORD: 1}),
    ("commoncrawl/commoncrawl.org_jwarc-cc.warc.gz", {"page": 1}),
    ("other-crawls/dolma-sample-0000.warc.gz",
     {Skip.WARCINFO: 1, Skip.REQUEST: 22, "page": 22, Skip.METADATA: 1, Skip.RESOURCE: 2}),
    ("other-crawls/dolma-sample-0001.warc.gz",
     {Skip.WARCINFO: 1, Skip.REQUEST: 15, "page": 15, Skip.METADATA: 1, Skip.RESOURCE: 2}),
    ("other-crawls/clueweb09-ja_resiliparse-quirk.warc.gz", {Skip.WARCINFO: 1, "page": 29}),   # WARC/0.18
    # 8 responses: a dns: record, 2 HTML pages, 3 images, text/plain and text/xml
    ("other-crawls/ia-heritrix-2008-blackbook-truncated.warc.gz",
     {Skip.WARCINFO: 1, Skip.REQUEST: 7, Skip.METADATA: 7, "page": 2, Skip.NOT_HTML: 5, Skip.NOT_HTTP: 1}),
])
def test_real_files_are_classified(data, name, expected):
    assert summary(read_file(str(data / "warc" / name))) == expected


def test_sample_crawl_file_has_690_pages_with_gold_urls(sample_warcs, data):
    import json
    manifest = [json.loads(line) for line in open(data / "warc/sample-crawl/manifest.jsonl")]
    want = {m["record_id"].strip("<>").split(":")[-1] for m in manifest if m["warc"] == os.path.basename(sample_warcs[0])}
    pages = [o for o in read_file(sample_warcs[0]) if isinstance(o, Page)]
    assert len(pages) == 690
    assert {p.record_id for p in pages} == want       # incl. records whose target URI is not http(s)


def test_splitting_reads_every_record_once(sample_warcs):
    whole = list(read_file(sample_warcs[1]))
    split = list(read_file(sample_warcs[1], split_bytes=1 << 16))     # ~200 chunks, most starting mid-record
    assert summary(split) == summary(whole)
    assert [p.offset for p in split if isinstance(p, Page)] == [p.offset for p in whole if isinstance(p, Page)]


def test_find_record_start_lands_on_members(sample_warcs):
    path = sample_warcs[0]
    raw = open(path, "rb").read()
    offsets = [o.offset for o in read_file(path) if isinstance(o, Page)][:20]
    with open(path, "rb") as fh:
        for before, page in zip(offsets, offsets[1:]):
            middle = (before + page) // 2
            fh.seek(middle)
            found = find_record_start(fh, middle, "members", None)
            assert middle <= found <= page
            assert zlib.decompressobj(31).decompress(raw[found:found + 4096], 8) == b"WARC/1.0"
            fh.seek(middle)
            assert find_record_start(fh, middle, "members", limit=middle + 1) in (None, middle)


def member_offsets(raw: bytes) -> list[int]:
    """Offsets of each gzip member in a per-record gzip file."""
    offsets, position = [], 0
    while position < len(raw):
        offsets.append(position)
        decompressor = zlib.decompressobj(31)
        decompressor.decompress(raw[position:])
        position = len(raw) - len(decompressor.unused_data)
    return offsets


@pytest.fixture(scope="module")
def resiliparse(data):
    path = data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz"
    return path.read_bytes()


def test_corrupt_member_is_one_error_and_reading_goes_on(resiliparse, tmp_path):
    members = member_offsets(resiliparse)
    victim = members[10]                         # a record in the middle
    damaged = bytearray(resiliparse)
    damaged[victim + 30:victim + 200] = os.urandom(170)
    path = tmp_path / "damaged.warc.gz"
    path.write_bytes(bytes(damaged))
    outcomes = list(read_file(str(path)))
    errors = [o for o in outcomes if isinstance(o, ReadError)]
    assert [e.offset for e in errors] == [victim]
    assert len(outcomes) == 50                   # 49 good records + 1 error: nothing else lost
    assert errors[0].reason in (ErrorReason.BAD_GZIP, ErrorReason.BAD_WARC_HEADER, ErrorReason.TRUNCATED_RECORD)


@pytest.mark.parametrize("framing", ["members", "plain"])
def test_response_without_target_uri_is_one_error(resiliparse, tmp_path, framing):
    # WARC-Target-URI is mandatory on a response; warcio's HTTP parser fails on its absence with an
    # AttributeError, which once ended the whole run
    members = member_offsets(resiliparse)
    records = [gzip.decompress(resiliparse[a:b]) for a, b in zip(members, members[1:] + [len(resiliparse)])]
    victim = next(i for i, r in enumerate(records) if b"WARC-Type: response" in r[:200])
    header, _, rest = records[victim].partition(b"\r\n\r\n")
    lines = header.split(b"\r\n")
    records[victim] = b"\r\n".join(x for x in lines if not x.startswith(b"WARC-Target-URI")) + b"\r\n\r\n" + rest
    assert records[victim] != gzip.decompress(resiliparse[members[victim]:members[victim + 1]])
    chunks = [gzip.compress(r) if framing == "members" else r for r in records]
    path = tmp_path / "no-uri.warc"
    path.write_bytes(b"".join(chunks))
    outcomes = list(read_file(str(path)))
    errors = [o for o in outcomes if isinstance(o, ReadError)]
    assert len(errors) == 1 and errors[0].reason == ErrorReason.BAD_WARC_HEADER
    assert errors[0].offset == sum(len(c) for c in chunks[:victim]) and "AttributeError" in errors[0].detail
    assert len(outcomes) == 50 and summary(outcomes)["page"] == 15


@pytest.mark.parametrize("length", [b"banana", b"-50", b""])
def test_a_length_that_is_not_a_number_is_one_error(resiliparse, tmp_path, length):
    """warcio takes it as 0 and reads the block as the next record: the record was counted as a skip and again
    as an error, so 50 records made 51 outcomes."""
    members = member_offsets(resiliparse)
    records = [gzip.decompress(resiliparse[a:b]) for a, b in zip(members, members[1:] + [len(resiliparse)])]
    victim = next(i for i, r in enumerate(records) if i > 2 and b"WARC-Type: metadata" in r[:200])
    records[victim] = re.sub(rb"Content-Length: \d+", b"Content-Length: " + length, records[victim], count=1)
    path = tmp_path / "bad-length.warc"
    path.write_bytes(b"".join(records))
    outcomes = list(read_file(str(path)))
    errors = [o for o in outcomes if isinstance(o, ReadError)]
    assert len(outcomes) == 50 and len(errors) == 1
    assert errors[0].offset == sum(len(r) for r in records[:victim]) and "Content-Length" in errors[0].detail


def test_file_cut_mid_record_keeps_records_before(resiliparse, tmp_path):
    members = member_offsets(resiliparse)
    path = tmp_path / "cut.warc.gz"
    path.write_bytes(resiliparse[:(members[30] + members[31]) // 2])
    outcomes = list(read_file(str(path)))
    assert len(outcomes) == 31
    assert isinstance(outcomes[-1], ReadError) and outcomes[-1].offset == members[30]
    assert not any(isinstance(o, ReadError) for o in outcomes[:-1])


def test_not_a_warc_is_an_error_not_a_crash(data, tmp_path):
    path = tmp_path / "notes.warc"
    path.write_bytes((data / "text/wikitext-2-raw-v1.test.txt").read_bytes()[:100_000])
    outcomes = list(read_file(str(path)))
    assert len(outcomes) == 1 and outcomes[0].reason == ErrorReason.BAD_WARC_HEADER


@pytest.mark.parametrize("framing", ["plain", "gzip"])
def test_uncompressed_and_whole_file_gzip(resiliparse, tmp_path, framing):
    plain = b"".join(gzip.decompress(resiliparse[a:b]) for a, b in
                     zip(member_offsets(resiliparse), member_offsets(resiliparse)[1:] + [len(resiliparse)]))
    data = plain if framing == "plain" else gzip.compress(plain)
    assert detect_mode(data[:1 << 16]) == framing
    path = tmp_path / f"file.{framing}"
    path.write_bytes(data)
    assert summary(read_file(str(path))) == {Skip.WARCINFO: 1, Skip.REQUEST: 17, "page": 16, Skip.METADATA: 16}


def test_garbage_inside_plain_warc_is_skipped_over(resiliparse, tmp_path):
    members = member_offsets(resiliparse)
    records = [gzip.decompress(resiliparse[a:b]) for a, b in zip(members, members[1:] + [len(resiliparse)])]
    records[5] = b"this is not a WARC record at all\r\n" * 10
    path = tmp_path / "garbage.warc"
    path.write_bytes(b"".join(records))
    counts = summary(read_file(str(path)))
    assert counts[ErrorReason.BAD_WARC_HEADER] == 1
    assert sum(counts.values()) == 50


def test_body_cap(data):
    cfg = ReadConfig(max_body_bytes=20_000)
    counts = summary(read_file(str(data / "warc/commoncrawl/cc-main-2020-34_resiliparse-warcfile.warc.gz"), cfg))
    assert counts[Skip.BODY_TOO_LARGE] > 0
    assert counts[Skip.BODY_TOO_LARGE] + counts["page"] == 16


def test_page_fields(data):
    page = next(o for o in read_file(str(data / "warc/commoncrawl/cc-main-2024-22_whirlwind.warc.gz"))
                if isinstance(o, Page))
    assert page.url == "https://an.wikipedia.org/wiki/Escopete"
    assert page.crawl_date.startswith("2024-")
    assert page.body.lstrip().lower().startswith(b"<!doctype html")
    assert len(page.record_id) == 36


@pytest.mark.parametrize("bad", [dict(max_body_bytes=0), dict(split_bytes=10)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        ReadConfig(**bad)


def test_chunk_mode_validation():
    with pytest.raises(ValueError, match="mode"):
        Chunk("x", 0, 1, "zip")
