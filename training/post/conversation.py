"""Conversations: reading them from the files post-training uses, and encoding them with our role tokens.

Chat format (DESIGN: the role tokens are reserved by the tokenizer):
`</s> [<|system|> … <|end|>] <|user|> … <|end|> <|assistant|> … <|end|> </s>` — training documents follow an
EOS, so conversations start after one too. Labels cover each assistant reply, its `<|end|>` and the final EOS:
the EOS is never masked (otherwise the model never learns to stop) and padding uses the pad id (0), never EOS
(the TRL pitfall, trl #1623).

Files: SFT data (Alpaca JSON, Self-Instruct seed tasks, JSONL `{"messages"}` or `{"prompt", "completion"}`),
preference pairs (`{"chosen", "rejected"}` as hh-rlhf writes them, or with a `"prompt"`), and prompts (the
context of pairs, `{"messages"}`, `{"prompt"}`, `{"instruction"[, "input"]}`, `{"turns"}`, `{"question"}`).
Every reader names the file and line of a row it cannot use.
"""
from __future__ import annotations

import re
from pathlib import Path

from training.files import json_type, read_rows
from training.losses import IGNORE

ROLE_MARKERS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
_TURN = re.compile(r"\n\n(Human|Assistant): ")


# ---------------------------------------------------------------------------------------------- files

