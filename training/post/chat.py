"""Chat prompts and replies: our models' role tokens, or an imported model's own chat template.

Our format (training/post/conversation.py): `</s> [<|system|> … <|end|>] <|user|> … <|end|> <|assistant|>`, the reply ending at
`<|end|>` (then EOS). An HF or GGUF model brings its template (`tokenizer.apply_chat_template`, e.g. SmolLM2's
`<|im_start|>user … <|im_end|>`); its reply ends at the tokenizer's EOS.
"""
from __future__ import annotations

from training.generate import generate
from training.post.conversation import encode_prompt, is_templated, raw_tokenizer, render


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of `messages` followed by the opening of an assistant turn."""
    if is_templated(tokenizer):
        return render(tokenizer, messages, generation_prompt=True)
    return encode_prompt(raw_tokenizer(tokenizer), messages)


def reply_closing(tokenizer) -> list[int]:
    """What the chat format puts after an assistant reply's text: `<|end|>` EOS for ours; for an imported model,
    the tokens its template renders after the reply (SmolLM2: `<|im_end|>` and a newline)."""
    raw = raw_tokenizer(tokenizer)
    if not is_templated(raw):
        return [raw.roles["<|end|>"], raw.eos_id]
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    whole = render(raw, probe)
    start = render(raw, probe[:1], generation_prompt=True)
    reply = raw(probe[1]["content"], add_special_tokens=False)["input_ids"]
    if whole[:len(start) + len(reply)] != start + reply:
        raise ValueError("this model's chat template does not render a reply as its own tokens")
    return whole[len(start) + len(reply):]


def stop_ids(tokenizer) -> set[int]:
    raw = raw_tokenizer(tokenizer)
    stops = {raw.eos_token_id} if is_templated(raw) else {raw.eos_id, raw.roles["<|end|>"]}
    return {i for i in stops if i is not None}


def reply_text(tokenizer, ids: list[int]) -> str:
    """The reply's text, without its stop token."""
    stops = stop_ids(tokenizer)
    return raw_tokenizer(tokenizer).decode([i for i in ids if i not in stops]).strip()


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, temperature: float = 0.7,
          top_k: int = 0, top_p: float = 0.95, seed: int | None = None) -> tuple[str, list[int]]:
    """(text, token ids incl. a stop token if one was produced) of the assistant's next turn."""
    prompt = chat_prompt(tokenizer, messages)
    room = model.cfg.max_seq_len - max_new_tokens
    if len(prompt) > room:
        prompt = prompt[-max(1, room):]           # keep the end of a long conversation
    ids = generate(model, prompt, max_new_tokens, temperature, top_k, top_p, eos_id=stop_ids(tokenizer), seed=seed)
    return reply_text(tokenizer, ids), ids
