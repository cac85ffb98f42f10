"""The items that flow through the curation pipeline, as plain dicts (cheap for Beam's coders).

Every item has a `kind`:
- `doc`: a live document; stages add fields (`text`, `title`, ...) and append `(stage, chars_in, chars_out)`
  to `trace`.
- `dropped`: a document a stage removed, with `stage` and `reason` (its text only if rejected documents are
  written); later stages pass it through untouched so the writer can count it.
- `error`: a record or document that could not be processed, with `stage`, `reason`, `detail` and offset.
- `tally`: one per read chunk, the reader's own count of what it read (`pages`, `errors`, `skipped`), with
  the chunk's byte range (`chunk`, `end`) and the file's `size`.

Every item carries `chunk`, the start of the byte range it was read from: items are staged chunk by chunk
(`pipeline/staging.py`).

The writer checks, per input file, that the tallies and the items that reached it add up.
"""
from __future__ import annotations

from pipeline.warc import Page, ReadError

DOC, DROPPED, ERROR, TALLY = "doc", "dropped", "error", "tally"
_IDENTITY = ("id", "url", "warc_file", "warc_record_id", "warc_offset", "crawl_date", "chunk")


def new_doc(page: Page, path: str, chunk: int = 0) -> dict:
    return {"kind": DOC, "id": page.record_id, "url": page.url, "warc_file": path, "chunk": chunk,
            "warc_record_id": page.record_id, "warc_offset": page.offset, "crawl_date": page.crawl_date,
            "html": page.body, "content_type": page.content_type, "content_language": page.content_language,
            "trace": []}


def dropped(doc: dict, stage: str, reason: str, keep_text: bool = False) -> dict:
    item = {key: doc[key] for key in _IDENTITY if key in doc}
    item.update(kind=DROPPED, stage=stage, reason=reason, trace=doc["trace"])
    if keep_text and "text" in doc:
        item["text"] = doc["text"]
    return item


def error(path: str, offset: int, stage: str, reason: str, detail: str, doc: dict | None = None,
          chunk: int = 0) -> dict:
    item = {key: doc[key] for key in _IDENTITY if key in doc} if doc else \
        {"warc_file": path, "warc_offset": offset, "chunk": chunk}
    item.update(kind=ERROR, stage=stage, reason=reason, detail=detail)
    return item


def read_error(err: ReadError, chunk: int = 0) -> dict:
    return error(err.path, err.offset, "read", err.reason.value, err.detail, chunk=chunk)


def tally(path: str, start: int, pages: int, errors: int, skipped: dict[str, int], end: int = 0,
          size: int = 0) -> dict:
    return {"kind": TALLY, "warc_file": path, "chunk": start, "end": end, "size": size, "pages": pages,
            "errors": errors, "skipped": dict(skipped)}
