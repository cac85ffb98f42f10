"""Files: the one local atomic writer, and the one reader of JSON / JSONL rows that names the file and line.

`write_atomic` writes to a temporary file in the same folder, fsyncs it, renames it over the target and fsyncs
the folder: a reader (or a crash) sees the old file or the new one, never half of one. The curated dataset's
writer (pipeline/dataset.py) does the same through Beam's file systems for gs:// and s3:// outputs.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def cache_dir() -> Path:
    """Where refinery keeps what it can make again (a fetched model, the decontamination index):
    $REFINERY_CACHE, else ~/.cache/webrefinery."""
    return Path(os.environ.get("REFINERY_CACHE", Path.home() / ".cache" / "webrefinery"))


def umask() -> int:
    """The process's umask (read from /proc where it is there; else set and restored at once)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: bytes | str, fsync: bool = True) -> Path:
    """`data` at `path`, all of it or none (see the module docstring). Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())       # mkstemp makes it 0600; a file written whole gets what open() gives
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


JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
              bool: "true or false", type(None): "null"}


def json_type(value) -> str:
    """What a JSON value is, as the file spells it (null, not NoneType)."""
    return JSON_TYPES.get(type(value), type(value).__name__)


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object (a config.json, a manifest, a card): anything else is a ValueError
    naming the file, not a traceback from the first `.get` on it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {json_type(data)}")
    return data


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """(where, row) of a JSON list or JSONL(.gz) file of objects — `where` is "line N" of a JSONL file or "item N"
    of a JSON list, for messages about the row; a bad line is an error naming file and line."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, expected a JSON or JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            text = path.read_text(encoding="utf-8")
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
    rows, unit = None, "line"
    if text.lstrip().startswith("["):                     # one JSON list of objects (else JSONL whose rows are lists)
        try:
            rows, unit = list(enumerate(json.loads(text), 1)), "item"
        except json.JSONDecodeError as e:
            try:
                json.loads(text.lstrip().splitlines()[0])
            except json.JSONDecodeError:                  # not JSONL either: a broken list
                raise ValueError(f"{path}, line {e.lineno}: not JSON ({e.msg})") from None
    if rows is None:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {number}: not JSON ({e.msg})") from None
    for number, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"{path}, {unit} {number}: expected a JSON object, got {json_type(row)}")
    return [(f"{unit} {number}", row) for number, row in rows]


def parquet_texts(path: str | Path, columns: tuple[str, ...] = ("text",)) -> list[tuple]:
    """Rows (a tuple of `columns` each) of a Parquet file, or of every *.parquet under a folder in path order
    (a curated dataset: under its data/). A file that is not Parquet, lacks a column or holds something other than text
    there is an error naming it; a folder without Parquet files is one too."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if path.is_dir() and (path / "data").is_dir():
        path = path / "data"                    # a curated dataset: its documents, not rejected/ or domains/
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no Parquet files in it (a curated dataset that kept nothing?)")
    rows = []
    for file in files:
        try:
            table = pq.read_table(file, columns=list(columns))
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:
            raise ValueError(f"{file}: not a Parquet file with column(s) {', '.join(columns)} "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
        for name in columns:
            kind = table.schema.field(name).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
                raise ValueError(f"{file}: column {name} holds {kind}, expected text")
        rows += zip(*(table.column(name).to_pylist() for name in columns))
    return rows
