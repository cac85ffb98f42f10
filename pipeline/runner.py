"""Beam options for every job `refinery` runs (curate, tokenize): the local defaults, the user's flags on top."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

from apache_beam.options.pipeline_options import PipelineOptions

# What every local (DirectRunner) worker process says on start, none of it the user's business: no staged files
# to load, the launcher's DirectRunner-only flags (validated there already), its log channel, and Beam's GCP
# modules missing a client library nothing here uses. Each arrives twice: on the worker's own stderr and
# forwarded through the launcher's log. Only lines holding one of these are dropped.
NOISE = ("No semi_persistent_directory found", "Discarding unparseable args", "Logging handler created",
         "apitools not found")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in NOISE)


# the launcher's copy of what workers log comes through this logger
logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(_DropNoise())


@contextlib.contextmanager
def quiet_workers():
    """While a local job runs, its worker processes write to this process's stderr (file descriptor 2, which they
    inherit): lines holding NOISE are dropped there; everything else (warnings, errors, progress bars) passes
    unchanged, a progress bar's update at most one update late."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):             # no real stderr (embedded): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def keep(segment: bytes) -> bool:
        return not any(n.encode() in segment for n in NOISE)

    def pump():
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as source:
            while True:
                chunk = source.read(1 << 16)
                if not chunk:
                    break
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()
                out = b"".join(line + b"\n" for line in lines if keep(line))
                cut = pending.rfind(b"\r")            # a progress bar redraws after \r, with no newline
                if cut > 0:
                    out, pending = out + pending[:cut], pending[cut:]
                if out:
                    os.write(original, out)
        if pending and keep(pending):
            os.write(original, pending)

    thread = threading.Thread(target=pump, name="quiet-workers", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)                  # closes our copy of the pipe; workers have exited
        thread.join(timeout=5)
        os.close(original)


def runner_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options; with no --runner, the DirectRunner in multi_processing mode with a worker per core."""
    args = list(beam_args)
    given = " ".join(args)
    direct = "DirectRunner" in given or "--runner" not in given
    if "--runner" not in given:
        args.append("--runner=DirectRunner")
    if direct and "--direct_running_mode" not in given:
        args.append("--direct_running_mode=multi_processing")
    if "--default_sdk_harness_log_level" not in given:
        args.append("--default_sdk_harness_log_level=WARNING")   # workers otherwise log every channel they open
    if "--direct_num_workers" not in given:
        args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return PipelineOptions(args)
