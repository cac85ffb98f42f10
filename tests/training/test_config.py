"""Config loading (training/config.py): a section given in part keeps the rest of its parent's defaults."""
import pytest

from training.config import ConfigError, load_config
from training.loop import RunConfig
from training.post.dpo import DPOConfig
from training.post.ppo import load_ppo_config
from training.post.sft import SFTConfig
from training.pretrain import load_train_config


def test_a_partial_section_keeps_the_verbs_own_defaults():
    """`refinery sft --set run.steps=40` used to train with RunConfig's batch 16 and DPO's `--set optim.lr=…`
    with OptimConfig's warmup 50: the section fell back to its class's defaults, not the verb's."""
    sft = load_config(SFTConfig, None, ["run.steps=40"])
    assert (sft.run.steps, sft.run.batch_size, sft.run.eval_every, sft.run.out_dir) == (40, 8, 50, "out/sft")
    assert RunConfig().batch_size == 16                                # what it used to fall back to
    dpo = load_config(DPOConfig, None, ["optim.lr=1e-4"])
    assert (dpo.optim.lr, dpo.optim.warmup_steps) == (1e-4, 10)
    ppo = load_ppo_config(None, ["optim.lr=1e-4"])
    assert (ppo.optim.beta2, ppo.optim.weight_decay, ppo.optim.schedule) == (0.999, 0.0, "constant")
    assert load_train_config(None, ["model.dim=64"]).model.vocab_size == 0    # the tokenizer's


def test_a_saved_config_is_the_base_and_set_goes_on_top():
    saved = {"model": "m", "run": {"steps": 7, "batch_size": 3}}
    cfg = load_config(SFTConfig, None, ["run.steps=9"], base=saved)
    assert (cfg.model, cfg.run.steps, cfg.run.batch_size) == ("m", 9, 3)


def test_true_and_false_are_what_the_text_options_say():
    """run.compile is auto, true or false; YAML reads `false` as a boolean, which was refused ("expected str, got
    False") for the value the config's own comment offers. Text options that are not booleans still refuse one."""
    assert load_train_config(None, ["run.compile=false"]).run.compile == "false"
    assert load_train_config(None, ["run.compile=true"]).run.compile == "true"
    with pytest.raises(ConfigError, match="run.dtype: expected str, got False"):
        load_train_config(None, ["run.dtype=false"])
    with pytest.raises(ConfigError, match="run.compile: expected str, got 3"):
        load_train_config(None, ["run.compile=3"])


@pytest.mark.parametrize("override, message", [
    ("run.stepz=3", r"unknown key\(s\) stepz"), ("run.steps=many", "run.steps: expected int"),
    ("run.steps=0", "steps must be >= 1"), ("optim=3", "optim: expected a mapping"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SFTConfig, None, [override])
