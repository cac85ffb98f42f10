"""Where the staged real data lives (`../shared/data` beside the repository by default).

Tests and benchmarks find WARCs, gold texts and word lists through `shared_data_dir()` alone, so a user can
point them elsewhere with `REFINERY_SHARED_DATA=/path/to/data`.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "REFINERY_SHARED_DATA"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data folder: $REFINERY_SHARED_DATA, else ../shared/data beside the repository."""
    configured = os.environ.get(ENV_VAR)
    path = Path(configured) if configured else _REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"shared data folder not found at {path}; set {ENV_VAR} to the folder that holds warc/, extraction/, ...")
    return path
