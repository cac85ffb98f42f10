"""Beam options for every job `refinery` runs (curate, tokenize): the local defaults, the user's flags on top."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions


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
