"""Parity with TRL: our SFT, reward model and DPO against TRL's SFTTrainer, RewardTrainer and DPOTrainer.

A tiny randomly initialised LlamaForCausalLM and a word-level tokenizer with a ChatML-like chat template are
built here (nothing downloaded) and saved as a Hugging Face folder; both sides start from it, see the same
examples in the same order (TRL's sequential sampler; our `data.shuffle=false`) with the same optimiser (AdamW,
β (0.9, 0.999), ε 1e-8, no weight decay, clipping at 1.0, transformers' linear schedule, no warmup), and must
give the same loss at every step: |Δ| ≤ 1e-4 nats (IPO, whose loss is ~25: 1e-4 relative). TRL's conventions
we match by option: IPO averages log-probs over the reply (ours: `length_normalized=true`; our default sums them,
as the DPO and IPO papers write the loss on sequence log-likelihoods); its reward head has no bias and a random
start (ours for an imported model: no bias, zero start; here TRL's is zeroed too).
"""
from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from training.loop import read_log  # noqa: E402
from training.post.dpo import load_dpo_config, train_dpo  # noqa: E402
from training.post.reward import load_reward_config, train_reward  # noqa: E402
from training.post.sft import load_sft_config, sft  # noqa: E402

STEPS, ROWS, LR = 5, 4, 1e-3
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{% endif %}")
WORDS = ("user assistant system what is the color of sky sea grass sun moon night day it blue green red yellow white "
         "black dark bright hello hi there how are you fine thanks good bad name my your a an and or not yes no "
         "maybe one two three four five six seven eight nine ten plus equals big small cat dog bird fish runs "
         "swims flies sleeps eats likes ? . , !").split()
# (question, better answer, worse answer); the first is the one our verbs hold out (every N-th from 0)
EXAMPLES = [
    ("what is the color of the moon ?", "it is white .", "red"),
    ("what is the color of the sky ?", "it is blue .", "the sky is green and red"),
    ("what is the color of the grass ?", "it is green .", "black"),
    ("what is the color of the sun ?", "yellow", "the sun is dark ."),
    ("hello", "hi there ! how are you ?", "no"),
    ("how are you ?", "fine thanks", "bad bad bad"),
    ("one plus one", "two", "seven"),
    ("two plus two equals", "four", "it is nine or ten"),
    ("three plus four", "it is seven .", "five"),
    ("is the cat big ?", "no , the cat is small .", "yes"),
    ("what does the fish do ?", "the fish swims", "the fish flies and sleeps"),
    ("what does the bird do ?", "the bird flies and eats", "it swims"),
    ("is it night ?", "yes it is dark", "maybe"),
    ("is it day ?", "yes , it is bright and the sun is yellow", "no"),
    ("my name is cat", "hello cat", "my name is dog"),
    ("what is your name ?", "my name is assistant", "cat"),
    ("five plus five", "ten", "eight plus one"),
]
HOLD_EVERY = 1000                 # only example 0 is held out on our side


def _tokenizer():
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"], min_frequency=1))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = TEMPLATE
    return fast


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama with its tokenizer, as an HF folder, and the examples as JSONL our readers take."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tmp_path_factory.mktemp("trl") / "tiny-llama"
    tok = _tokenizer()
    torch.manual_seed(1234)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    sft_file, pairs_file = folder.parent / "sft.jsonl", folder.parent / "pairs.jsonl"
    sft_file.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a, _ in EXAMPLES))
    pairs_file.write_text("".join(json.dumps({"prompt": q, "chosen": c, "rejected": r}) + "\n"
                                  for q, c, r in EXAMPLES))
    return {"folder": folder, "tokenizer": tok, "sft": sft_file, "pairs": pairs_file}


def _trl_args(config_class, out, **extra):
    return config_class(output_dir=str(out), per_device_train_batch_size=ROWS, gradient_accumulation_steps=1,
                        max_steps=STEPS, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0,
                        weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
                        logging_steps=1, save_strategy="no", report_to="none", bf16=False, use_cpu=True,
                        activation_checkpointing=False, train_sampling_strategy="sequential",
                        dataloader_num_workers=0, seed=0, disable_tqdm=True, **extra)


