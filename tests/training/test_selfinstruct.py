"""Self-Instruct's filters on real seed tasks: ROUGE-L, near-duplicates, blocked keywords, length, replies."""
import pytest

from training.post.selfinstruct import instruction_problem, read_seed_instructions, reply_problem, request, rouge_l, words


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat lay on a mat" = the cat on mat (4): P = 4/6, R = 4/6
    assert rouge_l(words("the cat sat on the mat"), words("the cat lay on a mat")) == pytest.approx(4 / 6)
    assert rouge_l(["a", "b"], ["c"]) == 0.0 and rouge_l([], ["a"]) == 0.0
    assert rouge_l(["a", "b", "c"], ["a", "b", "c"]) == 1.0


def test_filters_on_the_seed_tasks(data):
    seeds = read_seed_instructions(data / "sft/self_instruct_seed_tasks.jsonl")
    assert len(seeds) == 175
    kept = [words(s) for s in seeds]
    # the seeds are diverse among themselves (the paper's pool): few pairs reach 0.7
    assert instruction_problem(seeds[0], kept[1:]) is None
    assert instruction_problem(seeds[0], kept) == "near_duplicate"
    reworded = seeds[3].replace(".", "").replace("?", "") + " please"
    assert instruction_problem(reworded, kept) == "near_duplicate"
    assert instruction_problem("Draw a picture of a cat sitting on a mat.", kept) == "blocked_keyword"
    assert instruction_problem("Summarise.", kept) == "length"
    assert instruction_problem("1. List three rivers in Europe.", kept) == "not_a_letter_first"
    assert instruction_problem("List three rivers in Europe and their lengths.", kept) is None
    assert reply_problem("List rivers.", "", True) == "empty_reply"
    assert reply_problem("List rivers.", "The Danube, the Rhine", False) == "unfinished_reply"
    assert reply_problem("List rivers.", "list rivers", True) == "reply_copies_instruction"
    assert request(["A.", "B."]).endswith("Task 1: A.\nTask 2: B.\nTask 3:")


def test_runs_on_a_model_of_ours(small_base, tmp_path, data):
    """Self-Instruct on one of our runs (our tokenizer, our role tokens), not only on an HF or GGUF model: it once
    failed at once measuring the vocabulary. A 0.4 M-parameter model writes nothing usable; every candidate
    it tried is counted by outcome."""
    from training.post.selfinstruct import SelfInstructConfig, run_self_instruct
    out = tmp_path / "synthetic.jsonl"
    stats = run_self_instruct(str(small_base), read_seed_instructions(data / "sft/self_instruct_seed_tasks.jsonl"), out,
                              SelfInstructConfig(n=1, max_rounds=2, instruction_tokens=8, reply_tokens=8),
                              log=lambda *a: None)
    assert stats["candidates"] == sum(stats["outcomes"].values()) >= 2 and out.is_file()
