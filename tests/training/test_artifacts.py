"""What refinery promises about files (docs/files.md), on real runs: nothing a user had is deleted or truncated,
damaged files are refused by name, a resumed run skips a damaged checkpoint, one writer per folder."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.app.cli import main
from tests.training.test_loop import REPO, losses, tiny
from training.artifacts import FolderLock, read_manifest

STEPS = ["--set", "run.steps=12", "--set", "run.checkpoint_every=3", "--set", "run.keep_checkpoints=4",
         "--set", "run.eval_every=0"]


def flip_byte(path, at: int = -100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def whole(sample_tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(["train", *tiny(sample_tokens, out), *STEPS]) == 0
    return out


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_resume_skips_a_damaged_checkpoint_and_matches_an_uninterrupted_run(whole, sample_tokens, tmp_path, capsys,
                                                                          damage):
    """A run stopped after its step-9 checkpoint, that checkpoint then truncated (as a kill mid-write would leave
    it, were it not renamed into place only when complete) or a byte of its weights flipped: `--resume` says it
    skips it, continues from step 6, and logs the losses of the run that was never interrupted (to step 12: the
    stop at 9 stopped the first invocation, not the resumed one, which once stopped at once, exit 0)."""
    out = tmp_path / "run"
    assert main(["train", *tiny(sample_tokens, out), *STEPS, "--set", "run.stop_at_step=9"]) == 0
    weights = out / "checkpoints" / "step-000009" / "model.pt"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
    else:
        flip_byte(weights)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0          # the saved stop at 9 is not carried
    said = capsys.readouterr().out
    assert "step-000009 is damaged" in said and "resumed from" in said and "step 6" in said
    assert losses(out) == losses(whole)


def test_a_kill_while_a_checkpoint_is_written_loses_nothing(sample_tokens, tmp_path):
    """SIGKILL `refinery train` the moment a checkpoint's temporary folder appears (a checkpoint every step, so
    the kill lands mid-write): the half-written folder is never taken for a checkpoint, and `--resume` continues
    from the newest whole one with the losses of a run that was never interrupted."""
    every = ["--set", "run.steps=30", "--set", "run.checkpoint_every=1", "--set", "run.keep_checkpoints=3",
             "--set", "run.eval_every=0"]
    whole = tmp_path / "whole"
    assert main(["train", *tiny(sample_tokens, whole), *every]) == 0
    for attempt in range(5):
        killed = tmp_path / f"killed-{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "train", *tiny(sample_tokens, killed),
                                 *every], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        folder, deadline = killed / "checkpoints", time.time() + 120
        while not (folder.is_dir() and any(n.endswith(".tmp") and n.startswith(".step-") and n != ".step-000001.tmp"
                                           for n in os.listdir(folder))):
            assert time.time() < deadline and proc.poll() is None, "no checkpoint written within 2 minutes"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if any(p.name.endswith(".tmp") for p in folder.iterdir()):
            break                                            # killed with a checkpoint half written
    assert any(p.name.endswith(".tmp") for p in folder.iterdir()), "no kill landed mid-write in 5 tries"
    assert main(["train", "--resume", str(killed)]) == 0
    assert losses(killed) == losses(whole)
    assert not any(p.name.endswith(".tmp") for p in folder.iterdir())


def test_a_damaged_checkpoint_is_refused_by_name(whole, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    flip_byte(run / "checkpoints" / "step-000012" / "model.pt")
    assert main(["generate", "--model", str(run / "checkpoints" / "step-000012"), "--prompt", "Hi",
                 "--max-new-tokens", "2"]) == 2
    assert "step-000012/model.pt: sha256 differs" in capsys.readouterr().err
    assert main(["generate", "--model", str(run), "--prompt", "Hi", "--max-new-tokens", "2"]) == 0   # step 9's


def test_a_second_writer_is_refused(sample_tokens, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with FolderLock(out):
        assert main(["train", *tiny(sample_tokens, out), *STEPS]) == 2
    assert "is being written by another process" in capsys.readouterr().err


def test_a_new_run_over_an_old_one_deletes_nothing_it_should_not(whole, sample_tokens, tmp_path, capsys):
    """The old bug: checkpoint pruning sorted both runs' checkpoints and deleted the new run's final one."""
    out = tmp_path / "run"
    shutil.copytree(whole, out)
    (out / "notes.txt").write_text("mine")
    assert main(["train", *tiny(sample_tokens, out), *STEPS]) == 2
    assert "holds an earlier run; pass --overwrite" in capsys.readouterr().err
    assert main(["train", *tiny(sample_tokens, out), "--overwrite", *STEPS, "--set", "run.steps=6"]) == 0
    assert (out / "notes.txt").read_text() == "mine"                        # not the run's: untouched
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000003", "step-000006"]
    assert read_manifest(out)["kind"] == "run"
    assert main(["generate", "--model", str(out), "--prompt", "Hi", "--max-new-tokens", "2"]) == 0


def test_export_writes_only_its_own_files(whole, tmp_path, capsys):
    target = tmp_path / "hf"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["export", "--model", str(whole), "--output", str(target)]) == 2      # not an export: refused
    assert "not empty" in capsys.readouterr().err and (target / "keep.txt").read_text() == "mine"
    assert main(["export", "--model", str(whole), "--output", str(whole)]) == 2       # the run itself
    assert "is the input" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    assert main(["export", "--model", str(whole), "--output", str(fresh)]) == 0
    (fresh / "notes.txt").write_text("mine")
    assert main(["export", "--model", str(whole), "--output", str(fresh), "--overwrite"]) == 0
    assert (fresh / "notes.txt").read_text() == "mine" and read_manifest(fresh)["kind"] == "hf-model"


@pytest.fixture()
def token_copy(sample_tokens, tmp_path):
    copy = tmp_path / "tokens"
    shutil.copytree(sample_tokens, copy)
    return copy


def test_verify_rejects_a_stray_shard_a_flipped_byte_and_ids_beyond_the_vocabulary(token_copy, capsys):
    assert main(["verify", str(token_copy)]) == 0
    manifest = read_manifest(token_copy, "tokens")
    shard = token_copy / next(r for r in manifest["files"] if r.endswith(".bin"))
    stray = shard.parent / "old-run.bin"
    shutil.copy(shard, stray)                                  # what an earlier tokenize into the folder left
    flip_byte(shard)
    capsys.readouterr()
    assert main(["verify", str(token_copy)]) == 1
    out = capsys.readouterr().out
    assert "old-run.bin: not in the manifest" in out and "sha256 differs" in out


def test_training_reads_the_listed_shards_and_refuses_a_damaged_one(token_copy, tmp_path, capsys):
    manifest = read_manifest(token_copy, "tokens")
    shard = token_copy / next(r for r in manifest["files"] if r.endswith(".bin"))
    flip_byte(shard)
    assert main(["train", *tiny(token_copy, tmp_path / "run"), *STEPS]) == 2
    assert f"{shard}: sha256 differs" in capsys.readouterr().err


def test_ids_beyond_the_vocabulary_are_caught(token_copy, capsys):
    import numpy as np

    from training.artifacts import write_manifest
    manifest = read_manifest(token_copy, "tokens")
    rel = next(r for r in manifest["files"] if r.endswith(".bin"))
    data = np.fromfile(token_copy / rel, dtype=np.uint8)
    data[64:66] = [0xFF, 0xFF]                                  # the first token: id 65,535
    data.tofile(token_copy / rel)
    write_manifest(token_copy, "tokens", list(manifest["files"]), manifest["provenance"])   # a consistent lie
    assert main(["verify", str(token_copy)]) == 1
    assert "token id 65,535 is not below the vocabulary" in capsys.readouterr().out


def test_a_model_refuses_another_tokenizer(whole, sample_run, tmp_path, capsys):
    """Another tokenizer of the same size (trained on a 2 MB slice of the same data) loads without error and
    scores nonsense: bits per byte moved from 6.87 to 5.97 without a word. The run's recorded sha256 refuses it."""
    other = tmp_path / "other-tok"
    assert main(["tokenizer", "train", "--input", str(sample_run[1]), "--vocab-size", "4000",
                 "--sample-bytes", "2000000", "--output", str(other)]) == 0
    capsys.readouterr()
    args = ["eval", "--model", str(whole), "--tasks", "wikitext", "--text-bytes", "2000", "--no-progress",
            "--tokenizer", str(other)]
    assert main(args) == 2
    said = capsys.readouterr().err
    assert "was trained with the tokenizer" in said and "--other-tokenizer" in said
    assert main([*args, "--other-tokenizer"]) == 0


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_file_written_whole_has_the_mode_the_umask_gives(tmp_path, mask, mode):
    """write_atomic goes through mkstemp (0600): the file it leaves is as readable as open() would make it, so a
    dataset's manifest.json is not the one file others cannot read."""
    from training.files import umask, write_atomic
    before = os.umask(mask)
    try:
        assert umask() == mask
        path = write_atomic(tmp_path / "manifest.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode == (tmp_path / "plain.json").stat().st_mode & 0o777
