"""`refinery label`: a local web page where people judge which of two responses is better; every judgement
is appended at once to a JSONL file that `refinery reward` and `refinery dpo` read (training/post/reward.py's
`read_pairs`).

```
refinery label serve --prompts ../shared/data/sft/vicuna_bench_questions.jsonl --model out/sft --output out/pairs.jsonl
refinery label serve --responses out/pairs.responses.jsonl --output out/pairs.jsonl --labeler alice
refinery label stats out/pairs.jsonl out/pairs-bob.jsonl          # Cohen's kappa per pair of labelers, position bias
```
A decisive judgement is a pair row `{"prompt", "chosen", "rejected"}` plus `label` ("a" or "b": which response of
the item won), `left` (which response was shown on the left), `item`, `labeler` and `time`; ties and skips are
rows with `"label": "tie" | "skip"` and no chosen/rejected (read_pairs leaves them out). docs/label.md has more.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

import torch

from training.files import read_rows, write_atomic
from training.generate import generate
from training.post import conversation
from training.post.policy import load_policy

LABELS = ("a", "b", "tie", "skip")       # what a row's "label" holds; a / b: the item's responses, not screen sides
CHOICES = ("left", "right", "tie", "skip")   # what the page sends
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
MAX_REQUEST_BYTES = 64 * 1024       # a judgement is ~100 bytes; anything far bigger is not one
PAGE_DIR = Path(__file__).with_name("label_page")
TOKEN_COOKIE, TOKEN_HEADER = "refinery_label_token", "X-Refinery-Token"
DEFAULT_GUIDELINES = """\
Read the instruction, then both responses, and pick the one that serves the person who asked better overall.
Weigh, in this order:
1. Accuracy: is what it says true, and does it do what the instruction asked? A confident wrong answer is worse
   than a partial right one; harmful or unsafe content is worse than a polite refusal.
