"""Chat: our role-token prompt, the terminal loop, and (in test_hf.py) an imported model's own template."""
import io

from pipeline.app.cli import main
from training.post.chat import chat_prompt, reply_text, stop_ids
from training.post.conversation import encode_conversation
from training.tokenizer import Tokenizer


def test_our_chat_prompt_opens_an_assistant_turn(sample_tokens):
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    ids = chat_prompt(tokenizer, messages)
    conversation, _ = encode_conversation(tokenizer, messages + [{"role": "assistant", "content": "Blue."}], 256)
    assert conversation[:len(ids)] == ids                      # the prompt is exactly the training prefix
    assert ids[-1] == tokenizer.roles["<|assistant|>"]
    assert stop_ids(tokenizer) == {tokenizer.eos_id, tokenizer.roles["<|end|>"]}
    blue = tokenizer.encode("Blue.")
    assert reply_text(tokenizer, blue + [tokenizer.roles["<|end|>"]]) == "Blue."


def test_chat_in_the_terminal(small_base, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n/reset\n\nWhat is a river?\n/quit\nnever read\n"))
    assert main(["chat", "--model", str(small_base), "--max-new-tokens", "8", "--system", "Be brief."]) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2                            # two user turns answered, the empty line skipped
