"""Benchmarks as lm-evaluation-harness poses them, log-likelihood scoring, sliding-window bits per byte, and
`refinery eval` on a model trained on the sample crawl."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from pipeline.app.cli import main
from training.eval.evaluate import WIKITEXT, score_task, wikitext_detokenize, wikitext_documents, wikitext_harness
from training.eval.tasks import TASKS, Item, Task, load_task
from training.hf import load_model
from training.lm import _BATCH_COST, _KEY_TOKENS, LM, _SentencePiece, cheapest_batches, shared_prefixes
from training.model import ModelConfig, Transformer
from training.tokenizer import Tokenizer


@pytest.mark.parametrize("name, items, choices", [("arc_easy", 2376, None), ("arc_challenge", 1172, None),
                                                  ("hellaswag", 10042, 4), ("piqa", 1838, 2), ("openbookqa", 500, 4),
                                                  ("copa", 100, 2), ("winogrande", 1267, 2), ("lambada", 5153, 1),
                                                  ("boolq", 3270, 2), ("mmlu", 14042, 4), ("mmlu_cloze", 14042, 4)])
def test_every_task_loads_whole(data, name, items, choices):
    task = load_task(name, data)
    assert len(task.items) == items
    for item in task.items[:50]:
        assert choices is None or len(item.requests) == choices
        assert 0 <= item.gold < len(item.requests)
        assert all(cont.startswith(" ") and not ctx.endswith(" ") for ctx, cont in item.requests)


def test_harness_prompts(data):
    arc = load_task("arc_easy", data).items[0]
    assert arc.requests[0] == ("Question: Which statement best explains why photosynthesis is the foundation of "
                               "most food webs?\nAnswer:", " Sunlight is the source of energy for nearly all ecosystems.")
    copa = load_task("copa", data).items[0]
    assert copa.requests[1] == ("The man turned on the faucet, therefore", " water flowed from the spout.")
    wino = load_task("winogrande", data).items[0]
    assert [c for c, _ in wino.requests] == ["Sarah was a much better surgeon than Maria so Sarah",
                                             "Sarah was a much better surgeon than Maria so Maria"]
    assert wino.requests[0][1] == wino.requests[1][1] == " always got the easier cases."
    hella = load_task("hellaswag", data).items[0]
    assert hella.requests[0][0] == "Roof shingle removal: A man is sitting on a roof. he" and hella.gold == 3
    lambada = load_task("lambada", data).items[0]
    assert lambada.kind == "greedy" and lambada.requests[0][1] == " signs"


def test_mmlu_few_shot_uses_the_dev_examples_in_order(data):
    task = load_task("mmlu", data, shots=5, limit=2)
    assert len(task.items) == 57 * 2 and task.notes["subjects"] == 57
    first = task.items[0]
    assert first.group == "abstract_algebra"
    context = first.requests[0][0]
    assert context.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n"
                              "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\n"
                              "Answer: B\n\n")
    assert context.count("\nAnswer:") == 6 and context.endswith("\nAnswer:")
    assert [c for _, c in first.requests] == [" A", " B", " C", " D"]
    cloze = load_task("mmlu_cloze", data, shots=0, limit=1).items[0]
    assert "\nA. " not in cloze.requests[0][0] and cloze.requests[0][1] == " 0"
    with pytest.raises(ValueError, match="shots must be 0-5"):
        load_task("mmlu", data, shots=6)
    with pytest.raises(ValueError, match="unknown task"):
        load_task("squad", data)
    # one subject by the harness's task name: the same items as that subject's share of `mmlu`
    anatomy = load_task("mmlu_anatomy", data, shots=1, limit=3)
    whole = [i for i in load_task("mmlu", data, shots=1, limit=3).items if i.group == "anatomy"]
    assert anatomy.name == "mmlu_anatomy" and [i.requests for i in anatomy.items] == [i.requests for i in whole]
    with pytest.raises(ValueError, match="unknown task mmlu_anatomyy.*known: abstract_algebra, anatomy"):
        load_task("mmlu_anatomyy", data)


def test_other_tasks_take_their_first_items_as_shots(data):
    zero, two = load_task("copa", data), load_task("copa", data, shots=2)
    assert len(two.items) == 98 and two.items[0].gold == zero.items[2].gold
    assert two.items[0].requests[0][0].startswith(zero.items[0].requests[0][0] + zero.items[0].requests[
        zero.items[0].gold][1] + "\n\n")


@pytest.fixture(scope="module")
def tiny_lm(sample_tokens):
    torch.manual_seed(0)
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    model = Transformer(ModelConfig(vocab_size=tokenizer.vocab_size, dim=32, n_layers=1, n_heads=4, n_kv_heads=2,
                                    max_seq_len=64)).eval()
    return LM(model=model, tokenizer=_SentencePiece(tokenizer), name="tiny", batch_size=3)


def test_loglikelihood_is_the_sum_over_continuation_tokens(tiny_lm):
    requests = [("Question: what is the capital of France?\nAnswer:", " Paris"),
                ("The following are multiple choice questions.\nAnswer: ", "B"),      # trailing space moves over
                ("A", " rather longer continuation with several tokens in it")]
    scores = tiny_lm.loglikelihood(requests)
    for (context, continuation), (ll, greedy) in zip(requests, scores):
        context = context.rstrip(" ")
        continuation = (" " if requests[1][0].endswith(" ") and continuation == "B" else "") + continuation
        ctx = [3] + tiny_lm.encode(context)
        whole = [3] + tiny_lm.encode(context + continuation)
        with torch.no_grad():
            logprobs = F.log_softmax(tiny_lm.model(torch.tensor([whole[:-1]])).logits[0], dim=-1)
        targets = whole[len(ctx):]
        positions = range(len(ctx) - 1, len(whole) - 1)
        expected = sum(float(logprobs[p, t]) for p, t in zip(positions, targets))
        assert ll == pytest.approx(expected, abs=1e-4)
        assert greedy == all(int(logprobs[p].argmax()) == t for p, t in zip(positions, targets))
    one_by_one = [LM(tiny_lm.model, tiny_lm.tokenizer, "t", batch_size=1).loglikelihood([r])[0] for r in requests]
    assert [s[0] for s in one_by_one] == pytest.approx([s[0] for s in scores], abs=1e-4)


@pytest.fixture(scope="module")
def tiny_llama(sample_tokens, tmp_path_factory):
    """A randomly initialised LlamaForCausalLM (GQA, untied head, 2 layers) saved as an HF folder, our model
    loaded from that folder, and the sample tokenizer (its vocabulary sizes the model)."""
    import transformers      # heavy: only this fixture builds an HF model
    tokenizer = Tokenizer(str(sample_tokens / "tokenizer"))
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=160,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=96, rms_norm_eps=1e-5, tie_word_embeddings=False)
    reference = transformers.LlamaForCausalLM(config).eval()
    folder = tmp_path_factory.mktemp("llama") / "tiny"
    reference.save_pretrained(folder)
    return reference, load_model(folder).eval(), _SentencePiece(tokenizer)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_loglikelihoods_equal_llama_for_causal_lm_cached_and_not(tiny_llama, data, prefix_cache):
    """Per choice, our log-likelihood (each context once and its choices from its keys and values, or each
    input whole) equals the sum over the continuation's tokens of a direct LlamaForCausalLM forward; batches
    mix contexts of different lengths, single- and many-token continuations, and inputs past the window."""
    reference, model, tokenizer = tiny_llama
    lm = LM(model=model, tokenizer=tokenizer, name="tiny-llama", batch_size=7, prefix_cache=prefix_cache)
    requests = [r for name in ("arc_easy", "hellaswag", "mmlu") for item in load_task(name, data, limit=4).items
                for r in item.requests]
    requests += [r for item in load_task("copa", data, shots=1, limit=5).items for r in item.requests]
    requests.append(("word " * 150, " past the window"))                   # longer than the 96-token context
    scores = lm.loglikelihood(requests)
    for (context, continuation), (ll, greedy) in zip(requests, scores):
        ctx, cont = lm.tokens(context, continuation)
        whole = (ctx + cont)[-97:]
        with torch.no_grad():
            logprobs = F.log_softmax(reference(torch.tensor([whole[:-1]])).logits[0].float(), dim=-1)
        n = min(len(cont), len(whole) - 1)
        positions = range(len(whole) - 1 - n, len(whole) - 1)
        expected = sum(float(logprobs[p, t]) for p, t in zip(positions, whole[-n:]))
        assert ll == pytest.approx(expected, abs=2e-4), (context[-40:], continuation)
        assert greedy == all(int(logprobs[p].argmax()) == t for p, t in zip(positions, whole[-n:]))
    assert len({len(lm.tokens(*r)[0]) for r in requests}) > 5 and max(len(lm.tokens(*r)[1]) for r in requests) > 10
    # the few-shot example and MMLU's instructions are prefixes several contexts share: run once for all
    contexts = sorted({tuple(lm.tokens(*r)[0]) for r in requests if sum(map(len, lm.tokens(*r))) <= 97})
    assert sum(n >= 20 for n in shared_prefixes(contexts)) >= 4 and sum(map(bool, shared_prefixes(contexts))) >= 50


def test_bfloat16_scores_are_the_float32_ones_to_within_bf16_rounding(tiny_llama, data):
    """--dtype bfloat16 runs the model under bf16 autocast: every log-likelihood moves, by bf16 rounding only;
    float32 stays what the harness computes (the test above)."""
    _, model, tokenizer = tiny_llama
    requests = [r for item in load_task("arc_easy", data, limit=6).items for r in item.requests]
    lm = LM(model=model, tokenizer=tokenizer, name="t", batch_size=4)
    full = [ll for ll, _ in lm.loglikelihood(requests)]
    lm.dtype = "bfloat16"
    half = [ll for ll, _ in lm.loglikelihood(requests)]
    assert half != full
    assert half == pytest.approx(full, abs=0.05 * max(abs(x) for x in full))
    nll_full = LM(model=model, tokenizer=tokenizer, name="t").rolling_nll("word " * 200)
    assert lm.rolling_nll("word " * 200)[0] == pytest.approx(nll_full[0], rel=0.05)
    lm.dtype = "float16"
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        lm.loglikelihood(requests)


def test_the_prefix_cache_runs_each_context_once(tiny_llama, data):
    """ARC's answers share their question: with the cache the model embeds (padding included) under 60 % of the
    tokens it embeds running each input whole, for the same log-likelihoods."""
    _, model, tokenizer = tiny_llama
    requests = [r for item in load_task("arc_easy", data, limit=12).items for r in item.requests]
    seen = []
    hook = model.embed.register_forward_hook(lambda module, args, out: seen.append(args[0].numel()))
    cached = LM(model=model, tokenizer=tokenizer, name="t", batch_size=8).loglikelihood(requests)
    tokens_cached, seen[:] = sum(seen), []
    whole = LM(model=model, tokenizer=tokenizer, name="t", batch_size=8, prefix_cache=False).loglikelihood(requests)
    hook.remove()
    assert [c[0] for c in cached] == pytest.approx([w[0] for w in whole], abs=2e-4)
    assert tokens_cached < 0.6 * sum(seen)


def test_cheapest_batches_is_the_least_padding_and_overhead():
    """Against every way of cutting short lists (brute force): the cut costs the least, batches cover the list
    in order, keep to `most` rows and to the key budget."""
    import itertools
    import random
    rng = random.Random(0)

    def cost(lengths, batches):
        return sum(_BATCH_COST + (end - start) * lengths[start] for start, end in batches)
    for trial in range(60):
        n, most = rng.randint(1, 9), rng.randint(1, 5)
        lengths = sorted((rng.choice([rng.randint(1, 8), rng.randint(20, 90)]) for _ in range(n)), reverse=True)
        keys = [rng.randint(1, 2000) for _ in range(n)] if trial % 2 else None
        batches = cheapest_batches(lengths, most, keys)
        assert [b[0] for b in batches] == [0] + [b[1] for b in batches[:-1]] and batches[-1][1] == n
        feasible = []
        for cuts in itertools.product([False, True], repeat=n - 1):
            bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
            runs = list(zip(bounds, bounds[1:]))
            if all(e - s <= most and (keys is None or e - s == 1 or
                                      (e - s) * (max(keys[s:e]) + lengths[s]) <= _KEY_TOKENS) for s, e in runs):
                feasible.append(runs)
        assert batches in feasible
        assert cost(lengths, batches) == min(cost(lengths, runs) for runs in feasible)
    assert cheapest_batches([], 4) == []
    assert cheapest_batches([50] * 8, 4) == [(0, 4), (4, 8)]             # even lengths: full batches


def test_rolling_nll_scores_every_token_once(tiny_lm, data):
    text = (data / "text/wikitext-2-raw-v1.test.txt").read_text(encoding="utf-8")[:3000]
    ids = [3] + tiny_lm.encode(text)
    nll, scored = tiny_lm.rolling_nll(text, window=64, stride=16)
    assert scored == len(ids) - 1
    short = text[:150]
    short_ids = [3] + tiny_lm.encode(short)
    assert len(short_ids) <= 65
    with torch.no_grad():
        logprobs = F.log_softmax(tiny_lm.model(torch.tensor([short_ids[:-1]])).logits[0], dim=-1)
    direct = -sum(float(logprobs[i, t]) for i, t in enumerate(short_ids[1:]))
    assert tiny_lm.rolling_nll(short)[0] == pytest.approx(direct, abs=1e-3)


def test_acc_norm_divides_by_the_choice_without_its_joining_space():
    """The harness's acc_norm: log-likelihood / len(choice). With " A" at -1.2 and " BB" at -2.0 that picks BB
    (-1.2 vs -1.0); dividing by the continuation's length (" A": 2, " BB": 3) would pick A (-0.6 vs -0.67)."""
    class Scores:                         # the model's log-likelihoods, fixed: the test is about the metric
        def loglikelihood(self, requests, progress=None):
            return [(-1.2, False), (-2.0, False)]
    task = Task("toy", [Item([("Q:", " A"), ("Q:", " BB")], gold=1)])
    samples = []
    result = score_task(Scores(), task, samples=samples)
    assert result["acc"] == 0.0 and result["acc_norm"] == 1.0
    assert samples[0]["choice_chars"] == [1, 2] and samples[0]["pred_norm"] == 1


