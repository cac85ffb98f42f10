"""Staging (pipeline/staging.py): a run killed inside one large WARC resumes at chunk granularity with its
output unchanged, nothing complete is read or extracted again, and no document text crosses a shuffle before the
final write."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import load_config
from pipeline.curate import config_sha, curate
from pipeline.staging import WORK_DIR, clean_work, resumable
from tests.training.test_loop import REPO


def rows(out: Path) -> dict[str, list[dict]]:
    """Every row of every shard under data/, rejected/ and errors/, by file."""
    found = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if relative.startswith(("data/", "rejected/")) and path.suffix == ".parquet":
            found[relative] = pq.read_table(path).to_pylist()
        elif relative.startswith("errors/"):
            found[relative] = path.read_text().splitlines()
    return found


def funnel(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    return {key: stats[key] for key in ("records_in", "kept", "skipped", "dropped", "errors", "chars", "balanced")}


@pytest.fixture(scope="module")
def big_warc(sample_warcs, tmp_path_factory) -> Path:
    """Two sample-crawl WARCs joined into one 29 MB file, 15 chunks (gzip members one after another stay valid)."""
    path = tmp_path_factory.mktemp("big") / "joined.warc.gz"
    with open(path, "wb") as out:
        for warc in sample_warcs[:2]:
            out.write(Path(warc).read_bytes())
    return path


def test_a_run_killed_inside_one_file_resumes_with_the_same_output(big_warc, tmp_path):
    cfg = load_config(None, ["output.write_rejected=true"])          # dedup on (the default), rejected rows too
    whole = curate([str(big_warc)], str(tmp_path / "whole"), cfg, progress=False)
    assert whole.funnel["balanced"] and whole.counters.get("read/chunks_resumed", 0) == 0
    assert not (tmp_path / "whole" / WORK_DIR).exists()               # removed once the run is complete

    killed = tmp_path / "killed"
    work = killed / WORK_DIR / config_sha(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "curate", "--input", str(big_warc),
                             "--output", str(killed), "--set", "output.write_rejected=true"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while len(list(work.glob("*.json"))) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)                       # the job and its Beam workers, mid-file
    output = proc.communicate()[0]
    staged = len(list(work.glob("*.json")))
    assert proc.returncode == -signal.SIGKILL and 6 <= staged < 15, output
    assert "[curate] read " in output and "MB" in output       # progress inside the one file
    assert not (killed / "stats.json").exists()

    again = curate([str(big_warc)], str(killed), cfg, progress=False)
    resumed = again.counters["read/chunks_resumed"]
    assert resumed >= staged - 1            # a marker seen just before the kill may have been cut short
    assert again.counters["read/records_in"] + again.counters["read/records_resumed"] == again.funnel["records_in"]
    assert again.counters["read/records_in"] < 0.7 * again.funnel["records_in"]      # the staged part not read again
    extracted = sum(v for k, v in again.counters.items() if k.startswith("extract/"))
    assert extracted == again.counters["read/pages"] < 0.7 * whole.counters["read/pages"]
    assert rows(killed) == rows(tmp_path / "whole") and rows(killed)
    assert funnel(killed) == funnel(tmp_path / "whole")
    assert not (killed / WORK_DIR).exists()


def test_no_document_text_crosses_a_shuffle_before_the_final_write(sample_warcs, tmp_path, monkeypatch):
    monkeypatch.setenv("REFINERY_SHUFFLE_BYTES", "1")
    result = curate(sample_warcs[:1], str(tmp_path / "o"), load_config(None), progress=False)
    shuffled = {k.removeprefix("shuffle/").removesuffix("/bytes"): v for k, v in result.counters.items()
                if k.startswith("shuffle/") and k.endswith("/bytes")}
    assert {"url_dedup/by_url", "exact_dedup/by_text", "minhash_dedup/buckets", "write/by_file"} <= set(shuffled)
    into_dedup = result.counters["pii/kept"]                  # the live documents staged before dedup
    text = funnel(tmp_path / "o")["chars"]["pii"]["out"]
    assert into_dedup > 300 and text / into_dedup > 2000
    keys = sum(v for k, v in shuffled.items() if k != "write/by_file")
    assert keys / into_dedup < 1000                           # band keys, sketches, hashes and ids only
    assert shuffled["write/by_file"] > text                   # the final write moves every kept text once


def test_a_staged_chunk_is_resumed_only_as_planned_now():
    marker = {"input": "a.warc.gz", "chunk": 0, "end": 2097152, "size": 5000000, "records": 10}
    assert resumable(marker, ("a.warc.gz", 0, 2097152, "members", 5000000))
    assert not resumable(marker, ("a.warc.gz", 0, 2097152, "members", 5000001))      # the file changed
    assert not resumable(marker, ("a.warc.gz", 0, 1048576, "members", 5000000))      # other chunk size
    assert not resumable(None, ("a.warc.gz", 0, 2097152, "members", 5000000))


def test_clean_work_keeps_only_this_configs_complete_chunks_and_touches_nothing_else(tmp_path):
    work = tmp_path / WORK_DIR
    this, other = "0123456789abcdef", "fedcba9876543210"
    staged = [f"{this}/x-0.json", f"{this}/x-0.items.jsonl.gz", f"{this}/x-0.part-1234.items.jsonl.gz",
              f"{this}/x-0.keys.npz.tmp-0a1b2c3d", f"{other}/y-0.json", f"{other}/y-0.keys.npz"]
    users = [f"{this}/notes.txt", "mine/x-0.json", "readme.md"]          # not ours: never deleted
    for name in staged + users:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("{}")
    clean_work(str(tmp_path), keep=this)
    left = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    assert left == sorted([f"{this}/x-0.items.jsonl.gz", f"{this}/x-0.json", *users])
    clean_work(str(tmp_path), keep=None)
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == sorted(users)
    assert not (work / other).exists() and (work / "mine").is_dir()
    (work / this / "notes.txt").unlink()
    clean_work(str(tmp_path), keep=None)
    assert not (work / this).exists() and (work / "mine" / "x-0.json").is_file()


def test_a_damaged_staged_chunk_is_read_again(crawl_slice, tmp_path, monkeypatch):
    """A run stopped after staging (its writes undone by hand), then rerun: an intact chunk is resumed, one with
    a flipped byte is read again; both reruns write what an uninterrupted run wrote."""
    import pipeline.curate as curate_module
    cfg = load_config(None)
    one = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]      # 100 pages: no worker processes
    whole = tmp_path / "whole"
    curate([crawl_slice], str(whole), cfg, one, progress=False)
    original = curate_module.clean_work

    def stopped_after_staging(damage: bool) -> Path:
        out = tmp_path / f"stopped-{damage}"
        monkeypatch.setattr(curate_module, "clean_work", lambda o, keep: None if keep is None else original(o, keep))
        curate([crawl_slice], str(out), cfg, one, progress=False)
        monkeypatch.setattr(curate_module, "clean_work", original)
        for path in out.iterdir():              # what a kill before the writes leaves: the work folder alone
            if path.name != WORK_DIR:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        if damage:
            items = next((out / WORK_DIR).rglob("*.items.jsonl.gz"))
            data = bytearray(items.read_bytes())
            data[len(data) // 2] ^= 0x40
            items.write_bytes(bytes(data))
        return out

    for damage in (False, True):
        out = stopped_after_staging(damage)
        again = curate([crawl_slice], str(out), cfg, one, progress=False)
        assert again.counters.get("read/chunks_resumed", 0) == (0 if damage else 1)
        assert again.counters.get("read/chunks_damaged", 0) == (1 if damage else 0)
        assert again.counters.get("read/pages", 0) == (100 if damage else 0)
        assert rows(out) == rows(whole) and funnel(out) == funnel(whole)


def test_someone_elses_work_folder_does_not_make_a_folder_ours(tmp_path):
    from pipeline.curate import check_dataset_folder
    from training.artifacts import ArtifactError
    out = tmp_path / "mine"
    (out / WORK_DIR).mkdir(parents=True)
    (out / WORK_DIR / "draft.txt").write_text("the user's")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(ArtifactError, match="not a curated dataset"):
        check_dataset_folder(out)
    marker = out / WORK_DIR / "0123456789abcdef" / "a-0000000000000.json"      # what a killed run leaves
    marker.parent.mkdir()
    marker.write_text("{}")
    check_dataset_folder(out)
