"""A tiny randomly initialised Llama with a byte-level BPE tokenizer and a ChatML chat template, as the two
formats post-training imports: a Hugging Face folder (`save_pretrained`) and a GGUF file written the way
llama.cpp's converter writes one (its q/k rows permuted, the tokenizer in the header). Built from nothing, in a
second; the same weights and tokenizer in both, so each loads to the same logits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
HEADS, KV_HEADS = 4, 2
_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def build(folder: Path, text: str, seed: int = 0) -> tuple[Path, Path]:
    """(HF folder, GGUF file) under `folder`, the tokenizer's 512 pieces learnt from `text`."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=HEADS,
                      num_key_value_heads=KV_HEADS, intermediate_size=64, max_position_embeddings=256,
                      pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    hf = folder / "tiny-hf"
    model.save_pretrained(hf)
    fast.save_pretrained(hf)

    path = folder / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10_000.0)
    writer.add_rope_dimension_count(32 // HEADS)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(fast))
    vocab = sorted(fast.get_vocab().items(), key=lambda kv: kv[1])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([piece for piece, _ in vocab])
    writer.add_token_types([3 if piece in SPECIAL else 1 for piece, _ in vocab])
    merges = json.loads(fast.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(fast.bos_token_id)
    writer.add_eos_token_id(fast.eos_token_id)
    writer.add_pad_token_id(fast.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TEMPLATE)
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    for name, tensor in model.state_dict().items():
        if name in top:
            target = top[name]
        else:
            _, _, index, rest = name.split(".", 3)
            target = f"blk.{index}.{_GGUF_NAMES[rest.rsplit('.', 1)[0]]}.weight"
        array = tensor.numpy().astype(np.float32)
        heads = HEADS if "q_proj" in name else KV_HEADS if "k_proj" in name else 0
        if heads:                                # llama.cpp's layout of q and k rows
            array = array.reshape(heads, 2, array.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(array.shape)
        writer.add_tensor(target, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf, path
