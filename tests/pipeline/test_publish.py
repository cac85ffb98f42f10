"""`refinery publish` and `refinery verify` on the curated sample crawl."""
import json
import shutil

import pyarrow.dataset as pads
import pytest
import yaml

from pipeline.app.cli import main


@pytest.fixture
def published(sample_run, tmp_path):
    _, output = sample_run
    target = tmp_path / "dataset"
    shutil.copytree(output, target)
    assert main(["publish", str(target), "--license", "odc-by", "--name", "sample"]) == 0
    return target


def test_card_and_configs(published):
    text = (published / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "odc-by" and meta["language"][0] == "en" and meta["size_categories"] == ["1K<n<10K"]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
    assert configs["default"] == "data/*.parquet" and len(configs) > 3
    stats = json.loads((published / "stats.json").read_text())
    assert "| minhash_dedup |" in text and f"{stats['kept']:,} documents kept" in text
    everything = pads.dataset(str(published / "data"), format="parquet").to_table()
    per_domain = sum(pads.dataset(str(published / path.rsplit("/", 1)[0]), format="parquet").count_rows()
                     for name, path in configs.items() if name != "default")
    assert everything.num_rows == stats["kept"] == per_domain


def test_verify_passes_then_catches_damage(published, capsys):
    assert main(["verify", str(published)]) == 0
    shard = next((published / "data").iterdir())
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF                                 # one flipped byte
    shard.write_bytes(bytes(data))
    blog = published / "domains" / "blog" / "part-0.parquet"
    blog.unlink()                                                # a missing file
    (published / "extra.txt").write_text("not listed")
    assert main(["verify", str(published)]) == 1
    out = capsys.readouterr().out
    assert f"data/{shard.name}: sha256 differs" in out
    assert "domains/blog/part-0.parquet: missing" in out and "extra.txt: not in the manifest" in out


def test_verify_catches_a_truncated_token_shard(published, tmp_path, capsys):
    tokens = tmp_path / "tokens"
    tokenizer = tmp_path / "tok"
    assert main(["tokenizer", "train", "--input", str(published / "data"), "--vocab-size", "2000",
                 "--output", str(tokenizer)]) == 0
    assert main(["tokenize", "--input", str(published), "--tokenizer", str(tokenizer), "--output", str(tokens)]) == 0
    assert main(["verify", str(tokens)]) == 0
    shard = sorted(tokens.rglob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    assert main(["verify", str(tokens)]) == 1
    assert "truncated or padded" in capsys.readouterr().out


def test_publish_needs_a_curated_folder(tmp_path):
    assert main(["publish", str(tmp_path)]) == 2
    assert main(["verify", str(tmp_path / "none")]) == 2   # not there: a usage error
