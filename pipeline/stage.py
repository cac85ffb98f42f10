"""The stage protocol: every keep, drop and rewrite of a document goes through a `Ledger`.

A curation stage is a `Stage` (a composite `PTransform` with a `name`) over one PCollection of items
(`pipeline/doc.py`). It works on live documents and passes dropped, error and tally items through, so the
writer sees every record that came in. Whatever a stage decides about a document, it says through its ledger:

- `ledger.keep(doc)` / `ledger.rewrite(doc, text)`: the Beam counter `<stage>/kept` and the trace entry
  `(stage, chars in, chars out)` that the funnel sums;
- `ledger.drop(doc, reason)`: the counter `<stage>/dropped/<reason>`, the trace entry, and the `dropped` item
  the writer counts in `stats.json` and writes under `rejected/<stage>/` (with its text, if rejected documents
  are written); `reason` must be a member of a `Reason` enum;
- `ledger.error(doc, reason, detail)`: the counter `<stage>/error/<reason>` and an `error` item;
- `ledger.note(name, n)`: a count that is not a decision (redactions by type, domain labels), `<stage>/<name>`.

No stage touches a counter or a trace by hand. The counter function is injected (`count=`), so the protocol
is tested without Beam. `ApplyFilter` wraps any check of `filters/` (one signature, `filters/verdict.py`);
stages that decide over all documents at once (dedup, the top fraction by quality, mix sampling) keep their
own Beam plumbing but decide through a ledger all the same.
"""
from __future__ import annotations

import enum
import os
from typing import Callable

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder
from apache_beam.metrics import Metrics

from filters.verdict import Verdict
from pipeline import doc as items

NAMESPACE = "refinery"
KEPT, DROPPED, ERROR = "kept", "dropped", "error"
SHUFFLE_BYTES = "REFINERY_SHUFFLE_BYTES"      # =1: count what goes into each shuffle (bench/bench_shuffle.py)


def beam_counter(stage: str) -> Callable[[str, int], None]:
    """`count(name, n)` incrementing the Beam counter `<stage>/<name>` (created on first use)."""
    counters = {}

    def count(name: str, n: int = 1) -> None:
        counter = counters.get(name)
        if counter is None:
            counter = counters[name] = Metrics.counter(NAMESPACE, f"{stage}/{name}")
        counter.inc(n)
    return count


class Ledger:
    """The books of one stage (see the module docstring)."""

    def __init__(self, stage: str, keep_rejected: bool = False, count: Callable[[str, int], None] | None = None):
        self.stage, self.keep_rejected = stage, keep_rejected
        self.count = count or beam_counter(stage)

    def keep(self, doc: dict, chars_in: int | None = None) -> dict:
        """`doc` goes on. `chars_in`: the size of what the stage read, if not the text (extraction: the HTML)."""
        chars_out = len(doc.get("text", ""))
        doc["trace"].append((self.stage, chars_out if chars_in is None else chars_in, chars_out))
        self.count(KEPT, 1)
        return doc

    def rewrite(self, doc: dict, text: str) -> dict:
        """`doc` goes on with `text` in place of its text."""
        chars_in = len(doc["text"])
        doc["text"] = text
        return self.keep(doc, chars_in)

    def drop(self, doc: dict, reason: enum.Enum, chars_in: int | None = None, duplicate_of: int | None = None) -> dict:
        """The `dropped` item for `doc`. `duplicate_of`: dedup's node id of the document that stayed."""
        if not isinstance(reason, enum.Enum):
            raise TypeError(f"stage {self.stage}: a drop reason must be a Reason enum member, got {reason!r}")
        doc["trace"].append((self.stage, len(doc.get("text", "")) if chars_in is None else chars_in, 0))
        self.count(f"{DROPPED}/{reason.value}", 1)
        item = items.dropped(doc, self.stage, reason.value, self.keep_rejected)
        if duplicate_of is not None:
            item["duplicate_of"] = duplicate_of
        return item

    def error(self, doc: dict, reason: enum.Enum, detail: str) -> dict:
        """The `error` item for a document the stage could not process (its file, offset and detail kept)."""
        self.count(f"{ERROR}/{reason.value}", 1)
        return items.error(doc["warc_file"], doc["warc_offset"], self.stage, reason.value, detail, doc)

    def note(self, name: str, n: int = 1) -> None:
        """A count that is not a decision about a document."""
        if name == KEPT or name.startswith((f"{DROPPED}/", f"{ERROR}/")):
            raise ValueError(f"stage {self.stage}: note name {name!r} is reserved for decisions")
        if n:
            self.count(name, n)

    def apply(self, doc: dict, result, record_keep: bool = True) -> dict:
        """Record what a check of `filters/` returned: None (keep), a Reason (drop) or a Verdict."""
        text, reason = None, result
        if isinstance(result, Verdict):
            doc.update(result.fields)
            for name, n in result.notes.items():
                self.note(name, n)
            text, reason = result.text, result.reason
        elif result is not None and not isinstance(result, enum.Enum):
            raise TypeError(f"stage {self.stage}: a check must return None, a Reason or a Verdict, got {result!r}")
        if reason is not None:
            return self.drop(doc, reason)
        if text is not None and text != doc["text"]:
            if record_keep:
                return self.rewrite(doc, text)
            doc["text"] = text
        return self.keep(doc) if record_keep else doc