2. Coherence: is it on topic, well ordered and readable to the end (no repetition, contradiction or text cut off)?
3. Informativeness: does it give the useful detail the instruction calls for, without padding?
Tie: both are equally good or equally bad. Skip: you cannot judge (an unclear instruction, knowledge you lack,
a broken item). Judge the content, not which side it is on or how long it is."""


@dataclass(frozen=True)
class Item:
    """One instruction and the two responses to compare."""
    id: str
    prompt: str
    a: str
    b: str


def item_id(prompt: str, a: str, b: str) -> str:
    """A content hash: the same item gets the same id whatever file or order it comes in."""
    return hashlib.sha256(json.dumps([prompt, a, b]).encode()).hexdigest()[:16]


def read_prompts(path: str | Path) -> list[str]:
    """Single-turn instructions (any prompt file `training/post/conversation.py` reads)."""
    prompts = []
    for messages in conversation.read_prompts([path]):
        if len(messages) != 1:
            raise ValueError(f"{path}: the labeling page shows single-turn prompts; a prompt has "
                             f"{len(messages)} turns")
        prompts.append(messages[0]["content"])
    return prompts


def read_items(path: str | Path) -> list[Item]:
    """Items from JSONL rows {"prompt", "a", "b"} or {"prompt", "responses": [a, b]}, each with an optional "id";
    an exact repeat of an earlier item is dropped."""
    items, seen = [], set()
    for where, row in read_rows(path):
        responses = row.get("responses") or [row.get("a"), row.get("b")]
        if not isinstance(row.get("prompt"), str) or not isinstance(responses, list) or len(responses) != 2 \
                or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{path}, {where}: expected prompt with a and b (or responses: [a, b]), "
                             f"got {sorted(row)}")
        a, b = responses
        item = Item(str(row["id"]) if "id" in row else item_id(row["prompt"], a, b), row["prompt"], a, b)
        if item.id in seen:
            if any(x.id == item.id and x != item for x in items):
                raise ValueError(f"{path}, {where}: id {item.id!r} is used by another item")
            continue
        seen.add(item.id)
        items.append(item)
    return items


def write_items(items: list[Item], path: str | Path) -> None:
    write_atomic(Path(path), "".join(json.dumps({"id": x.id, "prompt": x.prompt, "a": x.a, "b": x.b}) + "\n"
                                      for x in items))


def generate_items(prompts: list[str], model_dir: str | Path, max_new_tokens: int = 256, temperature: float = 0.9,
                   top_p: float = 0.95, seed: int = 0, progress=None) -> list[Item]:
    """Two sampled replies per prompt from one of our runs (SFT chat format), each with its own seed."""

    policy = load_policy(model_dir)
    tokenizer = policy.tokenizer
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = policy.model.to(device).eval()
    end = tokenizer.roles["<|end|>"]
    stops = {tokenizer.eos_id, *tokenizer.roles.values()}      # <|end|>; EOS (a base model); a new turn's role
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - 1)
    items = []
    for i, prompt in enumerate(prompts):
        ids = conversation.encode_prompt(tokenizer, [{"role": "user", "content": prompt}])
        ids = ids[-(model.cfg.max_seq_len - max_new_tokens):]       # a long prompt keeps its end
        replies = []
        for s in (seed + 2 * i, seed + 2 * i + 1):
            out = generate(model, ids, max_new_tokens, temperature, top_p=top_p, eos_id=end, seed=s)
            stop = next((k for k, t in enumerate(out) if t in stops), len(out))
            replies.append(tokenizer.decode(out[:stop]).strip())
        items.append(Item(item_id(prompt, *replies), prompt, *replies))
        if progress:
            progress(i + 1, len(prompts))
    return items


def left_response(item: str, labeler: str) -> str:
    """Which response ("a" or "b") the page shows on the left: random per item and labeler, the same on reload."""
    return random.Random(f"{item}\0{labeler}").choice("ab")


def judgement_row(item: Item, labeler: str, choice: str, now: datetime | None = None) -> dict:
    """The row one click writes: a pair (chosen, rejected) for left / right, a labelled non-pair for tie / skip."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}")
    left = left_response(item.id, labeler)
    right = "b" if left == "a" else "a"
    label = {"left": left, "right": right}.get(choice, choice)
    row = {"prompt": item.prompt}
    if label in ("a", "b"):
        row["chosen"], row["rejected"] = (item.a, item.b) if label == "a" else (item.b, item.a)
    row.update(label=label, left=left, item=item.id, labeler=labeler,
               time=(now or datetime.now(timezone.utc)).isoformat(timespec="seconds"))
    return row


class JudgementLog:
    """The output file: one JSON row per judgement, appended and synced at once; undo rewrites it atomically.
    One writer (one server) per file; `exclusive()` makes sure of it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()

    def rows(self) -> list[dict]:
        return [row for _, row in read_rows(self.path)] if self.path.is_file() else []

    def judged(self, labeler: str) -> set[str]:
        return {r.get("item") for r in self.rows() if r.get("labeler") == labeler}

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())      # a crash or a closed tab after this loses nothing

    def undo(self, labeler: str) -> dict | None:
        """Remove `labeler`'s last row (other labelers' rows stay); the removed row, or None if there was none."""
        if not self.path.is_file():
            return None
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        for k in range(len(lines) - 1, -1, -1):
            if lines[k].strip() and json.loads(lines[k]).get("labeler") == labeler:
                write_atomic(self.path, "".join(lines[:k] + lines[k + 1:]))
                return json.loads(lines[k])
        return None

    @contextlib.contextmanager
    def exclusive(self):
        """Hold an OS lock on PATH.lock while serving: a second server on the same file stops with an error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(f"{self.path} is being written by another `refinery label serve`") from None
            yield self


