"""The curation job: WARC files → curated dataset, on any Beam runner.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
```
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from filters import c4, decontam, fineweb, gopher, language, nsfw, pii, repetition, url
from pipeline import resources
from pipeline.config import ConfigError, CurateConfig, to_dict
from pipeline.dataset import (PROGRESS_DIR, WriteDataset, completed_inputs, join, listed, progress_markers, remove,
                              shard_name, total_funnel, write_atomic)
from pipeline.dedup import DecideByKeys, Dedup, ExactDedup, KeyDedup, LineDedup, MinHashDedup, UrlDedup, key_spec
from pipeline.extract import ExtractText
from pipeline.mix import Mix, mix_report
from pipeline.quality import QualityScore
from pipeline.read import PlanChunks, ReadChunkDoFn, file_size
from pipeline.runner import quiet_workers, runner_options
from pipeline.stage import NAMESPACE, ApplyFilter, Stage
from pipeline.staging import WORK_DIR, ResumeDoFn, StageChunks, clean_work, staged_file, work_dir
from training.artifacts import (
    LOCK,
    MANIFEST,
    ArtifactError,
    FolderLock,
    problems,
    read_manifest,
    refuse_own_input,
    remove_files,
    write_manifest,
)

log = logging.getLogger(__name__)


def recipe(cfg: CurateConfig, output_dir: str = "") -> list[Stage]:
    """Every curation stage, one line each, in pipeline order (cheapest first). A stage runs when the config's
    `stages` list names it (extraction always runs); this list alone fixes the order, of the graph and of the
    funnel. Constructing a stage loads nothing: resources are checked when the graph is built."""
    return [
        ApplyFilter("url", url.check_url, cfg.url, field="url", load=resources.UrlLists(cfg.url)),
        ExtractText(cfg.extract),
        ApplyFilter("language", language.identify_language, cfg.language, load=resources.LanguageModel(cfg.language)),
        ApplyFilter("gopher_repetition", gopher.check_gopher_repetition, cfg.gopher_repetition),
        ApplyFilter("gopher_quality", gopher.check_gopher_quality, cfg.gopher_quality, load=resources.StopWords()),
        ApplyFilter("c4", c4.clean_c4, cfg.c4),
        ApplyFilter("fineweb", fineweb.check_fineweb, cfg.fineweb),
        ApplyFilter("repetition", repetition.check_repetition, cfg.repetition),
        ApplyFilter("nsfw", nsfw.check_nsfw, cfg.nsfw, load=resources.BadWords(cfg.nsfw)),
        ApplyFilter("pii", pii.redact_pii, cfg.pii),
        UrlDedup(),
        ExactDedup(),
        MinHashDedup(cfg.dedup),
        LineDedup(cfg.dedup),
        ApplyFilter("decontam", decontam.check_contamination, cfg.decontam, load=resources.Benchmarks(cfg.decontam)),
        QualityScore(cfg.quality),
        Mix(cfg.mix, output_dir),
    ]


def stage_names(cfg: CurateConfig = CurateConfig()) -> list[str]:
    """Every stage's name, in pipeline order."""
    return [stage.name for stage in recipe(cfg)]


def active_stages(cfg: CurateConfig, output_dir: str = "") -> list[Stage]:
    """The stages this config runs, in pipeline order; an unknown name in `stages` is a ConfigError."""
    every = recipe(cfg, output_dir)
    unknown = sorted(set(cfg.stages) - {stage.name for stage in every})
    if unknown:
        raise ConfigError(f"stages: unknown stage(s) {', '.join(unknown)}; the stages are "
                          f"{', '.join(stage.name for stage in every)}")
    return [stage for stage in every if stage.always or stage.name in cfg.stages]


def dedup_stages(cfg: CurateConfig = CurateConfig()) -> list[str]:
    """The names of the dedup stages (what --no-dedup leaves out)."""
    return [stage.name for stage in recipe(cfg) if isinstance(stage, Dedup)]


def expand_inputs(specs: list[str]) -> list[str]:
    """Globs (local, gs://, s3://) and URLs → sorted unique paths; a glob that matches nothing is an error."""
    paths = []
    for spec in specs:
        for pattern in filter(None, (s.strip() for s in spec.split(","))):
            if pattern.startswith(("http://", "https://")):
                paths.append(pattern)
                continue
            if "://" not in pattern and Path(pattern).is_file():    # as named, even `crawl[1].warc.gz`
                paths.append(pattern)
                continue
            matches = FileSystems.match([pattern])[0].metadata_list
            if not matches:
                raise FileNotFoundError(f"no input file matches {pattern!r}")
            for match in matches:
                if "://" not in match.path and Path(match.path).is_dir():
                    raise FileNotFoundError(f"{match.path}: a folder; give WARC files or a glob such as "
                                            f"'{match.path.rstrip('/')}/*.warc.gz'")
            paths.extend(m.path for m in matches)
    if specs and not paths:
        raise FileNotFoundError(f"--input {','.join(specs)!r} names no file")
    return sorted(set(paths))


