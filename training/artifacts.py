"""What refinery promises about your files (docs/files.md), in one place every command uses.

- **A manifest per artifact folder** (`manifest.json`): its kind, every file it wrote with size and sha256, its
  provenance (the tokenizer's and the dataset's sha256, the model it came from) and its config. Readers take
  the files the manifest lists, not what a glob finds, and refuse a file whose size or sha256 does not match,
  naming it (`check`).
- **A command writes only its own files** (`prepare_output`): it refuses an output that is, holds or sits inside
  one of its inputs; it refuses a folder that is not empty unless that folder holds an earlier artifact of the
  same kind (its manifest says so) and `--overwrite` is given — and then it removes exactly the files that
  manifest lists, nothing else.
- **One writer at a time** (`FolderLock`): a second process writing the same folder is refused at once.
- Files are written whole or not at all (training/files.py), and fsynced.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path

from training.files import json_type, write_atomic

MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = 1


class ArtifactError(ValueError):
    """A folder or file that is not what a command needs; the message names it and says what was expected."""


class Locked(OSError):
    """Another process is writing this folder."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry(path: str | Path) -> dict:
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


KINDS = ("adapter", "checkpoint", "dataset", "hf-model", "run", "tokenizer", "tokens")     # what write_manifest writes


def write_manifest(folder: str | Path, kind: str, files: list[str], provenance: dict | None = None,
                   config: dict | None = None, extra: dict | None = None) -> dict:
    """Hash `files` (paths relative to `folder`) and write FOLDER/manifest.json atomically."""
    if kind not in KINDS:
        raise ValueError(f"manifest kind {kind!r} is none of {', '.join(KINDS)} (read_manifest would refuse it)")
    folder = Path(folder)
    manifest = {"kind": kind, "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": {rel: entry(folder / rel) for rel in sorted(set(files))},
                "provenance": provenance or {}, "config": config or {}, **(extra or {})}
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def read_manifest(folder: str | Path, kind: str | tuple[str, ...] | None = None) -> dict:
    """FOLDER/manifest.json; an ArtifactError naming the folder if it is missing, unreadable or of another kind."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {MANIFEST} (not a folder refinery wrote, or written before manifests)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    wrong = _malformed(manifest)
    if wrong:
        raise ArtifactError(f"{path}: not a manifest refinery writes ({wrong})")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and manifest["kind"] not in kinds:
        raise ArtifactError(f"{folder}: a {manifest['kind']} folder, expected {' or '.join(kinds)}")
    return manifest


def _malformed(manifest) -> str | None:
    """What makes this JSON no manifest of ours, or None: its kind, and each file's path (inside the folder), size and
    sha256, are checked before anything reads or hashes what it names."""
    if not isinstance(manifest, dict):
        return f"{json_type(manifest)}, not a JSON object"
    if manifest.get("kind") not in KINDS:
        return f"kind {manifest.get('kind')!r} is none of {', '.join(KINDS)}"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "no files mapping"
    for rel, listed in files.items():
        if rel.startswith("/") or ".." in rel.split("/") or not rel:
            return f"file {rel!r} is not inside the folder"
        if not (isinstance(listed, dict) and type(listed.get("bytes")) is int and listed["bytes"] >= 0
                and isinstance(listed.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", listed["sha256"])):
            return f"file {rel!r}: expected its bytes and sha256, got {listed!r}"[:200]
    if not isinstance(manifest.get("provenance", {}), dict):
        return "provenance is not a mapping"
    return None


def problems(folder: str | Path, manifest: dict, names: list[str] | None = None, hash_files: bool = True) -> list[str]:
    """What is missing, resized or changed among the manifest's files (or `names` of them), one line each."""
    folder = Path(folder)
    found = []
    for rel in names if names is not None else sorted(manifest["files"]):
        listed = manifest["files"].get(rel)
        path = folder / rel
        if listed is None:
            found.append(f"{path}: not in {MANIFEST}")
        elif not path.is_file():
            found.append(f"{path}: missing")
        elif path.stat().st_size != listed["bytes"]:
            found.append(f"{path}: {path.stat().st_size:,} bytes, {MANIFEST} says {listed['bytes']:,} "
                         f"(truncated or changed)")
        elif hash_files and sha256_file(path) != listed["sha256"]:
            found.append(f"{path}: sha256 differs from {MANIFEST} (changed or corrupt)")
    return found