def create_app(items: list[Item], log: JudgementLog, guidelines: str = DEFAULT_GUIDELINES,
               labeler: str = "anonymous", token: str | None = None):
    """The Flask app: the page, GET /api/state, POST /api/judge {item, choice}, POST /api/undo. `?labeler=NAME`
    on the page's URL labels as NAME instead of `labeler`. With `token`, every request must carry it (header,
    cookie, or ?token= once, which sets the cookie); without, only loopback Host headers are served."""
    from flask import Flask, jsonify, redirect, request  # optional: only when the page is served
    app = Flask(__name__, static_folder=str(PAGE_DIR), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES          # a larger body is refused with 413
    by_id = {x.id: x for x in items}

    def body() -> dict:
        """The request's JSON object; anything else (malformed, too deeply nested, not an object) is a 400."""
        try:
            value = json.loads(request.get_data(cache=False) or b"{}")
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise ValueError("the request body is not JSON (expected an object {item, choice})") from None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object {{item, choice}}, got {type(value).__name__}")
        return value

    def ok_token(value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), token.encode())

    @app.before_request
    def check_access():
        if token is None:           # loopback only: refuse other Host names (DNS rebinding)
            host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            if host not in LOOPBACK:
                return "forbidden: this server answers on 127.0.0.1 / localhost only\n", 403
            return None
        if ok_token(request.headers.get(TOKEN_HEADER)) or ok_token(request.cookies.get(TOKEN_COOKIE)):
            return None
        if ok_token(request.args.get("token")):
            if request.method == "GET" and request.path == "/":       # once: keep it in a cookie, off the URL
                rest = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "token"])
                response = redirect("/" + (f"?{rest}" if rest else ""))
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
                return response
            return None
        return "forbidden: open the URL `refinery label serve` printed (with ?token=...)\n", 403

    @app.after_request
    def harden(response):
        response.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                                       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def who() -> str:
        name = (request.args.get("labeler") or labeler).strip()
        if not name or len(name) > 64 or not name.isprintable():
            raise ValueError(f"labeler must be 1-64 printable characters, got {name!r}")
        return name

    def state(name: str) -> dict:
        judged = log.judged(name)
        item = next((x for x in items if x.id not in judged), None)
        shown = None
        if item is not None:
            left = left_response(item.id, name)
            shown = {"id": item.id, "prompt": item.prompt, "left": item.a if left == "a" else item.b,
                     "right": item.b if left == "a" else item.a}
        return {"labeler": name, "done": sum(x.id in judged for x in items), "total": len(items), "item": shown,
                "can_undo": any(r.get("labeler") == name for r in log.rows()), "guidelines": guidelines}

    def answer(fn):
        try:
            with log.lock:
                return jsonify(fn(who()))
        except LookupError as e:
            return jsonify(error=str(e)), 409
        except ValueError as e:
            return jsonify(error=str(e)), 400

    @app.get("/")
    def page():
        return app.send_static_file("index.html")

    @app.get("/api/state")
    def get_state():
        return answer(state)

    @app.post("/api/judge")
    def judge():
        if not request.is_json:          # JSON only: a cross-site form post cannot send it without a preflight
            return jsonify(error="expected Content-Type: application/json"), 415

        def record(name):
            sent = body()
            item = by_id.get(str(sent.get("item")))
            if item is None:
                raise ValueError(f"unknown item {str(sent.get('item'))[:64]!r}")
            if item.id in log.judged(name):
                raise LookupError(f"item {item.id} is already judged by {name} (undo it first)")
            log.append(judgement_row(item, name, sent.get("choice")))
            return state(name)
        return answer(record)

    @app.post("/api/undo")
    def undo():
        if not request.is_json:
            return jsonify(error="expected Content-Type: application/json"), 415

        def remove(name):
            body()
            if log.undo(name) is None:
                raise LookupError(f"nothing to undo for {name}")
            return state(name)
        return answer(remove)

    return app