def config_sha(cfg: CurateConfig) -> str:
    """Fingerprint of everything that decides the output: a rerun only skips inputs written under the same."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def needs_every_input(cfg: CurateConfig) -> bool:
    """Whether a stage decides over all documents at once (dedup, a quality top fraction, mix sampling)."""
    return any(stage.needs_every_input for stage in active_stages(cfg))


def split_at_staging(stages: list[Stage]) -> tuple[list[Stage], list[KeyDedup], list[Stage]]:
    """The stages before staging (those that look at one document at a time, up to the first that decides over
    all documents), the key dedup stages that come next, and the rest."""
    at = next((i for i, stage in enumerate(stages) if stage.needs_every_input), len(stages))
    keyed = list(itertools.takewhile(lambda stage: isinstance(stage, KeyDedup), stages[at:]))
    return stages[:at], keyed, stages[at + len(keyed):]


def build(pipeline: beam.Pipeline, paths: list[str], cfg: CurateConfig, output_dir: str,
          written: frozenset[str] = frozenset()):
    """The curation graph on `pipeline`: plan chunks, read those not staged by an earlier run, the per-document
    stages, stage every chunk (`pipeline/staging.py`), the key dedup stages over staged keys with their verdicts
    applied chunk by chunk, the remaining stages, write. Returns the per-file progress markers. `written`:
    inputs read again only for the stages that need every input (their outputs are complete and stay)."""
    keep_rejected = cfg.output.write_rejected
    before, keyed, after = split_at_staging(active_stages(cfg, output_dir))
    work = work_dir(output_dir, config_sha(cfg))
    planned = (pipeline
               | "PlanChunks" >> PlanChunks(paths, cfg.read)
               | "Resume" >> beam.ParDo(ResumeDoFn(work)).with_outputs(ResumeDoFn.STAGED, main="fresh"))
    docs = planned.fresh | "ReadChunks" >> beam.ParDo(ReadChunkDoFn(cfg.read))
    for stage in before:
        docs = docs | stage.name >> stage.keeping_rejected(keep_rejected)
    staged = docs | "StageChunks" >> StageChunks(work, key_spec(keyed))
    docs = ((staged, planned[ResumeDoFn.STAGED])
            | "StagedChunks" >> beam.Flatten()
            | "Dedup" >> DecideByKeys([stage.keeping_rejected(keep_rejected) for stage in keyed], work, keep_rejected))
    for stage in after:
        docs = docs | stage.name >> stage.keeping_rejected(keep_rejected)
    return docs | "WriteDataset" >> WriteDataset(output_dir, keep_rejected, cfg.output.write_errors,
                                                 config_sha(cfg), skip=written)


@dataclass
class CurateResult:
    funnel: dict
    inputs: int
    skipped_complete: int
    wall_s: float
    counters: dict = field(default_factory=dict)     # this run's Beam counters, `<stage>/<name>` → value


class _Progress(threading.Thread):
    """Prints, while the pipeline runs (with any runner), the bytes and records read so far with rate and ETA
    (from the markers of staged chunks, so inside a large file too), then the input files written."""

    def __init__(self, output_dir: str, work: str, paths: list[str], done_before: int, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.output_dir, self.work, self.paths, self.before = output_dir, work, paths, done_before
        self.every_s = every_s
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.seen: dict[str, tuple[int, int]] = {}      # staged marker → (bytes, records); markers never change

    def total_bytes(self) -> int | None:
        try:
            return sum(file_size(path) for path in self.paths)
        except Exception:      # a remote size we cannot ask for: progress without a percentage
            return None

    def read_so_far(self) -> tuple[int, int, int]:
        for path in listed(self.work, "*.json"):
            if path not in self.seen:
                with FileSystems.open(path) as fh:
                    marker = json.loads(fh.read())
                end = min(marker["end"], marker["size"]) if marker["size"] else marker["end"]
                self.seen[path] = (max(0, end - marker["chunk"]), marker["records"])
        return len(self.seen), sum(b for b, _ in self.seen.values()), sum(r for _, r in self.seen.values())

    def run(self):
        total = self.total_bytes()
        base, last = None, None
        while not self.stop.wait(self.every_s):
            try:
                chunks, done, records = self.read_so_far()
                written = len(listed(join(self.output_dir, PROGRESS_DIR), "*.json"))
            except Exception:
                continue
            if base is None:
                base = done              # chunks staged by an interrupted run count as done, not as speed
            elapsed = time.monotonic() - self.started
            if written > self.before:
                line = (f"[curate] {written - self.before}/{len(self.paths) - self.before} input files written "
                        f"({elapsed:.0f} s)")
            elif total and done >= total:
                line = f"[curate] all {chunks:,} chunks read ({records:,} records); deduplicating and writing"
            elif done == base:
                continue                 # nothing new read yet
            else:
                rate = (done - base) / elapsed
                share = f" ({100 * done / total:.0f} %)" if total else ""
                eta = f", ETA {(total - done) / rate:.0f} s" if total else ""
                line = (f"[curate] read {done / 1e6:,.1f}{f'/{total / 1e6:,.1f}' if total else ''} MB{share}: "
                        f"{chunks:,} chunks, {records:,} records, {rate / 1e6:.2f} MB/s{eta}")
            if line != last:
                print(line, flush=True)
                last = line


def curate(paths: list[str], output_dir: str, cfg: CurateConfig, beam_args: list[str] = (),
           progress: bool = True) -> CurateResult:
    """Run the job over `paths`, skipping inputs already complete in `output_dir`; write stats.json and (for a
    local output) manifest.json over every file the dataset holds."""
    started = time.monotonic()
    local = "://" not in output_dir
    if local:
        refuse_own_input(output_dir, paths)
        check_dataset_folder(Path(output_dir))
    with FolderLock(output_dir) if local else contextlib.nullcontext():
        return _curate(paths, output_dir, cfg, beam_args, progress, started, local)


CURATE_FILES = ("stats.json", "mix_plan.json", "mix.json", "mix.png")     # beside data/, named by curation


def check_dataset_folder(out: Path) -> None:
    """A local output folder must be new, empty, or a curated dataset (rerun into it to resume or extend)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ArtifactError(f"{out}: a file is there, expected a folder for the dataset")
    staged = (out / WORK_DIR).is_dir() and any(staged_file(p.relative_to(out / WORK_DIR).as_posix())
                                               for p in (out / WORK_DIR).glob("*/*"))
    ours = curation_stats(out) or bool(progress_markers(str(out))) or staged or \
        ((out / MANIFEST).is_file() and read_manifest(out).get("kind") == "dataset")
    if any(p.name != LOCK for p in out.iterdir()) and not ours:
        raise ArtifactError(f"{out}: not empty and not a curated dataset (no stats.json, {PROGRESS_DIR}/ or "
                            f"dataset {MANIFEST}); nothing there is touched: choose an empty or new folder")


