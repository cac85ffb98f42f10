"""Chat prompts and replies: our models' role tokens, or an imported model's own chat template.

Our format (training/post/conversation.py): `</s> [<|system|> … <|end|>] <|user|> … <|end|> <|assistant|>`, the reply ending at
`<|end|>` (then EOS). An HF or GGUF model brings its template (`tokenizer.apply_chat_template`, e.g. SmolLM2's
`<|im_start|>user … <|im_end|>`); its reply ends at the tokenizer's EOS.
"""
from __future__ import annotations

from training.generate import generate
from training.post.conversation import encode_prompt


def _raw(tokenizer):
    """The tokenizer under training/lm.py's wrappers."""
    return getattr(tokenizer, "tok", tokenizer)


def is_templated(tokenizer) -> bool:
    return hasattr(_raw(tokenizer), "apply_chat_template")


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of `messages` followed by the opening of an assistant turn."""
    raw = _raw(tokenizer)
    if is_templated(raw):
        if not getattr(raw, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template")
        ids = raw.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return encode_prompt(raw, messages)


def stop_ids(tokenizer) -> set[int]:
    raw = _raw(tokenizer)
    stops = {raw.eos_token_id} if is_templated(raw) else {raw.eos_id, raw.roles["<|end|>"]}
    return {i for i in stops if i is not None}


def reply_text(tokenizer, ids: list[int]) -> str:
    """The reply's text, without its stop token."""
    stops = stop_ids(tokenizer)
    return _raw(tokenizer).decode([i for i in ids if i not in stops]).strip()


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, temperature: float = 0.7,
          top_k: int = 0, top_p: float = 0.95, seed: int | None = None) -> tuple[str, list[int]]:
    """(text, token ids incl. a stop token if one was produced) of the assistant's next turn."""
    prompt = chat_prompt(tokenizer, messages)
    room = model.cfg.max_seq_len - max_new_tokens
    if len(prompt) > room:
        prompt = prompt[-max(1, room):]           # keep the end of a long conversation
    ids = generate(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id=stop_ids(tokenizer), seed=seed)
    return reply_text(tokenizer, ids), ids