def test_wikitext_detokenizer_undoes_the_tokenised_spacing():
    raw = (" = Early life = \n Born in 1 @,@ 712 , the 3 @.@ 5 m @-@ tall poet 's work ( \" Ode \" ) was read ; "
           "it 's 20 \u00b0 C . \n = = Career = = \n")
    assert wikitext_detokenize(raw) == (" = Early life =\nBorn in 1,712, the 3.5 m-tall poet's work (\"Ode\") was "
                                        "read; it's 20\u00b0C.\n== Career ==\n")


def test_wikitext_the_harness_way_is_disjoint_windows_per_article(tiny_lm, data):
    """Each article detokenised and scored alone: its first window after the start token, each later one with a
    single token of context; equal to a direct computation of exactly those windows. Words and bytes are those of
    the article before detokenising (the harness's process_results counts them on doc["page"])."""
    articles = wikitext_documents((data / WIKITEXT).read_text(encoding="utf-8"))[1:3]
    result = wikitext_harness(tiny_lm, [a[:1500] for a in articles])
    context = tiny_lm.max_length
    total = words = nbytes = 0
    for article in articles:
        target = wikitext_detokenize(article[:1500])
        tokens = tiny_lm.encode(target)
        assert len(tokens) > 2 * context                  # several windows
        first = min(context, len(tokens))
        windows = [([3] + tokens[:first - 1], tokens[:first])]          # (input, the tokens its end predicts)
        done = first
        while done < len(tokens):
            n = min(len(tokens) - done, context)
            end = done + n
            windows.append((tokens[end - context - 1:end - 1], tokens[end - n:end]))
            done = end
        with torch.no_grad():
            for inputs, predicted in windows:
                logprobs = F.log_softmax(tiny_lm.model(torch.tensor([inputs])).logits[0], dim=-1)[-len(predicted):]
                total -= sum(float(logprobs[i, t]) for i, t in enumerate(predicted))
        words += len(re.split(r"\s+", article[:1500]))      # counted on the article as stored, as the harness
        nbytes += len(article[:1500].encode("utf-8"))          # does (its process_results), not on what is scored
    assert words != sum(len(re.split(r"\s+", wikitext_detokenize(a[:1500]))) for a in articles)
    assert result["documents"] == 2 and result["words"] == words and result["bytes"] == nbytes
    assert result["nll"] == pytest.approx(total, rel=1e-5)
    assert result["word_perplexity"] == pytest.approx(math.exp(total / words), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(total / nbytes / math.log(2), rel=1e-5)


def test_wikitext_splits_into_its_62_articles(data):
    text = (data / WIKITEXT).read_text(encoding="utf-8")
    articles = wikitext_documents(text)
    assert len(articles) == 62 and "".join(articles) == text
    assert articles[1].startswith(" = Du Fu = ") and all(" = " in a.split("\n", 1)[0] for a in articles[1:])


def test_scores_become_accuracy(tiny_lm, data):
    task = load_task("copa", data, limit=30)
    samples = []
    result = score_task(tiny_lm, task, samples=samples)
    # each logged item holds the log-likelihoods the model gives its requests, scored on their own
    assert len(samples) == 30 and samples[3]["requests"] == [list(r) for r in task.items[3].requests]
    alone = [ll for ll, _ in tiny_lm.loglikelihood(task.items[3].requests)]
    assert samples[3]["loglikelihoods"] == pytest.approx(alone, abs=1e-4)
    assert result["n"] == 30 and 0 <= result["acc"] <= 1
    assert result["acc_stderr"] == pytest.approx(math.sqrt(result["acc"] * (1 - result["acc"]) / 29))


def test_eval_command_on_a_trained_checkpoint(sample_tokens, data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--set", f"data.tokens={sample_tokens}", "--set", f"run.out_dir={run}",
                 "--set", "data.seq_len=64", "--set", "model.max_seq_len=64", "--set", "model.dim=32",
                 "--set", "model.n_layers=1", "--set", "model.n_heads=4", "--set", "model.n_kv_heads=2",
                 "--set", "run.steps=30", "--set", "run.progress=false", "--set", "run.batch_size=8"]) == 0
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(run), "--tasks", "wikitext,copa,lambada,mmlu", "--limit", "10",
                 "--text-bytes", "20000", "--output", str(out), "--no-progress",
                 "--log-samples", str(tmp_path / "samples.jsonl")]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"wikitext", "copa", "lambada", "mmlu", "_meta"}
    assert 1.0 < results["wikitext"]["bpb"] < 6.0 and results["wikitext"]["bytes"] == 20000
    assert results["copa"]["n"] == 10 and results["mmlu"]["n"] == 570 and "ppl" in results["lambada"]
    assert out.with_suffix(".md").read_text().startswith("| task | n | acc |")
    # --log-samples: a row per item whose verdicts add up to the table's figures
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for task in ("copa", "lambada", "mmlu"):
        mine = [r for r in rows if r["task"] == task]
        assert len(mine) == results[task]["n"]
        assert sum(r["acc"] for r in mine) / len(mine) == pytest.approx(results[task]["acc"])
    copa = [r for r in rows if r["task"] == "copa"]
    assert all(r["pred"] == max(range(2), key=lambda k: r["loglikelihoods"][k]) for r in copa)
    # --limit N takes wikitext's first N articles, scored the harness's way by default; a bar counts its tokens
    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--tasks", "wikitext", "--limit", "2", "--output", str(out)]) == 0
    articles = wikitext_documents((data / WIKITEXT).read_text(encoding="utf-8"))
    wikitext = json.loads(out.read_text())["wikitext"]
    assert wikitext["mode"] == "harness" and wikitext["documents"] == 2
    assert wikitext["bytes"] == sum(len(a.encode("utf-8")) for a in articles[:2])
    assert re.search(r"wikitext: +\d+%\|.*\| \d+/\d+ .*tok/s", capsys.readouterr().err)
    assert main(["eval", "--model", str(run), "--tasks", "wikitext", "--wikitext-mode", "harness",
                 "--text-bytes", "100"]) == 2
    assert "sliding-window mode" in capsys.readouterr().err
    assert main(["eval", "--model", str(run), "--tasks", "nope"]) == 2
    assert "unknown task" in capsys.readouterr().err
    # the same checkpoint generates: greedy is deterministic and continues the prompt
    for _ in range(2):
        assert main(["generate", "--model", str(run), "--prompt", "The city council said", "--temperature", "0",
                     "--max-new-tokens", "12"]) == 0
    first, second = capsys.readouterr().out.strip().split("\n")[-2:]
    assert first == second and first.startswith("The city council said") and len(first) > len("The city council said")
    assert set(TASKS) >= {"arc_easy", "hellaswag", "piqa", "mmlu"}