def curation_stats(out: Path) -> bool:
    """Whether OUT/stats.json is one curation wrote (a user's file of that name is not)."""
    try:
        stats = json.loads((out / "stats.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(stats, dict) and all(key in stats for key in ("records_in", "kept", "shards", "config"))


def remove_dataset(out: Path) -> None:
    """Take back what curation wrote in the local folder OUT so it is curated again from scratch (`refinery run`
    without --resume): the files its dataset manifest lists, each input's outputs and progress marker, the
    staged work. Anything else there stays, and folders this leaves empty go."""
    if not out.exists():
        return
    check_dataset_folder(out)
    with FolderLock(out):                   # not while another process curates into it
        outputs = [f for marker_file, marker in progress_markers(str(out)).items()
                   for f in (*marker["outputs"], marker_file)]
        files = [*outputs, *(["stats.json"] if curation_stats(out) else [])]
        if (out / MANIFEST).is_file() and read_manifest(out).get("kind") == "dataset":
            manifest = read_manifest(out)
            # beside the shards: a card or plot changed since it was written (edited by hand) is not ours to remove
            others = sorted(set(manifest["files"]) - set(outputs))
            changed = [line for line in problems(out, manifest, others) if not line.endswith(": missing")]
            if changed:
                raise ArtifactError(f"{changed[0]}: changed since it was written; move it away before curating "
                                    f"{out} again from scratch")
            files += [*manifest["files"], MANIFEST]
        clean_work(str(out), keep=None)
        remove_files(out, files)
        # an empty dataset, so that curation takes the folder back even with files of yours left in it
        write_manifest(out, "dataset", [])


def write_dataset_manifest(out: Path, config: dict, written: tuple[str, ...] = ()) -> None:
    """OUT/manifest.json (kind dataset) over what curation (and `refinery publish`) wrote there: each input's
    outputs and progress marker, the files beside them curation names, `written` (publish's card, plot and
    per-domain files) and what an earlier manifest listed. Never a file someone else put there, which a later
    run from scratch (remove_dataset) would then remove."""
    files = set(written) | set(CURATE_FILES)
    if (out / MANIFEST).is_file() and read_manifest(out).get("kind") == "dataset":
        files |= set(read_manifest(out)["files"])
    for marker_file, marker in progress_markers(str(out)).items():
        files |= {marker_file, *marker["outputs"]}
    root = out.resolve()
    write_manifest(out, "dataset", sorted(f for f in files if isinstance(f, str) and (out / f).is_file()
                                          and (out / f).resolve().is_relative_to(root)), config=config)


def _curate(paths: list[str], output_dir: str, cfg: CurateConfig, beam_args, progress: bool, started: float,
            local: bool) -> CurateResult:
    sha = config_sha(cfg)
    counters = {}
    existing = completed_inputs(output_dir) if FileSystems.exists(output_dir) else {}
    done = {p: m for p, m in existing.items() if m.get("config_sha") == sha}
    todo = [p for p in paths if p not in done]
    stale = [p for p in todo if p in existing]
    if stale:    # written under another config: remove what they wrote, so no old shard outlives its input
        print(f"[curate] {len(stale)} input files were written under another config: redoing them", flush=True)
        for path in stale:
            old = [join(output_dir, out) for out in existing[path]["outputs"]]
            old.append(join(output_dir, PROGRESS_DIR, f"{shard_name(path)}.json"))
            remove([p for p in old if FileSystems.exists(p)])
    clean_work(output_dir, keep=sha)    # other configs' staged chunks, and parts no marker vouches for
    if done:
        print(f"[curate] {len(paths) - len(todo)} of {len(paths)} input files already complete in "
              f"{output_dir}: skipped", flush=True)
    read, written = todo, frozenset()
    if todo and done and needs_every_input(cfg):
        # dedup (and a top fraction or a mix plan) decide over all documents: the complete inputs are read again
        # so the rest is decided against them too (same inputs, same config: the same verdicts), but their
        # outputs are not rewritten
        read, written = [p for p in paths], frozenset(p for p in paths if p in done)
        print(f"[curate] {', '.join(s.name for s in active_stages(cfg) if s.needs_every_input)} need every "
              f"input: re-reading the {len(written)} complete ones without rewriting them", flush=True)
    if todo:
        print(f"[curate] {len(todo)} input files -> {output_dir}", flush=True)
        reporter = _Progress(output_dir, work_dir(output_dir, sha), read, len(done)) if progress else None
        if reporter:
            reporter.start()
        try:
            pipeline = beam.Pipeline(options=runner_options(list(beam_args)))
            build(pipeline, read, cfg, output_dir, written)
            with quiet_workers():
                result = pipeline.run()
                result.wait_until_finish()
            counters = beam_counters(result)
        finally:
            if reporter:
                reporter.stop.set()
        if counters.get("read/chunks_resumed"):
            print(f"[curate] {counters['read/chunks_resumed']:,} chunks ({counters['read/records_resumed']:,} records) "
                  f"staged by an interrupted run were not read again", flush=True)
    markers = completed_inputs(output_dir, sha)
    missing = [p for p in paths if p not in markers]
    if missing:
        raise RuntimeError(f"{len(missing)} input files have no complete output, e.g. {missing[0]}")
    funnel = total_funnel([markers[p] for p in paths])
    wall_s = time.monotonic() - started
    stats = {**funnel, "stages": [stage.name for stage in active_stages(cfg)], "inputs": len(paths), "inputs_skipped_as_complete": len(paths) - len(todo),
             "wall_s": round(wall_s, 2), "config": to_dict(cfg),
             "shards": {shard_name(p): p for p in paths}}
    if "mix" in cfg.stages and cfg.mix.weights and "://" not in output_dir and todo:
        stats["mix"] = mix_report(output_dir)["domains"]
    if counters.get("read/http_retries"):          # throttled or broken http(s) reads, each resumed (remote.py)
        stats["http_retries"] = counters["read/http_retries"]
        print(f"[curate] http(s) reads were retried {counters['read/http_retries']:,} times (throttling or broken "
              f"downloads; each resumed where it stopped)", flush=True)
    write_atomic(join(output_dir, "stats.json"), json.dumps(stats, indent=1).encode())
    clean_work(output_dir, keep=None)   # every input is complete: what was staged for a rerun is not needed
    if local:
        write_dataset_manifest(Path(output_dir), to_dict(cfg))
    return CurateResult(funnel, len(paths), len(paths) - len(todo), wall_s, counters)


def beam_counters(result) -> dict[str, int]:
    """The run's `refinery` counters, `<stage>/<name>` → committed value (attempted where a runner has none)."""
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return dict(sorted(totals.items()))
