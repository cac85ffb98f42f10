"""Writing files so that nothing is lost or half-written: the one local atomic writer.

`write_atomic` writes to a temporary file in the same folder, fsyncs it, renames it over the target and fsyncs
the folder: a reader (or a crash) sees the old file or the new one, never half of one. The curated dataset's
writer (pipeline/dataset.py) does the same through Beam's file systems for gs:// and s3:// outputs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str, fsync: bool = True) -> Path:
    """`data` at `path`, all of it or none (see the module docstring). Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        sync_folder(path.parent)
    return path


def sync_folder(folder: str | Path) -> None:
    """fsync a folder, so a rename in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