def check(folder: str | Path, manifest: dict, names: list[str] | None = None) -> None:
    """Raise an ArtifactError naming the first file that does not match the manifest."""
    bad = problems(folder, manifest, names)
    if bad:
        raise ArtifactError(bad[0] + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def stray_files(folder: str | Path, manifest: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Files in the folder the manifest does not list (its own manifest, lock and `ignore` prefixes aside)."""
    folder = Path(folder)
    listed = set(manifest["files"])
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in listed and rel not in (MANIFEST, LOCK) and not rel.startswith(ignore):
            out.append(rel)
    return out


# ---------------------------------------------------------------------------------------------- outputs

def _inside(a: Path, b: Path) -> bool:
    """Whether a is b or inside b."""
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def refuse_own_input(output: str | Path, inputs: list[str | Path]) -> None:
    """An ArtifactError if the output is, holds or sits inside one of the inputs."""
    out = Path(output).resolve()
    for spec in inputs:
        if not spec:
            continue
        src = Path(spec).resolve()
        if _inside(out, src) or _inside(src, out):
            relation = "is" if out == src else "holds" if _inside(src, out) else "is inside"
            raise ArtifactError(f"the output {output} {relation} the input {spec}: choose another output")


def prepare_output(output: str | Path, kind: str, inputs: list[str | Path] = (), overwrite: bool = False,
                   keep: bool = False) -> Path:
    """Make OUTPUT ready for a new artifact of `kind` (see the module docstring). `keep`: an earlier artifact of
    the same kind stays (a resumed run). Returns the folder."""
    out = Path(output)
    refuse_own_input(out, inputs)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: a file is there, expected a folder to write the {kind} into")
    contents = [p for p in out.iterdir() if p.name != LOCK] if out.is_dir() else []
    if contents and not keep:
        if not (out / MANIFEST).is_file():
            raise ArtifactError(f"{out}: not empty and not a {kind} refinery wrote (no {MANIFEST}); nothing there "
                                f"is removed: choose an empty or new folder")
        previous = read_manifest(out)
        if previous["kind"] != kind:
            raise ArtifactError(f"{out}: holds a {previous['kind']}, not a {kind}; choose another folder")
        if not overwrite:
            raise ArtifactError(f"{out}: holds an earlier {kind}; pass --overwrite to replace it (only the "
                                f"{len(previous['files'])} files its {MANIFEST} lists are removed)")
        remove_listed(out, previous)
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_file(output: str | Path, inputs: list = (), ours=None, what: str = "file") -> Path:
    """Check OUTPUT before a command writes one file there (a model, results, a JSONL): refused if it is, holds or
    sits inside one of `inputs`, if it is a folder, or if a file is there that this command did not write
    (`ours(path)` says whether it did; an empty file holds nothing to lose). Returns the path."""
    out = Path(output)
    refuse_own_input(out, [str(i) for i in inputs if i])
    if out.is_dir():
        raise ArtifactError(f"{out}: a folder is there, expected the name of the {what} to write")
    if out.is_file() and out.stat().st_size and not (ours is not None and ours(out)):
        raise ArtifactError(f"{out}: a file is there that is not a {what} refinery wrote; nothing is replaced: move "
                            f"it away or choose another name")
    above = next((p for p in out.parents if p.exists()), None)     # checked now, not after the work is done
    if above is not None and not above.is_dir():
        raise ArtifactError(f"{out}: {above} is a file, not a folder to write the {what} in")
    return out


def json_with(*keys: str):
    """`ours` for prepare_file: a JSON object holding these keys."""
    def ours(path: Path) -> bool:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(record, dict) and all(key in record for key in keys)
    return ours


def jsonl_with(*keys: str):
    """`ours` for prepare_file: JSON lines whose first row holds these keys."""
    def ours(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8") as fh:
                first = next((line for line in fh if line.strip()), "")
            record = json.loads(first)
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(record, dict) and all(key in record for key in keys)
    return ours


def remove_listed(folder: Path, manifest: dict) -> None:
    """Remove the files a manifest lists (and the manifest), then any folder this leaves empty. Refused, with
    nothing removed, if a listed file is no longer what the manifest recorded (someone changed or replaced it:
    it is not the command's own any more)."""
    changed = [line for line in problems(folder, manifest) if not line.endswith(": missing")]
    if changed:
        raise ArtifactError(f"{changed[0]}{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}: not "
                            f"replacing a file changed since it was written; move it away first")
    remove_files(folder, [*manifest["files"], MANIFEST])


def remove_files(folder: Path, files) -> None:
    """Remove these files (paths relative to `folder`, each one a command wrote), then any folder this leaves
    empty; nothing else. A path that leads out of the folder (`..`, absolute, a link) is not followed."""
    root = folder.resolve()
    for rel in files:
        path = folder / rel
        if path.resolve().is_relative_to(root) and not path.is_symlink():
            path.unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            sub.rmdir()
        except OSError:
            pass                # not empty: something we did not write is in it


class FolderLock:
    """An exclusive lock on FOLDER/.lock while a process writes the folder; a second one is refused at once."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK
        self.fd = None
        self.created = False

    def __enter__(self):
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            self.created = False
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise Locked(f"{self.path.parent} is being written by another process (pid {holder}); wait for it "
                             f"or write elsewhere") from None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        if self.fd is None:
            return
        if self.created and [p.name for p in self.path.parent.iterdir()] == [LOCK]:
            self.path.unlink()                     # a folder this lock made and nothing filled: leave no trace
            self.path.parent.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


def safe_name(text: str, what: str = "name") -> str:
    """`text` as one path component that stays in its folder (a domain label, a file stem from data)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text).strip(".") or "_"
    if cleaned != text:
        raise ArtifactError(f"{what} {text!r} cannot be a folder name (letters, digits, - _ . only)")
    return cleaned
