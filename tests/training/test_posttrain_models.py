"""`refinery sft | reward | dpo | ppo` on imported models: a Hugging Face Llama folder and a GGUF file, with and
without LoRA. Each result must load in transformers (and PEFT, for adapters alone) with the logits of the
run's own final checkpoint, and training must have moved it."""
from __future__ import annotations

import gzip
import json

import gguf
import pytest
import torch
from safetensors.torch import save_file

from pipeline.app.cli import main
from tests.training.tiny_llama import build
from training.checkpoint import load_model_weights
from training.hf import adapter_base, imported, load_model
from training.post.reward import load_reward_model

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("imported")
    alpaca = json.loads((data / "sft" / "alpaca_data_1k.json").read_text())
    text = "\n".join(f"{r['instruction']} {r['input']} {r['output']}" for r in alpaca)
    hf, gguf = build(root, text)
    sft = root / "sft.json"
    sft.write_text(json.dumps([r for r in alpaca if len(r["output"]) < 200][:30]))
    lines = gzip.decompress((data / "preference/hh-rlhf/helpful-base/test.jsonl.gz").read_bytes()).decode().splitlines()
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(line + "\n" for line in [x for x in lines if len(x) < 700][:40]))
    return {"hf": hf, "gguf": gguf, "sft": sft, "pairs": pairs}


def _from_pretrained(cls, spec, **kw):
    path = imported(spec)
    if path.suffix == ".gguf":
        return cls.from_pretrained(str(path.parent), gguf_file=path.name, **kw).eval()
    return cls.from_pretrained(str(path), **kw).eval()


def _ids(n: int = 24, vocab: int = 512) -> torch.Tensor:
    return torch.randint(3, vocab, (2, n), generator=torch.Generator().manual_seed(n))


def _check_language_model(run, start) -> None:
    """RUN/model (merged or full) or RUN/adapter on its base: transformers' logits == the final checkpoint's,
    and != the starting model's."""
    ours = load_model_weights(run).eval()
    x = _ids()
    with torch.no_grad():
        expected = ours(x).logits
        if (run / "model" / "config.json").is_file():
            theirs = _from_pretrained(transformers.LlamaForCausalLM, run / "model")(x).logits
        else:
            base = _from_pretrained(transformers.LlamaForCausalLM, adapter_base(run / "adapter"))
            theirs = peft.PeftModel.from_pretrained(base, str(run / "adapter")).eval()(x).logits
        before = load_model(start).eval()(x).logits
    assert (theirs - expected).abs().max() < 1e-4
    assert (before - expected).abs().max() > 1e-6


def _check_reward_model(run) -> None:
    ours = load_reward_model(run / "checkpoints" / "latest")
    x = _ids()
    with torch.no_grad():
        expected = ours(x, torch.tensor([x.shape[1]] * 2))
        if (run / "model" / "config.json").is_file():
            hf = _from_pretrained(transformers.LlamaForSequenceClassification, run / "model")
        else:
            base = _from_pretrained(transformers.LlamaForSequenceClassification, adapter_base(run / "adapter"),
                                    num_labels=1)
            hf = peft.PeftModel.from_pretrained(base, str(run / "adapter")).eval()
        theirs = hf(x).logits[:, 0]
        again = load_reward_model(run)(x, torch.tensor([x.shape[1]] * 2))       # RUN itself, as ppo reads it
    assert (theirs - expected).abs().max() < 1e-4 and (again - expected).abs().max() < 1e-5
    assert expected.abs().max() > 0                       # the head started at zero: it learnt something


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_post_training_an_imported_model(tiny, source, lora, tmp_path):
    start = tiny[source]
    common = ["--set", "run.progress=false", "--set", "run.batch_size=2", "--set", "optim.lr=3e-3",
              "--set", "optim.warmup_steps=0"]
    steps = ["--set", "run.steps=3", "--set", "data.seq_len=128"]
    small = ["--set", "lora.rank=4", "--set", "lora.alpha=8"] if lora else []
    sft, reward, dpo, ppo = (tmp_path / name for name in ("sft", "reward", "dpo", "ppo"))
    assert main(["sft", "--model", str(start), "--data", str(tiny["sft"]), "--output", str(sft), *common, *steps,
                 *small, *(["--lora", "--merge"] if lora else [])]) == 0
    assert main(["reward", "--model", str(start), "--pairs", str(tiny["pairs"]), "--output", str(reward), *common,
                 *steps, *small, "--set", "data.limit=30", *(["--lora"] if lora else [])]) == 0
    assert main(["dpo", "--model", str(sft), "--pairs", str(tiny["pairs"]), "--output", str(dpo), *common, *steps,
                 *small, "--set", "data.limit=30", "--set", "lengths.prompts=2", "--set", "lengths.max_new_tokens=8",
                 *(["--lora"] if lora else [])]) == 0
    assert main(["ppo", "--model", str(dpo), "--reward-model", str(reward), "--prompts", str(tiny["pairs"]),
                 "--output", str(ppo), *common, *small, "--set", "ppo.iterations=2", "--set", "ppo.rollouts=4",
                 "--set", "ppo.minibatch=2", "--set", "data.limit=30", "--set", "sampling.max_new_tokens=8",
                 "--set", "data.held_out_prompts=2", *(["--lora", "--merge"] if lora else [])]) == 0

    _check_language_model(sft, start)
    _check_language_model(dpo, sft)
    _check_language_model(ppo, dpo)
    _check_reward_model(reward)
    for run in (sft, reward, dpo, ppo):
        kept = {p.name for p in run.iterdir()}
        assert ("adapter" in kept) == lora
        assert ("model" in kept) == (not lora or run in (sft, ppo))      # --merge on sft and ppo only
        manifest = json.loads((run / "manifest.json").read_text())
        assert all(name in manifest["files"] for name in manifest["files"])
        assert any(name.startswith(("model/", "adapter/")) for name in manifest["files"])
    if lora:                                # adapters only: each layer moved by a matrix of rank <= 4
        base = load_model_weights(sft / "checkpoints" / "latest").state_dict()
        moved = load_model_weights(dpo).state_dict()
        delta = moved["layers.0.attn.q.weight"] - base["layers.0.attn.q.weight"]
        assert 0 < torch.linalg.matrix_rank(delta) <= 4
        assert torch.equal(moved["layers.0.attn_norm.weight"], base["layers.0.attn_norm.weight"])


def test_a_model_we_cannot_train_says_what_is_supported(tmp_path, capsys):
    """Another architecture, a mixture of experts, a GGUF of another architecture, a file that is not a GGUF: each
    refused by name, saying what is supported, before anything is written."""
    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"))
    moe = tmp_path / "mixtral"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({"model_type": "mixtral", "num_local_experts": 8}))
    save_file({"x": torch.zeros(1)}, str(moe / "model.safetensors"))
    writer = gguf.GGUFWriter(str(tmp_path / "qwen.gguf"), "qwen2")
    writer.add_tensor("token_embd.weight", torch.zeros(4, 4).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file" * 10)
    for model, says in ((folder, "model_type 'qwen2' (Qwen2ForCausalLM) is not supported"),
                        (moe, "a mixture-of-experts model"),
                        (tmp_path / "qwen.gguf", "qwen.gguf: architecture 'qwen2' is not supported"),
                        (tmp_path / "junk.gguf", "junk.gguf: not a readable GGUF file")):
        assert main(["sft", "--model", str(model), "--data", str(tmp_path / "x.json"), "--output",
                     str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
        assert "Llama-architecture models" in err or "junk" in str(model)
        assert not (tmp_path / "out").exists()
