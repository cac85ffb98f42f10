"""The curation job: WARC files → curated dataset, on any Beam runner.

```
refinery curate --input '../shared/data/warc/sample-crawl/*.warc.gz' --output out/sample
```
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import CurateConfig, to_dict
from pipeline.decontam import Decontaminate
from pipeline.dedup import Deduplicate
from pipeline.dataset import (PROGRESS_DIR, WriteDataset, completed_inputs, join, shard_name, total_funnel,
                              write_atomic)
from pipeline.filtering import IdentifyLanguage, RedactPii, heuristic_filters, url_filter
from pipeline.mix import Mix, mix_report
from pipeline.quality import QualityScore
from pipeline.stages import ExtractText, ReadWarc

log = logging.getLogger(__name__)

# Stages in pipeline order (for the funnel table); the ones a config turns off are left out of a run's list.
STAGES = ["url", "extract", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "nsfw", "pii",
          "url_dedup", "exact_dedup", "minhash_dedup", "line_dedup", "decontam",
          "quality", "mix"]
DEDUP_STAGES = ("url_dedup", "exact_dedup", "minhash_dedup", "line_dedup")


def active_stages(cfg: CurateConfig) -> list[str]:
    return [s for s in STAGES if s == "extract" or getattr(cfg.stages, s)]


def expand_inputs(specs: list[str]) -> list[str]:
    """Globs (local, gs://, s3://) and URLs → sorted unique paths; a glob that matches nothing is an error."""
    paths = []
    for spec in specs:
        for pattern in filter(None, (s.strip() for s in spec.split(","))):
            if pattern.startswith(("http://", "https://")):
                paths.append(pattern)
                continue
            matches = FileSystems.match([pattern])[0].metadata_list
            if not matches:
                raise FileNotFoundError(f"no input file matches {pattern!r}")
            paths.extend(m.path for m in matches)
    return sorted(set(paths))


def config_sha(cfg: CurateConfig) -> str:
    """Fingerprint of everything that decides the output: a rerun only skips inputs written under the same."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def dedup_on(cfg: CurateConfig) -> bool:
    return any(getattr(cfg.stages, s) for s in DEDUP_STAGES)


def build(pipeline: beam.Pipeline, paths: list[str], cfg: CurateConfig, output_dir: str,
          written: frozenset[str] = frozenset()):
    """The curation graph on `pipeline`, cheapest stages first; returns the per-file progress markers.

    `written`: inputs read only for deduplication (their outputs are complete and stay as they are)."""
    keep, on = cfg.output.write_rejected, cfg.stages
    docs = pipeline | "ReadWarc" >> ReadWarc(paths, cfg.read)
    if on.url:
        docs = docs | "UrlFilter" >> url_filter(cfg.url, keep)
    docs = docs | "ExtractText" >> ExtractText(cfg.extract, keep_rejected=keep)
    if on.language:
        docs = docs | "Language" >> IdentifyLanguage(cfg.language, keep)
    for label, transform in heuristic_filters(cfg, keep):
        if getattr(on, transform.name):
            docs = docs | label >> transform
    if on.pii:
        docs = docs | "RedactPii" >> RedactPii(cfg.pii)
    if dedup_on(cfg):
        docs = docs | "Dedup" >> Deduplicate(cfg.dedup, on.url_dedup, on.exact_dedup, on.minhash_dedup, keep,
                                             lines=on.line_dedup)
    if on.decontam:
        docs = docs | "Decontaminate" >> Decontaminate(cfg.decontam, keep)
    if on.quality:
        docs = docs | "Quality" >> QualityScore(cfg.quality, keep)
    if on.mix:
        docs = docs | "Mix" >> Mix(cfg.mix, output_dir, keep)
    return docs | "WriteDataset" >> WriteDataset(output_dir, keep, cfg.output.write_errors, config_sha(cfg),
                                                 skip=written)


def runner_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options; with no --runner, the DirectRunner in multi_processing mode with a worker per core."""
    args = list(beam_args)
    given = " ".join(args)
    if "--runner" not in given:
        args.append("--runner=DirectRunner")
    if ("DirectRunner" in given or "--runner" not in given) and "--direct_running_mode" not in given:
        args.append("--direct_running_mode=multi_processing")
    if "--default_sdk_harness_log_level" not in given:
        args.append("--default_sdk_harness_log_level=WARNING")   # workers otherwise log every channel they open
    if "--direct_num_workers" not in given:
        args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return PipelineOptions(args)


@dataclass
class CurateResult:
    funnel: dict
    inputs: int
    skipped_complete: int
    wall_s: float


class _Progress(threading.Thread):
    """Prints how many input files are done while the pipeline runs (works with any runner)."""

    def __init__(self, output_dir: str, total: int, done_before: int, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.output_dir, self.total, self.before, self.every_s = output_dir, total, done_before, every_s
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self):
        last = None
        while not self.stop.wait(self.every_s):
            try:
                done = len(FileSystems.match([join(self.output_dir, PROGRESS_DIR, "*.json")])[0].metadata_list)
            except Exception:
                continue
            if done != last:
                print(f"[curate] {done - self.before}/{self.total} input files written "
                      f"({time.monotonic() - self.started:.0f} s)", flush=True)
                last = done


def curate(paths: list[str], output_dir: str, cfg: CurateConfig, beam_args: list[str] = (),
           progress: bool = True) -> CurateResult:
    """Run the job over `paths`, skipping inputs already complete in `output_dir`; write stats.json."""
    started = time.monotonic()
    sha = config_sha(cfg)
    existing = completed_inputs(output_dir) if FileSystems.exists(output_dir) else {}
    done = {p: m for p, m in existing.items() if m.get("config_sha") == sha}
    todo = [p for p in paths if p not in done]
    stale = [p for p in todo if p in existing]
    if stale:    # written under another config: remove what they wrote, so no old shard outlives its input
        print(f"[curate] {len(stale)} input files were written under another config: redoing them", flush=True)
        for path in stale:
            old = [join(output_dir, out) for out in existing[path]["outputs"]]
            FileSystems.delete(old + [join(output_dir, PROGRESS_DIR, f"{shard_name(path)}.json")])
    if done:
        print(f"[curate] {len(paths) - len(todo)} of {len(paths)} input files already complete in "
              f"{output_dir}: skipped", flush=True)
    read, written = todo, frozenset()
    if todo and done and dedup_on(cfg):
        # dedup is global: the complete inputs are read again so the rest is deduplicated against them too
        # (same inputs, same config: the same verdicts), but their outputs are not rewritten
        read, written = [p for p in paths], frozenset(p for p in paths if p in done)
        print(f"[curate] dedup needs every input: re-reading the {len(written)} complete ones "
              f"without rewriting them", flush=True)
    if todo:
        print(f"[curate] {len(todo)} input files -> {output_dir}", flush=True)
        reporter = _Progress(output_dir, len(todo), len(done)) if progress else None
        if reporter:
            reporter.start()
        try:
            with beam.Pipeline(options=runner_options(list(beam_args))) as pipeline:
                build(pipeline, read, cfg, output_dir, written)
        finally:
            if reporter:
                reporter.stop.set()
    markers = completed_inputs(output_dir, sha)
    missing = [p for p in paths if p not in markers]
    if missing:
        raise RuntimeError(f"{len(missing)} input files have no complete output, e.g. {missing[0]}")
    funnel = total_funnel([markers[p] for p in paths])
    wall_s = time.monotonic() - started
    stats = {**funnel, "stages": active_stages(cfg), "inputs": len(paths), "inputs_skipped_as_complete": len(paths) - len(todo),
             "wall_s": round(wall_s, 2), "config": to_dict(cfg),
             "shards": {shard_name(p): p for p in paths}}
    if cfg.stages.mix and cfg.mix.weights and "://" not in output_dir and todo:
        stats["mix"] = mix_report(output_dir)["domains"]
    write_atomic(join(output_dir, "stats.json"), json.dumps(stats, indent=1).encode())
    return CurateResult(funnel, len(paths), len(paths) - len(todo), wall_s)