def _text(value, path, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{path}, {where}: {key} must be a string, got {json_type(value)}")
    return value


def _messages(value, path, where: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise ValueError(f"{path}, {where}: messages must be a list of {{role, content}}")
    for m in value:
        if m["role"] not in ROLE_MARKERS:
            raise ValueError(f"{path}, {where}: unknown role {m['role']!r} (system, user or assistant)")
    return [{"role": m["role"], "content": _text(m["content"], path, where, "content")} for m in value]


def read_conversations(path: str | Path) -> list[list[dict]]:
    """SFT conversations (lists of {"role", "content"}) from any of the supported files."""
    conversations = []
    for where, row in read_rows(path):
        if "messages" in row:
            conversations.append(_messages(row["messages"], path, where))
        elif "prompt" in row and "completion" in row:
            conversations.append([{"role": "user", "content": _text(row["prompt"], path, where, "prompt")},
                                  {"role": "assistant", "content": _text(row["completion"], path, where,
                                                                         "completion")}])
        elif "instruction" in row and "output" in row:
            conversations.append([{"role": "user", "content": _instruction(row, path, where)},
                                  {"role": "assistant", "content": _text(row["output"], path, where, "output")}])
        elif "instruction" in row and "instances" in row:          # Self-Instruct's seed tasks
            instances = row["instances"]
            if not isinstance(instances, list):
                raise ValueError(f"{path}, {where}: instances must be a list of {{input, output}}, got "
                                 f"{json_type(instances)}")
            for n, instance in enumerate(instances):
                if not isinstance(instance, dict) or "output" not in instance:
                    raise ValueError(f"{path}, {where}: instances[{n}] must be an object with an output")
            for instance in instances:
                conversations.append([{"role": "user", "content": _instruction({**instance, "instruction":
                                                                                row["instruction"]}, path, where)},
                                      {"role": "assistant", "content": _text(instance["output"], path, where,
                                                                             "output")}])
        else:
            raise ValueError(f"{path}, {where}: expected messages, prompt/completion, instruction/output or "
                             f"instruction/instances; got keys {sorted(row)}")
    return conversations


def _instruction(row: dict, path, where: str) -> str:
    text = _text(row["instruction"], path, where, "instruction")
    return text + (f"\n\n{_text(row['input'], path, where, 'input')}" if row.get("input") else "")


def parse_dialogue(text: str) -> list[dict]:
    """hh-rlhf's "\\n\\nHuman: …\\n\\nAssistant: …" as messages."""
    parts = _TURN.split(text)
    return [{"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2])]


def read_pairs(paths: list[str | Path]) -> list[tuple[list[dict], list[dict]]]:
    """(chosen, rejected) conversations; rows `refinery label` marks tie or skip are not pairs."""
    pairs = []
    for path in paths:
        rows = read_rows(path)
        if not rows:
            raise ValueError(f"{path}: no preference pairs in it (empty)")
        for where, row in rows:
            if row.get("label") in ("tie", "skip"):
                continue
            if "chosen" not in row or "rejected" not in row:
                raise ValueError(f"{path}, {where}: expected chosen and rejected, got {sorted(row)}")
            chosen, rejected = (_text(row[k], path, where, k) for k in ("chosen", "rejected"))
            if "prompt" in row:
                prompt = [{"role": "user", "content": _text(row["prompt"], path, where, "prompt")}]
                pairs.append((prompt + [{"role": "assistant", "content": chosen}],
                              prompt + [{"role": "assistant", "content": rejected}]))
            else:
                pairs.append((parse_dialogue(chosen), parse_dialogue(rejected)))
    return pairs


def read_prompts(paths: list[str | Path]) -> list[list[dict]]:
    """Conversations to reply to, each ending with a user turn: the context of preference pairs, or rows with
    messages, prompt, instruction (+ input), turns (the first: MT-Bench, Vicuna bench) or question."""
    prompts = []
    for path in paths:
        rows = read_rows(path)
        if rows and "chosen" in rows[0][1]:
            prompts += [chosen[:-1] for chosen, _ in read_pairs([path])]
            continue
        for where, row in rows:
            if "messages" in row:
                messages = _messages(row["messages"], path, where)
                prompts.append(messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages)
                continue
            if "prompt" in row:
                text = _text(row["prompt"], path, where, "prompt")
            elif "instruction" in row:
                text = _instruction(row, path, where)
            elif row.get("turns"):
                if not isinstance(row["turns"], list):
                    raise ValueError(f"{path}, {where}: turns must be a list of strings, got {json_type(row['turns'])}")
                text = _text(row["turns"][0], path, where, "turns")
            elif "question" in row:
                text = _text(row["question"], path, where, "question")
            else:
                raise ValueError(f"{path}, {where}: expected messages, prompt, instruction, turns, question "
                                 f"or chosen/rejected; got {sorted(row)}")
            prompts.append([{"role": "user", "content": text}])
    return [p for p in prompts if p and p[-1]["role"] == "user"]


# ---------------------------------------------------------------------------------------------- encoding

def raw_tokenizer(tokenizer):
    """The tokenizer under training/lm.py's wrappers."""
    return getattr(tokenizer, "tok", tokenizer)


def is_templated(tokenizer) -> bool:
    """A transformers tokenizer (an imported model's): conversations go through its own chat template."""
    return hasattr(raw_tokenizer(tokenizer), "apply_chat_template")


def pad_id(tokenizer) -> int:
    """The id rows are right-padded with (never scored: labels there are IGNORE, lengths mark the real end)."""
    raw = raw_tokenizer(tokenizer)
    if not is_templated(raw):
        return raw.pad_id
    return next((i for i in (raw.pad_token_id, raw.eos_token_id) if i is not None), 0)


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    """Ids of `messages` through an imported model's chat template (`generation_prompt`: then the opening of
    an assistant turn), without any token added outside the template."""
    raw = raw_tokenizer(tokenizer)
    if not getattr(raw, "chat_template", None):
        raise ValueError("this model's tokenizer has no chat template: conversations cannot be encoded for it")
    ids = raw.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _templated(tokenizer, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """As TRL's SFTTrainer labels a completion: the tokens an assistant turn adds after the generation prompt
    of the conversation before it (for SmolLM2: the reply, `<|im_end|>` and the newline), each turn."""
    ids = render(tokenizer, messages)
    labels = [IGNORE] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = render(tokenizer, messages[:k], generation_prompt=True) if k else []
        end = render(tokenizer, messages[:k + 1])
        if end[:len(start)] != start or ids[:len(end)] != end:
            raise ValueError("this model's chat template does not render a conversation as its turns one after "
                             "another, so the assistant's tokens cannot be labelled")
        labels[len(start):len(end)] = end[len(start):]
    if len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
    if all(label == IGNORE for label in labels):
        return None
    return ids, labels


def encode_conversation(tokenizer, messages: list[dict], max_len: int) -> tuple[list[int], list[int]] | None:
    """(ids, labels) with labels = ids on assistant content, its <|end|> and the final EOS, IGNORE elsewhere;
    None when the first assistant reply would not fit in `max_len`. An imported model's tokenizer: through its
    chat template, labels on what each assistant turn adds."""
    if is_templated(tokenizer):
        return _templated(tokenizer, messages, max_len)
    roles = tokenizer.roles
    ids, labels = [tokenizer.eos_id], [IGNORE]
    for message in messages:
        role = message["role"]
        marker = ROLE_MARKERS.get(role)
        if marker is None:
            raise ValueError(f"unknown role {role!r} (system, user or assistant)")
        body = tokenizer.encode(message["content"]) + [roles["<|end|>"]]
        ids.append(roles[marker])
        labels.append(IGNORE)
        ids.extend(body)
        labels.extend(body if role == "assistant" else [IGNORE] * len(body))
    ids.append(tokenizer.eos_id)
    labels.append(tokenizer.eos_id if messages and messages[-1]["role"] == "assistant" else IGNORE)
    if len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
        if all(label == IGNORE for label in labels):
            return None
    return ids, labels


TRUNCATIONS = ("keep_end", "keep_start", "drop")


def truncated(ids: list[int], seq_len: int, truncation: str = "keep_end") -> slice | None:
    """Which part of a too-long input to keep: keep_end (ours: cut the start, keeping the reply being scored),
    keep_start (TRL's DPO: cut the end), drop (TRL's reward model: None, the example is left out)."""
    if len(ids) <= seq_len:
        return slice(None)
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    return {"keep_end": slice(-seq_len, None), "keep_start": slice(0, seq_len), "drop": None}[truncation]


def encode_reply(tokenizer, messages: list[dict], seq_len: int,
                 truncation: str = "keep_end") -> tuple[list[int], list[int]] | None:
    """(ids, labels) of a conversation with labels on its final assistant reply only (+ `<|end|>` and EOS);
    longer than `seq_len`: cut as `truncation` says (see `truncated`); None if dropped or if no reply token is
    left."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a preference conversation must end with the assistant's reply")
    if is_templated(tokenizer):
        context = render(tokenizer, messages[:-1], generation_prompt=True)
        ids = render(tokenizer, messages)
        if ids[:len(context)] != context:
            raise ValueError("this model's chat template does not render the reply after its prompt, so the reply's "
                             "tokens cannot be labelled")
        labels = [IGNORE] * len(context) + ids[len(context):]
    else:
        context, _ = encode_conversation(tokenizer, messages[:-1], 10 ** 9)
        context = context[:-1]                                    # without the closing EOS
        ids, labels = encode_conversation(tokenizer, messages, 10 ** 9)
        labels = [IGNORE] * len(context) + labels[len(context):]
    keep = truncated(ids, seq_len, truncation)
    if keep is None or all(label == IGNORE for label in labels[keep]):
        return None
    return ids[keep], labels[keep]


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Ids of `messages` followed by the opening of an assistant turn (our role tokens)."""
    ids, _ = encode_conversation(tokenizer, messages, 10 ** 9)
    return ids[:-1] + [tokenizer.roles["<|assistant|>"]]          # drop the closing EOS, open the reply
