"""The one shape of a document check, and what a check returns when it does more than pass or fail.

Every check in `filters/` has the signature

    check(text, cfg, *, language=None, resources=None) -> Reason | Verdict | None

`text` is what the check reads (the document's text; the URL for the URL filter), `cfg` its frozen config,
`language` the document's language code if language ID ran, and `resources` what the pipeline loaded once per
worker for it (word lists, a fastText model, a benchmark index). A check that only decides returns a member of
its `Reason` enum (drop) or None (keep). A check that also rewrites the text or annotates the document returns a
`Verdict`. The pipeline wraps every check the same way (`pipeline.stage.ApplyFilter`), so the function a test
calls is the function the pipeline runs.
"""
from __future__ import annotations

import enum
from types import MappingProxyType
from typing import Mapping, NamedTuple

_EMPTY: Mapping = MappingProxyType({})


class Verdict(NamedTuple):
    text: str | None = None              # the document's new text; None leaves it as it is
    reason: enum.Enum | None = None      # why the document is dropped; None keeps it
    fields: Mapping[str, object] = _EMPTY    # metadata set on the document (kept or dropped): scores, counts
    notes: Mapping[str, int] = _EMPTY        # named counts for the stage's counters (e.g. redactions by type)
