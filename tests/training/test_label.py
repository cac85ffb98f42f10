"""refinery label: the page in headless Chromium (label with clicks and keys, undo, restart, reload, resume; model
output shown as text, never run), the file it writes as read_pairs reads it, kappa and position bias against hand
computations, access checks, and the two responses a real (tiny) model samples per prompt."""
import contextlib
import gzip
import json
import os
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from pipeline.app.cli import main
from tests import chromium
from training.post.conversation import parse_dialogue, read_pairs
from training.post.label import (
    Item,
    JudgementLog,
    cohen_kappa,
    create_app,
    item_id,
    judgement_row,
    left_response,
    position_bias,
    read_items,
)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def items(data) -> list[Item]:
    """Real instructions, each with hh-rlhf's preferred reply as a and the other as b (single-turn rows)."""
    found = []
    with gzip.open(data / "preference/hh-rlhf/helpful-base/test.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            chosen, rejected = parse_dialogue(row["chosen"]), parse_dialogue(row["rejected"])
            if len(chosen) == len(rejected) == 2 and chosen[1]["content"] != rejected[1]["content"]:
                prompt, a, b = chosen[0]["content"], chosen[1]["content"], rejected[1]["content"]
                found.append(Item(item_id(prompt, a, b), prompt, a, b))
            if len(found) == 6:
                return found
    raise AssertionError("fewer than 6 single-turn pairs")


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("REFINERY_SKIP_BROWSER") == "1":
        pytest.skip("REFINERY_SKIP_BROWSER=1: the headless Chromium tests are skipped on request")
    executable = chromium.find()
    if executable is None:
        pytest.fail(f"no Chromium: {chromium.ASK} (`make test` installs it when run as root)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextlib.contextmanager
def running(app):
    """The app on a free loopback port in a thread, as `refinery label serve` runs it."""
    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_label_undo_restart_reload_resume_in_the_browser(browser, items, tmp_path, small_base):
    items, out = items[:5], tmp_path / "pairs.jsonl"
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))

    def wait_done(n):
        page.wait_for_selector(f"body[data-done='{n}']", state="attached", timeout=10_000)   # CSP: no eval

    def shown():
        item = next(x for x in items if x.id == page.get_attribute("body", "data-item"))
        left, right = page.text_content("#left"), page.text_content("#right")
        assert page.text_content("#prompt") == item.prompt and {left, right} == {item.a, item.b}
        return item, left, right

    with running(create_app(items, JudgementLog(out), labeler="alice")) as url:
        page.goto(url)
        wait_done(0)
        assert page.text_content("#progress") == "0 of 5 judged" and page.text_content("#labeler") == "alice"
        assert "Accuracy" in page.text_content("#guidelines") and page.is_disabled("#undo")
        first = shown()
        page.click("#choose-left")
        wait_done(1)
        second = shown()
        page.keyboard.press("2")
        wait_done(2)
        third = shown()
        page.keyboard.press("3")
        wait_done(3)
        assert len(_rows(out)) == 3                      # on disk at once, not at shutdown
        page.keyboard.press("u")                         # undo the tie on the third item
        wait_done(2)
        assert shown() == third and len(_rows(out)) == 2
    # a restarted server, then a reload: the third item again, its sides unchanged
    with running(create_app(items, JudgementLog(out), labeler="alice")) as url:
        page.goto(url)
        wait_done(2)
        assert shown() == third and page.text_content("#progress") == "2 of 5 judged"
        page.reload()
        wait_done(2)
        assert shown() == third
        page.click("#choose-right")
        wait_done(3)
        fourth = shown()
        page.click("#choose-tie")
        wait_done(4)
        fifth = shown()
        page.keyboard.press("s")
        wait_done(5)
        assert page.is_visible("#finished") and not page.is_visible("#task")
    assert [x[0] for x in (first, second, third, fourth, fifth)] == items and not errors

    rows, expected = _rows(out), []
    for (item, left, right), choice in [(first, "left"), (second, "right"), (third, "right")]:
        chosen, rejected = (left, right) if choice == "left" else (right, left)
        expected.append((item, chosen, rejected))
        row = rows[len(expected) - 1]
        assert (row["prompt"], row["chosen"], row["rejected"]) == (item.prompt, chosen, rejected)
        assert row["label"] == ("a" if chosen == item.a else "b")
        assert row["left"] == ("a" if left == item.a else "b") == left_response(item.id, "alice")
        assert row["item"] == item.id and row["labeler"] == "alice" and row["time"].endswith("+00:00")
    assert [(r["item"], r["label"]) for r in rows[3:]] == [(fourth[0].id, "tie"), (fifth[0].id, "skip")]
    assert not {"chosen", "rejected"} & (rows[3].keys() | rows[4].keys())
    assert read_pairs([out]) == [([{"role": "user", "content": item.prompt}, {"role": "assistant", "content": c}],
                                  [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": r}])
                                 for item, c, r in expected]
    # and refinery dpo trains on the labelled file as it is (every 10th pair held out: 2 train, 1 held out)
    assert main(["dpo", "--model", str(small_base), "--pairs", str(out), "--output", str(tmp_path / "dpo"),
                 "--set", "data.seq_len=128", "--set", "run.steps=2", "--set", "run.batch_size=2",
                 "--set", "run.progress=false", "--set", "lengths.prompts=1", "--set", "lengths.max_new_tokens=4"]) == 0
    assert json.loads((tmp_path / "dpo" / "summary.json").read_text())["pairs"] == {
        "train": 2, "held_out": 1, "skipped_no_final_reply": 0, "skipped_too_long": 0,
        "skipped_same_reply": 0}


@pytest.mark.parametrize("bypass_csp", [False, True], ids=["with-csp", "escaping-alone"])
def test_model_output_is_shown_as_text_and_never_runs(browser, tmp_path, bypass_csp):
    script, img = "<script>window.__xss = 1</script>", '<img src="x" onerror="window.__xss = 2">'
    evil = Item("evil", "<b>Which</b> is safer? & <i>why</i>", f"Sure: {script}", f"{img} done")
    guidelines = "<u>Judge</u> <script>window.__xss = 3</script>"
    labeler = '<img src="y" onerror="window.__xss = 4">'
    out = tmp_path / "pairs.jsonl"
    page = browser.new_context(bypass_csp=bypass_csp).new_page()      # the page's CSP is a second line only
    with running(create_app([evil], JudgementLog(out), guidelines)) as url:
        page.goto(f"{url}/?labeler={quote(labeler)}")
        page.wait_for_selector("body[data-done='0']", state="attached")
        assert page.text_content("#prompt") == evil.prompt
        assert {page.text_content("#left"), page.text_content("#right")} == {evil.a, evil.b}
        assert page.text_content("#guidelines") == guidelines and page.text_content("#labeler") == labeler
        assert page.locator("#prompt *, #left *, #right *, #guidelines *, #labeler *").count() == 0
        page.wait_for_timeout(200)                       # time for a broken image's onerror to fire
        assert page.evaluate("window.__xss") is None
        left = page.text_content("#left")
        page.click("#choose-left")
        page.wait_for_selector("body[data-done='1']", state="attached")
    row = _rows(out)[0]
    assert row["labeler"] == labeler and row["chosen"] == left and {row["chosen"], row["rejected"]} == {evil.a, evil.b}


def test_a_token_guards_every_request(items, tmp_path):
    app = create_app(items, JudgementLog(tmp_path / "p.jsonl"), token="s3cret")
    client = app.test_client()
    assert client.get("/").status_code == 403 and client.get("/api/state").status_code == 403
    assert client.get("/static/label.js").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
    assert client.post("/api/judge", json={"item": items[0].id, "choice": "tie"}).status_code == 403
    response = client.get("/?token=s3cret&labeler=bob")          # once: a cookie, and the token off the URL
    assert response.status_code == 302 and response.location == "/?labeler=bob"
    assert "HttpOnly" in response.headers["Set-Cookie"] and "SameSite=Strict" in response.headers["Set-Cookie"]
    assert client.get("/").status_code == 200 and client.get("/api/state").json["done"] == 0
    other = app.test_client()
    assert other.get("/api/state", headers={"X-Refinery-Token": "s3cret"}).status_code == 200
    assert other.get("/api/state", headers={"X-Refinery-Token": "s3cre"}).status_code == 403


def test_without_a_token_only_loopback_names_are_served(items, tmp_path, capsys):
    client = create_app(items, JudgementLog(tmp_path / "p.jsonl")).test_client()
    for host in ("localhost", "127.0.0.1:8765", "[::1]:8765"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert client.get("/", headers={"Host": "attacker.example:8765"}).status_code == 403     # DNS rebinding
    assert "default-src 'self'" in client.get("/").headers["Content-Security-Policy"]
    responses = tmp_path / "r.jsonl"
    responses.write_text(json.dumps({"prompt": "p", "responses": ["x", "y"]}) + "\n")
    assert main(["label", "serve", "--responses", str(responses), "--output", str(tmp_path / "o.jsonl"),
                 "--host", "0.0.0.0"]) == 2
    assert "give --token" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()


def test_judge_and_undo_requests(items, tmp_path):
    log = JudgementLog(tmp_path / "p.jsonl")
    client = create_app(items, log, labeler="alice").test_client()
    assert client.post("/api/undo", json={}).status_code == 409                       # nothing to undo yet
    state = client.post("/api/judge", json={"item": items[0].id, "choice": "left"}).json
    assert state["done"] == 1 and state["item"]["id"] == items[1].id and state["can_undo"]
    again = client.post("/api/judge", json={"item": items[0].id, "choice": "right"})
    assert again.status_code == 409 and "already judged" in again.json["error"]       # a double click
    assert client.post("/api/judge", json={"item": "nope", "choice": "tie"}).status_code == 400
    assert client.post("/api/judge", json={"item": items[1].id, "choice": "best"}).status_code == 400
    assert client.post("/api/judge", data={"item": items[1].id, "choice": "tie"}).status_code == 415  # a form post
    as_json = {"Content-Type": "application/json"}
    assert client.post("/api/judge", data="{not json", headers=as_json).status_code == 400
    assert client.post("/api/judge", data="[" * 100_000 + "]" * 100_000, headers=as_json).status_code in (400, 413)
    assert client.post("/api/judge", data="[" * 20_000 + "]" * 20_000, headers=as_json).status_code == 400  # deep
    assert client.post("/api/judge", data='["a list"]', headers=as_json).status_code == 400
    big = json.dumps({"item": items[1].id, "choice": "tie", "pad": "x" * 30_000_000})
    assert client.post("/api/judge", data=big, headers=as_json).status_code == 413       # a 30 MB body
    assert client.get("/api/state?labeler=").status_code == 200                        # empty: the default
    assert client.get(f"/api/state?labeler={'x' * 65}").status_code == 400
    assert len(log.rows()) == 1
    assert client.post("/api/undo", json={}).json["item"]["id"] == items[0].id and log.rows() == []


def test_undo_and_resume_on_the_file(items, tmp_path):
    log = JudgementLog(tmp_path / "pairs.jsonl")
    for item, labeler, choice in [(items[0], "alice", "left"), (items[0], "bob", "tie"), (items[1], "alice", "skip"),
                                  (items[1], "bob", "right")]:
        log.append(judgement_row(item, labeler, choice))
    before = log.rows()
    assert log.undo("alice") == before[2] and log.rows() == [before[0], before[1], before[3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]              # no temp file left
    assert log.judged("alice") == {items[0].id} and log.judged("bob") == {items[0].id, items[1].id}
    # a restart resumes each labeler at their first item not judged
    alice = create_app(items, JudgementLog(log.path), labeler="alice").test_client().get("/api/state").json
    bob = create_app(items, JudgementLog(log.path), labeler="alice").test_client().get("/api/state?labeler=bob").json
    assert (alice["done"], alice["item"]["id"]) == (1, items[1].id) and (bob["done"], bob["item"]["id"]) == (2, items[2].id)
    assert log.undo("alice") == before[0] and log.undo("alice") is None and log.rows() == [before[1], before[3]]
    with log.exclusive(), pytest.raises(RuntimeError, match="another"):               # one server per file
        with JudgementLog(log.path).exclusive():
            pass
    log.path.write_text(log.path.read_text() + '{"prompt": "cut off by a cra')
    with pytest.raises(ValueError, match="line 3: not JSON"):
        log.rows()


def test_read_pairs_skips_ties_and_skips_only(items, tmp_path):
    path = tmp_path / "pairs.jsonl"
    log = JudgementLog(path)
    for choice in ("tie", "left", "skip"):
        log.append(judgement_row(items[0], "alice", choice))
    assert len(read_pairs([path])) == 1
    path.write_text(path.read_text() + json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(ValueError, match="line 4: expected chosen and rejected"):
        read_pairs([path])


def test_cohen_kappa_by_hand():
    # Wikipedia's "Cohen's kappa" example: 50 proposals; both yes 20, A yes B no 5, A no B yes 10, both no 15:
    # p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4
    x = ["a"] * 20 + ["a"] * 5 + ["b"] * 10 + ["b"] * 15
    y = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15
    assert cohen_kappa(x, y) == pytest.approx(0.4)
    # three categories: p_o = 7/10; shares a .5/.5, b .3/.3, tie .2/.2 -> p_e = .38; kappa = .32 / .62
    x = ["a", "a", "a", "a", "b", "b", "b", "tie", "tie", "a"]
    y = ["a", "a", "a", "b", "b", "b", "tie", "tie", "a", "a"]
    assert cohen_kappa(x, y) == pytest.approx(0.32 / 0.62)
    assert cohen_kappa(x, x) == 1.0 and cohen_kappa(["a", "b"], ["b", "a"]) == -1.0
    assert cohen_kappa(["tie"] * 3, ["tie"] * 3) is None          # one category throughout: undefined
    with pytest.raises(ValueError):
        cohen_kappa([], [])


def test_position_bias_by_hand():
    rows = ([{"label": "a", "left": "a"}] * 5 + [{"label": "b", "left": "b"}] * 3 + [{"label": "a", "left": "b"}] * 2
            + [{"label": "tie", "left": "a"}, {"label": "skip", "left": "b"}])
    bias = position_bias(rows)
    # 8 of 10 decisive picked the left: two-sided p = 2 * (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 112 / 1024
    assert (bias["decisive"], bias["left"], bias["share_left"]) == (10, 8, 0.8)
    assert bias["p_value"] == pytest.approx(112 / 1024)
    assert position_bias([{"label": "tie", "left": "a"}])["p_value"] is None


def test_stats_compare_responses_not_screen_sides(items, tmp_path, capsys):
    targets = ["a", "b", "a", "tie"]                  # both labelers prefer the same response of each item
    for labeler in ("alice", "bob"):
        log = JudgementLog(tmp_path / f"{labeler}.jsonl")
        for item, target in zip(items, targets):
            side = "tie" if target == "tie" else "left" if left_response(item.id, labeler) == target else "right"
            log.append(judgement_row(item, labeler, side))
    JudgementLog(tmp_path / "alice.jsonl").append(judgement_row(items[4], "alice", "skip"))
    assert {left_response(x.id, "alice") == left_response(x.id, "bob") for x in items[:4]} == {True, False}
    files = [str(tmp_path / "alice.jsonl"), str(tmp_path / "bob.jsonl")]
    assert main(["label", "stats", *files]) == 0
    out = capsys.readouterr().out
    assert "alice ~ bob" in out and "kappa 1.000" in out and "on 4 item(s)" in out
    assert main(["label", "stats", "--json", *files]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["agreement"] == [{"labelers": ["alice", "bob"], "items": 4, "observed": 1.0, "kappa": 1.0}]
    assert stats["labelers"]["alice"] == {"a": 2, "b": 1, "tie": 1, "skip": 1}
    assert stats["position_bias"]["all"]["decisive"] == 6
    assert main(["label", "stats", str(tmp_path / "missing.jsonl")]) == 2


def test_a_real_model_answers_each_prompt_twice(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.architectures import build
    from training.checkpoint import save_checkpoint
    from training.model import ModelConfig
    from training.tokenizer import ROLE_TOKENS, Tokenizer, TokenizerConfig, train_tokenizer
    alpaca = json.loads((data / "sft/alpaca_data_1k.json").read_text())
    pq.write_table(pa.table({"text": [r["output"] for r in alpaca]}), tmp_path / "text.parquet")
    run = tmp_path / "run"                        # a run folder with its tokenizer beside it, as sft writes
    train_tokenizer([str(tmp_path / "text.parquet")], str(run), TokenizerConfig(vocab_size=400), log=lambda *_: None)
    model = build(ModelConfig(vocab_size=Tokenizer(str(run)).vocab_size, dim=32, n_layers=1, n_heads=2,
                              n_kv_heads=1, max_seq_len=128))
    save_checkpoint(run, model, None, {"step": 0})
    questions = data / "sft/vicuna_bench_questions.jsonl"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(questions.read_text().splitlines(keepends=True)[:3]))
    output = tmp_path / "pairs.jsonl"
    assert main(["label", "serve", "--prompts", str(prompts), "--model", str(run), "--output", str(output),
                 "--max-new-tokens", "12", "--generate-only"]) == 0
    items = read_items(tmp_path / "pairs.responses.jsonl")
    assert [x.prompt for x in items] == [json.loads(line)["turns"][0] for line in prompts.read_text().splitlines()]
    assert all(x.a and x.b and x.a != x.b and not any(t in x.a + x.b for t in ROLE_TOKENS) for x in items)
    assert not output.exists()