def _recording(trainer_class):
    """The TRL trainer, recording each training step's loss unrounded (as compute_loss returns it)."""
    class Recording(trainer_class):
        losses: list

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                self.losses.append(float((out[0] if return_outputs else out).detach()))
            return out
    Recording.losses = []
    return Recording


def _same_optimiser(run_dir) -> list[str]:
    return [f"optim.lr={LR}", "optim.schedule=linear", "optim.min_lr_ratio=0", "optim.warmup_steps=0",
            "optim.beta1=0.9", "optim.beta2=0.999", "optim.eps=1e-8", "optim.weight_decay=0",
            "optim.grad_clip=1.0", f"run.steps={STEPS}", f"run.batch_size={ROWS}", "run.log_every=1",
            "run.eval_every=0", "run.checkpoint_every=0", "run.progress=false", "run.threads=2",
            f"run.out_dir={run_dir}"]


def _our_losses(run_dir) -> list[float]:
    rows, _ = read_log(run_dir / "log.jsonl")
    return [r["loss"] for r in rows]


def _dataset(rows):
    return datasets.Dataset.from_list(rows)


def _trl_losses(trainer_class, model, args, rows, tiny) -> list[float]:
    recording = _recording(trainer_class)
    recording(model=model, args=args, train_dataset=_dataset(rows), processing_class=tiny["tokenizer"]).train()
    return recording.losses


def _our_run(train_fn, loader, overrides: list[str], tiny, run_dir) -> list[float]:
    cfg = loader(None, [f"model={tiny['folder']}", "data.shuffle=false", f"data.held_out_every={HOLD_EVERY}",
                        "data.seq_len=64", *overrides, *_same_optimiser(run_dir)])
    train_fn(cfg, log=lambda *_: None)
    return _our_losses(run_dir)


def _same_losses(ours: list[float], theirs: list[float], tolerance: float) -> None:
    assert len(ours) == len(theirs) == STEPS
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= tolerance, (ours, theirs)
    assert abs(theirs[-1] - theirs[0]) > 1e-3           # the weights moved: later steps test the updates too


def test_sft_matches_trl_sft_trainer_step_for_step(tiny, tmp_path):
    rows = [{"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a, _ in EXAMPLES[1:]]
    theirs = _trl_losses(trl.SFTTrainer, LlamaForCausalLM.from_pretrained(tiny["folder"]),
                         _trl_args(trl.SFTConfig, tmp_path / "trl"), rows, tiny)
    ours = _our_run(sft, load_sft_config, [f"data.data={tiny['sft']}"], tiny, tmp_path / "ours")
    _same_losses(ours, theirs, 1e-4)


def test_reward_model_matches_trl_reward_trainer_step_for_step(tiny, tmp_path):
    rows = [{"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": c}],
             "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}
            for q, c, r in EXAMPLES[1:]]
    model = AutoModelForSequenceClassification.from_pretrained(tiny["folder"], num_labels=1)
    with torch.no_grad():
        model.score.weight.zero_()                       # our head's start (a zero head scores every reply 0)
    theirs = _trl_losses(trl.RewardTrainer, model, _trl_args(trl.RewardConfig, tmp_path / "trl"), rows, tiny)
    ours = _our_run(train_reward, load_reward_config, [f"data.pairs=[{tiny['pairs']}]"], tiny, tmp_path / "ours")
    _same_losses(ours, theirs, 1e-4)


@pytest.mark.parametrize("variant", ["sigmoid", "ipo"])
def test_dpo_matches_trl_dpo_trainer_step_for_step(tiny, tmp_path, variant):
    rows = [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for q, c, r in EXAMPLES[1:]]
    theirs = _trl_losses(trl.DPOTrainer, LlamaForCausalLM.from_pretrained(tiny["folder"]),
                         _trl_args(trl.DPOConfig, tmp_path / "trl", loss_type=variant, beta=0.1), rows, tiny)
    ours = _our_run(train_dpo, load_dpo_config,
                    [f"data.pairs=[{tiny['pairs']}]", f"variant={variant}", "beta=0.1", "lengths.prompts=0",
                     f"length_normalized={'true' if variant == 'ipo' else 'false'}"], tiny, tmp_path / "ours")
    _same_losses(ours, theirs, 1e-4 * (abs(theirs[0]) if variant == "ipo" else 1.0))