def serve(app, host: str, port: int, on_ready=None) -> None:
    """Serve until interrupted (threaded werkzeug server); `on_ready(port)` once listening."""
    from werkzeug.serving import make_server  # optional: only when the page is served
    server = make_server(host, port, app, threaded=True)
    if on_ready:
        on_ready(server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# --- agreement statistics ---------------------------------------------------------------------------------------

def read_judgements(paths: list[str | Path]) -> list[dict]:
    """Rows with a label from the given files; a labeler's later row for an item replaces the earlier. A row
    whose item or labeler is not text is an error naming its file; files without one judgement are too."""
    latest = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no judgements at {path}")
        for where, row in read_rows(path):
            if row.get("label") in LABELS and "item" in row and "labeler" in row:
                if not (isinstance(row["item"], str) and isinstance(row["labeler"], str)):
                    raise ValueError(f"{path}, {where}: item and labeler must be text, got "
                                     f"{row['item']!r} and {row['labeler']!r}")
                latest[(row["labeler"], row["item"])] = row
    if not latest:
        raise ValueError(f"{', '.join(map(str, paths))}: no judgements in it (rows with a label, an item and a "
                         f"labeler, as `refinery label serve` writes them)")
    return list(latest.values())


def cohen_kappa(x: list[str], y: list[str]) -> float | None:
    """Cohen (1960): (p_o - p_e) / (1 - p_e), p_e from each rater's own category shares; None when p_e = 1
    (both raters used one and the same category throughout: agreement beyond chance is undefined)."""
    if len(x) != len(y) or not x:
        raise ValueError(f"need two equally long, non-empty rating lists, got {len(x)} and {len(y)}")
    n = len(x)
    observed = sum(a == b for a, b in zip(x, y)) / n
    expected = sum((x.count(c) / n) * (y.count(c) / n) for c in set(x) | set(y))
    return None if expected == 1 else (observed - expected) / (1 - expected)


def position_bias(rows: list[dict]) -> dict:
    """Share of decisive judgements that picked the response shown on the left, and the two-sided binomial test
    of that share against 1/2 (no bias)."""
    from scipy.stats import binomtest  # heavy: only for this statistic / fit
    decisive = [r for r in rows if r["label"] in ("a", "b")]
    left = sum(r["label"] == r.get("left") for r in decisive)
    n = len(decisive)
    return {"decisive": n, "left": left, "share_left": left / n if n else None,
            "p_value": binomtest(left, n, 0.5).pvalue if n else None}


def label_stats(rows: list[dict]) -> dict:
    """Counts per labeler, Cohen's kappa for every pair of labelers on the items both judged (a / b / tie; skips
    left out), and position bias per labeler and overall."""
    labelers = sorted({r["labeler"] for r in rows})
    by_labeler = {name: {r["item"]: r["label"] for r in rows if r["labeler"] == name} for name in labelers}
    counts = {name: {label: sum(v == label for v in by_labeler[name].values()) for label in LABELS}
              for name in labelers}
    agreement = []
    for first, second in itertools.combinations(labelers, 2):
        shared = sorted(i for i in by_labeler[first].keys() & by_labeler[second].keys()
                        if "skip" not in (by_labeler[first][i], by_labeler[second][i]))
        x = [by_labeler[first][i] for i in shared]
        y = [by_labeler[second][i] for i in shared]
        agreement.append({"labelers": [first, second], "items": len(shared),
                          "observed": sum(a == b for a, b in zip(x, y)) / len(shared) if shared else None,
                          "kappa": cohen_kappa(x, y) if shared else None})
    bias = {name: position_bias([r for r in rows if r["labeler"] == name]) for name in labelers}
    bias["all"] = position_bias(rows)
    return {"labelers": counts, "items": len({r["item"] for r in rows}), "agreement": agreement,
            "position_bias": bias}


def format_stats(stats: dict) -> str:
    def num(v, fmt=".3f"):
        return "n/a" if v is None else format(v, fmt)
    lines = [f"[label] {len(stats['labelers'])} labeler(s), {stats['items']} item(s)"]
    for name, c in stats["labelers"].items():
        lines.append(f"  {name:<20} {sum(c.values()):>5} judged: {c['a']} a, {c['b']} b, {c['tie']} tie, "
                     f"{c['skip']} skip")
    if stats["agreement"]:
        lines.append("[label] agreement on shared items (Cohen's kappa over a / b / tie; skips left out)")
    for a in stats["agreement"]:
        lines.append(f"  {a['labelers'][0] + ' ~ ' + a['labelers'][1]:<30} kappa {num(a['kappa'])}  "
                     f"observed {num(a['observed'])}  on {a['items']} item(s)")
    lines.append("[label] position bias (decisive judgements that picked the left response; binomial test vs 1/2)")
    for name, b in stats["position_bias"].items():
        lines.append(f"  {name:<20} {b['left']:>5} / {b['decisive']:<5} = {num(b['share_left'])}  "
                     f"p = {num(b['p_value'], '.3g')}")
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------------------------
