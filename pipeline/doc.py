"""The items that flow through the curation pipeline, as plain dicts (cheap for Beam's coders).

Every item has a `kind`:
- `doc`: a live document; stages add fields (`text`, `title`, ...) and append `(stage, chars_in, chars_out)`
  to `trace`.
- `dropped`: a document a stage removed, with `stage` and `reason` (its text only if rejected documents are
  written); later stages pass it through untouched so the writer can count it.
- `error`: a record or document that could not be processed, with `stage`, `reason`, `detail` and offset.
- `tally`: one per read chunk, the reader's own count of what it read (`pages`, `errors`, `skipped`).

The writer checks, per input file, that the tallies and the items that reached it add up.
"""
from __future__ import annotations

from pipeline.warc import Page, ReadError

DOC, DROPPED, ERROR, TALLY = "doc", "dropped", "error", "tally"
_IDENTITY = ("id", "url", "warc_file", "warc_record_id", "warc_offset", "crawl_date")


def new_doc(page: Page, path: str) -> dict:
    return {"kind": DOC, "id": page.record_id, "url": page.url, "warc_file": path,
            "warc_record_id": page.record_id, "warc_offset": page.offset, "crawl_date": page.crawl_date,
            "html": page.body, "content_type": page.content_type, "content_language": page.content_language,
            "trace": []}


def dropped(doc: dict, stage: str, reason: str, keep_text: bool = False) -> dict:
    item = {key: doc[key] for key in _IDENTITY}
    item.update(kind=DROPPED, stage=stage, reason=reason, trace=doc["trace"])
    if keep_text and "text" in doc:
        item["text"] = doc["text"]
    return item


def error(path: str, offset: int, stage: str, reason: str, detail: str, doc: dict | None = None) -> dict:
    item = {key: doc[key] for key in _IDENTITY} if doc else {"warc_file": path, "warc_offset": offset}
    item.update(kind=ERROR, stage=stage, reason=reason, detail=detail)
    return item


def read_error(err: ReadError) -> dict:
    return error(err.path, err.offset, "read", err.reason.value, err.detail)


def tally(path: str, start: int, pages: int, errors: int, skipped: dict[str, int]) -> dict:
    return {"kind": TALLY, "warc_file": path, "chunk_start": start, "pages": pages, "errors": errors,
            "skipped": dict(skipped)}
