from pathlib import Path

import pytest

from pipeline.config import ConfigError, CurateConfig, from_dict, load_config, to_dict

REPO = Path(__file__).resolve().parents[2]


def test_sample_config_is_the_defaults():
    assert load_config(REPO / "configs/sample.yaml") == CurateConfig()


def test_round_trip():
    assert from_dict(CurateConfig, to_dict(CurateConfig())) == CurateConfig()


@pytest.mark.parametrize("data, message", [
    ({"reed": {}}, "unknown key(s) reed"),
    ({"read": {"max_body_bytes": "big"}}, "read.max_body_bytes: expected int"),
    ({"dedup": {"bands": 0}}, "dedup.bands must be >= 1, got 0"),
    ({"dedup": {"threshold": 1.2}}, "dedup.threshold must be in (0, 1), got 1.2"),
    ({"dedup": {"shingle": 5}}, "unknown key(s) shingle"),
    ({"read": {"max_body_bytes": -1}}, "max_body_bytes must be > 0, got -1"),
    ({"extract": {"favor_precision": "yes"}}, "expected bool"),
    ({"read": {"html_types": "text/html"}}, "expected a list"),
    ({"output": 3}, "expected a mapping"),
])
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(CurateConfig, data)


def test_ints_are_accepted_for_floats():
    assert from_dict(CurateConfig, {"extract": {"timeout_s": 3}}).extract.timeout_s == 3.0


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("read: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
