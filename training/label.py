"""`refinery label`: a local web page where people judge which of two responses is better; every judgement
is appended at once to a JSONL file that `refinery reward` and `refinery dpo` read (training/reward.py's
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

import argparse
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import random
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlencode

LABELS = ("a", "b", "tie", "skip")       # what a row's "label" holds; a / b: the item's responses, not screen sides
CHOICES = ("left", "right", "tie", "skip")   # what the page sends
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
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


def _read_rows(path: Path) -> list[dict]:
    """A JSON list or JSONL, with the line of any bad row in its error."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    rows = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i + 1}: not JSON ({e.msg})") from None
    return rows


def read_prompts(path: str | Path) -> list[str]:
    """Instructions from JSONL or a JSON list: rows with prompt, instruction (+ input, Alpaca), turns (the
    first: MT-Bench, Vicuna bench) or question."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompts at {path}")
    prompts = []
    for i, row in enumerate(_read_rows(path)):
        if "prompt" in row:
            prompts.append(row["prompt"])
        elif "instruction" in row:
            prompts.append(row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else ""))
        elif row.get("turns"):
            prompts.append(row["turns"][0])
        elif "question" in row:
            prompts.append(row["question"])
        else:
            raise ValueError(f"{path}, row {i + 1}: expected prompt, instruction, turns or question; got {sorted(row)}")
    return prompts


def read_items(path: str | Path) -> list[Item]:
    """Items from JSONL rows {"prompt", "a", "b"} or {"prompt", "responses": [a, b]}, each with an optional "id";
    an exact repeat of an earlier item is dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no responses at {path}")
    items, seen = [], set()
    for i, row in enumerate(_read_rows(path)):
        responses = row.get("responses") or [row.get("a"), row.get("b")]
        if "prompt" not in row or len(responses) != 2 or not all(isinstance(r, str) for r in responses):
            raise ValueError(f"{path}, row {i + 1}: expected prompt with a and b (or responses: [a, b]), "
                             f"got {sorted(row)}")
        a, b = responses
        item = Item(str(row["id"]) if "id" in row else item_id(row["prompt"], a, b), row["prompt"], a, b)
        if item.id in seen:
            if any(x.id == item.id and x != item for x in items):
                raise ValueError(f"{path}, row {i + 1}: id {item.id!r} is used by another item")
            continue
        seen.add(item.id)
        items.append(item)
    return items


def write_items(items: list[Item], path: str | Path) -> None:
    _write_atomic(Path(path), "".join(json.dumps({"id": x.id, "prompt": x.prompt, "a": x.a, "b": x.b}) + "\n"
                                      for x in items))


def generate_items(prompts: list[str], model_dir: str | Path, max_new_tokens: int = 256, temperature: float = 0.9,
                   top_p: float = 0.95, seed: int = 0, progress=None) -> list[Item]:
    """Two sampled replies per prompt from one of our runs (SFT chat format), each with its own seed."""
    import torch

    from training.checkpoint import load_model_weights
    from training.generate import generate
    from training.lm import _our_tokenizer
    from training.sft import encode_conversation
    from training.tokenizer import Tokenizer
    tokenizer = Tokenizer(str(_our_tokenizer(Path(model_dir))))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model_weights(model_dir).to(device).eval()
    end = tokenizer.roles["<|end|>"]
    stops = {tokenizer.eos_id, *tokenizer.roles.values()}      # <|end|>; EOS (a base model); a new turn's role
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - 1)
    items = []
    for i, prompt in enumerate(prompts):
        ids, _ = encode_conversation(tokenizer, [{"role": "user", "content": prompt}], 10 ** 9)
        ids = ids[:-1] + [tokenizer.roles["<|assistant|>"]]        # drop the closing EOS, open the reply
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