class Stage(beam.PTransform):
    """A named curation stage: items in, items out. `name` labels it in the graph, the funnel, the counters and
    `rejected/<name>/`; the config's `stages` list turns it on. `always`: runs whatever the list says.
    `needs_every_input`: decides over all documents at once, so a rerun must read complete inputs again."""
    name: str = ""
    always = False
    needs_every_input = False
    keep_rejected = False

    def keeping_rejected(self, keep: bool) -> "Stage":
        """This stage, with dropped documents keeping their text (for `rejected/`) when `keep`."""
        self.keep_rejected = keep
        return self


class DocDoFn(beam.DoFn):
    """Passes non-live items through; subclasses handle live documents in `process_doc`."""

    def process(self, item, *side):
        if item["kind"] != items.DOC:
            yield item
            return
        yield from self.process_doc(item, *side)

    def process_doc(self, doc, *side):
        raise NotImplementedError


class ApplyFilterDoFn(DocDoFn):
    def __init__(self, name: str, check: Callable, cfg, field: str, load: Callable | None, keep_rejected: bool,
                 record_keep: bool):
        self.name, self.check, self.cfg, self.field, self.load = name, check, cfg, field, load
        self.keep_rejected, self.record_keep = keep_rejected, record_keep

    def setup(self):
        self.ledger = Ledger(self.name, self.keep_rejected)
        self.resources = self.load() if self.load is not None else None     # word lists, models: once per worker

    def process_doc(self, doc):
        result = self.check(doc[self.field], self.cfg, language=doc.get("language"), resources=self.resources)
        yield self.ledger.apply(doc, result, self.record_keep)


class ApplyFilter(Stage):
    """Wraps a check of `filters/`: `check(doc[field], cfg, language=doc's language, resources=load())`.

    `load` runs once per worker (in `DoFn.setup`); if it has a `check()` method, that runs when the graph is
    built, so a missing word list or model fails before the job starts. `record_keep=False` leaves the keep
    to a later step of the same stage (the quality stage's top fraction)."""

    def __init__(self, name: str, check: Callable, cfg, *, field: str = "text", load: Callable | None = None,
                 record_keep: bool = True):
        super().__init__()
        self.name, self.check, self.cfg, self.field, self.load = name, check, cfg, field, load
        self.record_keep = record_keep

    def expand(self, pcoll):
        if hasattr(self.load, "check"):
            self.load.check()
        return pcoll | "Check" >> beam.ParDo(ApplyFilterDoFn(self.name, self.check, self.cfg, self.field, self.load,
                                                             self.keep_rejected, self.record_keep))


class _SplitLiveDoFn(beam.DoFn):
    OTHER = "other"

    def process(self, item):
        if item["kind"] == items.DOC:
            yield item
        else:
            yield beam.pvalue.TaggedOutput(self.OTHER, item)


class OnLiveDocs(Stage):
    """A stage that groups documents (dedup): `decide(docs)` sees only the live documents and returns items;
    everything else goes around it and is merged back."""

    def decide(self, docs):
        raise NotImplementedError

    def expand(self, pcoll):
        split = pcoll | "Live" >> beam.ParDo(_SplitLiveDoFn()).with_outputs(_SplitLiveDoFn.OTHER, main="docs")
        decided = self.decide(split.docs)
        return (split[_SplitLiveDoFn.OTHER], decided) | "Merge" >> beam.Flatten()


class _CountBytesDoFn(beam.DoFn):
    def __init__(self, name: str):
        self.name = name

    def setup(self):
        self.coder, self.count = FastPrimitivesCoder(), beam_counter("shuffle")

    def process(self, element):
        self.count(f"{self.name}/bytes", len(self.coder.encode(element)))
        self.count(f"{self.name}/elements", 1)
        yield element


class Measured(beam.PTransform):
    """Put in front of a shuffle: with REFINERY_SHUFFLE_BYTES=1 in the environment when the graph is built,
    counts the elements going in and their size under Beam's FastPrimitivesCoder (the Beam counters
    `shuffle/<name>/bytes` and `.../elements`); otherwise it adds nothing to the graph."""

    def __init__(self, name: str):
        super().__init__(label=f"Measure[{name}]")
        self.name = name

    def expand(self, pcoll):
        if os.environ.get(SHUFFLE_BYTES) != "1":
            return pcoll
        return pcoll | "CountBytes" >> beam.ParDo(_CountBytesDoFn(self.name))
