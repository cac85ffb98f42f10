"""Is the machine busy with other work? torch's OpenMP threads spin and wait on each other when other processes
hold the cores: on 2 cores with one other job beside it, training ran 5.8x and evaluation 19x slower. A run
started on such a machine says so, once, a few seconds in; it does not change the thread count itself (that
would make the numbers depend on what else was running): `--set run.threads=1` is the user's choice.
"""
from __future__ import annotations

import os
import threading
import time

import torch


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)      # idle + iowait
    return sum(fields) - idle, sum(fields)


def other_load(seconds: float) -> float | None:
    """Cores kept busy by other processes over the next `seconds` (the machine's busy time minus this
    process's CPU time); None where /proc/stat is missing."""
    cores = os.cpu_count() or 1
    before, own_before, t0 = _cpu_times(), time.process_time(), time.monotonic()
    if before is None:
        return None
    time.sleep(seconds)
    after, own_after, wall = _cpu_times(), time.process_time(), time.monotonic() - t0
    busy, total = after[0] - before[0], after[1] - before[1]
    machine = cores * busy / total if total > 0 else 0.0
    return max(0.0, machine - (own_after - own_before) / max(wall, 1e-9))


def busy_message(others: float, threads: int, cores: int) -> str | None:
    """The warning for `others` cores busy elsewhere while torch runs `threads` threads on `cores`, or None."""
    if threads < 2 or others + threads <= cores + 0.5:
        return None
    return (f"the machine is busy: other processes keep {others:.1f} of its {cores} cores working while torch runs "
            f"{threads} threads, which then wait on each other (several times slower); on a shared machine pass "
            f"--set run.threads=1, or run when it is quiet")


def warn_if_busy(log, prefix: str, threads: int | None = None, seconds: float = 2.0) -> threading.Thread:
    """In the background (the caller goes on): measure the other processes' load for `seconds`, then log the
    warning if torch's threads and theirs oversubscribe the cores."""
    threads = threads or torch.get_num_threads()

    def check():
        others = other_load(seconds)
        message = busy_message(others, threads, os.cpu_count() or 1) if others is not None else None
        if message:
            log(f"{prefix} warning: {message}")
    thread = threading.Thread(target=check, name="busy-cpu-check", daemon=True)
    thread.start()
    return thread