def _write_atomic(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename over: a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class JudgementLog:
    """The output file: one JSON row per judgement, appended and synced at once; undo rewrites it atomically.
    One writer (one server) per file; `exclusive()` makes sure of it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = threading.Lock()

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for i, line in enumerate(self.path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}, line {i + 1}: not JSON ({e.msg}); fix or remove that line") from None
        return rows

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
                _write_atomic(self.path, "".join(lines[:k] + lines[k + 1:]))
                return json.loads(lines[k])
        return None

    @contextlib.contextmanager
    def exclusive(self):
        """Hold an OS lock on PATH.lock while serving: a second server on the same file stops with an error."""
        import fcntl
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
    from flask import Flask, jsonify, redirect, request
    app = Flask(__name__, static_folder=str(PAGE_DIR), static_url_path="/static")
    by_id = {x.id: x for x in items}

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
        body = request.get_json()        # JSON only: a cross-site form post cannot send it without a preflight

        def record(name):
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object {{item, choice}}, got {body!r}")
            item = by_id.get(str(body.get("item")))
            if item is None:
                raise ValueError(f"unknown item {body.get('item')!r}")
            if item.id in log.judged(name):
                raise LookupError(f"item {item.id} is already judged by {name} (undo it first)")
            log.append(judgement_row(item, name, body.get("choice")))
            return state(name)
        return answer(record)

    @app.post("/api/undo")
    def undo():
        request.get_json()

        def remove(name):
            if log.undo(name) is None:
                raise LookupError(f"nothing to undo for {name}")
            return state(name)
        return answer(remove)

    return app


def serve(app, host: str, port: int, on_ready=None) -> None:
    """Serve until interrupted (threaded werkzeug server); `on_ready(port)` once listening."""
    from werkzeug.serving import make_server
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
    """Rows with a label from the given files; a labeler's later row for an item replaces the earlier."""
    latest = {}
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no judgements at {path}")
        for row in JudgementLog(path).rows():
            if row.get("label") in LABELS and "item" in row and "labeler" in row:
                latest[(row["labeler"], row["item"])] = row
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
    from scipy.stats import binomtest
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

def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("label", help="collect preference pairs on a local web page; agreement statistics",
                            description="Human preference collection for `refinery reward` and `refinery dpo`: "
                                        "a web page shows an instruction and two responses; each judgement is "
                                        "appended at once to a JSONL pairs file (docs/label.md).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve_ = actions.add_parser(
        "serve", help="serve the labeling page",
        description="Serve the labeling page: the instruction, two responses in a random left/right order (fixed "
                    "per item and labeler), the guidelines, and buttons Left better [1] / Right better [2] / "
                    "Tie [3] / Skip [s] / Undo [u]. Progress and resume come from OUTPUT: items this labeler "
                    "already judged are not shown again.",
        epilog="Several labelers on one server: give each the URL with ?labeler=NAME. Responses file rows: "
               '{"prompt", "a", "b"} or {"prompt", "responses": [a, b]}, optional "id".')
    source = serve_.add_argument_group("items (one of)")
    source.add_argument("--prompts", metavar="PROMPTS.jsonl",
                        help="instructions (prompt / instruction+input / turns / question rows), answered twice "
                             "by --model")
    source.add_argument("--responses", metavar="RESPONSES.jsonl", help="pre-generated pairs of responses")
    serve_.add_argument("--model", metavar="RUN_OR_CHECKPOINT",
                        help="with --prompts: our run (e.g. out/sft) that samples two responses per prompt; they "
                             "are saved to OUTPUT's stem + .responses.jsonl (reuse with --responses)")
    serve_.add_argument("--output", required=True, metavar="PAIRS.jsonl", help="judgements are appended here")
    serve_.add_argument("--guidelines", metavar="FILE", help="guidelines text shown on the page (default: built in)")
    serve_.add_argument("--labeler", default=None, metavar="NAME", help="default labeler name (default: $USER)")
    serve_.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; others need --token)")
    serve_.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    serve_.add_argument("--token", metavar="T", help="access token, required when --host is not loopback")
    serve_.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="with --model (default 256)")
    serve_.add_argument("--temperature", type=float, default=0.9, metavar="T", help="with --model (default 0.9)")
    serve_.add_argument("--top-p", type=float, default=0.95, metavar="P", help="with --model (default 0.95)")
    serve_.add_argument("--seed", type=int, default=0, help="response seeds are SEED + 2i and SEED + 2i + 1")
    serve_.add_argument("--generate-only", action="store_true",
                        help="with --model: write the responses file and exit")
    serve_.set_defaults(handler=_run_serve)
    stats = actions.add_parser("stats", help="inter-labeler agreement (Cohen's kappa) and position bias",
                               description="Cohen's kappa between each pair of labelers on the items both judged "
                                           "(categories: response a better / b better / tie, whatever the screen "
                                           "side; skips left out) and the share of decisive judgements that "
                                           "picked the left response, with a two-sided binomial test.")
    stats.add_argument("files", nargs="+", metavar="PAIRS.jsonl")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(handler=_run_stats)
    return parser


def _run_serve(args, rest: list[str]) -> int:
    if bool(args.prompts) == bool(args.responses) or bool(args.model) != bool(args.prompts):
        print("refinery label serve: give --prompts with --model, or --responses", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK and not args.token:
        print(f"refinery label serve: --host {args.host} is reachable from other machines; give --token "
              "(e.g. --token $(python -c 'import secrets; print(secrets.token_urlsafe())'))", file=sys.stderr)
        return 2
    output = Path(args.output)
    try:
        guidelines = Path(args.guidelines).read_text(encoding="utf-8") if args.guidelines else DEFAULT_GUIDELINES
        if args.model:
            prompts = read_prompts(args.prompts)
            items = generate_items(prompts, args.model, args.max_new_tokens, args.temperature, args.top_p, args.seed,
                                   progress=lambda i, n: print(f"\r[label] generating responses {i}/{n}", end="",
                                                               file=sys.stderr, flush=True))
            print(file=sys.stderr)
            saved = output.with_name(output.name.removesuffix(".jsonl") + ".responses.jsonl")
            write_items(items, saved)
            print(f"[label] {len(items)} items -> {saved} (next time: --responses {saved})")
            if args.generate_only:
                return 0
        else:
            items = read_items(args.responses)
        log = JudgementLog(output)
        log.rows()                             # a damaged file is reported now, not on the first click
        app = create_app(items, log, guidelines, args.labeler or os.environ.get("USER") or "anonymous", args.token)
        with log.exclusive():
            query = f"?token={args.token}" if args.token else ""
            host = f"[{args.host}]" if ":" in args.host else args.host
            serve(app, args.host, args.port, on_ready=lambda port: print(
                f"[label] {len(items)} items; judgements -> {output}\n[label] open http://{host}:{port}/{query} "
                f"(Ctrl-C stops)", flush=True))
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as e:
        print(f"refinery label serve: {e}", file=sys.stderr)
        return 2
    return 0


def _run_stats(args, rest: list[str]) -> int:
    try:
        stats = label_stats(read_judgements(args.files))
    except (FileNotFoundError, ValueError) as e:
        print(f"refinery label stats: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1) if args.json else format_stats(stats))
    return 0
