"""The HTML report of `refinery run` (and the page of `refinery ablate`): one self-contained file.

Drawn only from what the stages wrote (`run.json`, `curated/stats.json`, `curated/data/*.parquet`,
`tokens/tokens.json`, `train/log.jsonl`, `train/summary.json`, `eval.json`): charts are base64 PNGs from
matplotlib, there is no script and nothing is fetched, and every piece of text goes through `html.escape`.
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import pyarrow.dataset as pads
import yaml

from pipeline import corpus
from pipeline.dataset import dataset_files, write_atomic
from training.loop import read_log, tokens_axis

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.7em;overflow-x:auto;font-size:13px;white-space:pre-wrap;word-break:break-all}.ok{color:#17702a}.bad{color:#b00020;font-weight:bold}
.lead{font-size:1.05em;background:#f3f7fb;padding:.7em 1em;border-left:4px solid #4a7fb5}img{max-width:100%}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def num(value, digits: int = 0) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return "n/a"
    return f"{value:,.{digits}f}" if digits or isinstance(value, float) else f"{value:,}"


def table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    """An HTML table; every cell escaped; columns in `numeric` right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{esc(c)}</td>' if i in numeric else f"<td>{esc(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def png(fig) -> str:
    """A matplotlib figure as an inline <img> (base64 PNG); closes the figure."""
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def pyplot():
    import matplotlib  # heavy: only when a plot is drawn
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn
    return plt


def page(title: str, sections: list[tuple[str, str]], lead: str = "") -> str:
    """A whole page: title, an optional lead paragraph (escaped), then (heading, HTML body) sections."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if lead:
        parts.append('<p class="lead">' + re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(lead)) + "</p>")
    parts += [f"<h2>{esc(heading)}</h2>{body}" for heading, body in sections]
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- the funnel

def funnel_rows(stats: dict) -> list[dict]:
    """Documents into, dropped at and kept after each stage, from stats.json: the first row is the HTML
    pages read (records in less skipped and errored records), the last stage's `kept` is stats' kept."""
    pages = stats["records_in"] - sum(stats["skipped"].values()) - sum(stats["errors"].values())
    rows, current = [], pages
    for stage in stats["stages"]:
        dropped = sum(stats["dropped"].get(stage, {}).values())
        rows.append({"stage": stage, "in": current, "dropped": dropped, "kept": current - dropped})
        current -= dropped
    return rows


def funnel_chart(stats: dict, rows: list[dict]) -> str:
    plt = pyplot()
    labels = ["records in", "HTML pages"] + [r["stage"] for r in rows]
    values = [stats["records_in"], rows[0]["in"] if rows else stats["kept"]] + [r["kept"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(labels) + 1.2))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=["#9aa7b4", "#6f8fb0"] + ["#4a7fb5"] * len(rows))
    for yi, v in zip(y, values):
        ax.text(v, yi, f" {v:,}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=9)
    ax.set_xlabel("documents kept after the stage")
    ax.set_xlim(0, max(values) * 1.12)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def funnel_section(stats: dict) -> str:
    rows = funnel_rows(stats)
    pages = rows[0]["in"] if rows else stats["kept"]
    lines = [["records in", "", "", num(stats["records_in"])]]
    lines += [[f"skipped: {reason}", "", num(n), ""] for reason, n in stats["skipped"].items()]
    lines += [[f"error: {reason}", "", num(n), ""] for reason, n in stats["errors"].items()]
    lines += [[f"stage: {r['stage']}", num(r["in"]), num(r["dropped"]), num(r["kept"])] for r in rows]
    lines.append(["kept", "", "", num(stats["kept"])])
    accounted = (stats["kept"] + sum(stats["skipped"].values()) + sum(stats["errors"].values())
                 + sum(sum(r.values()) for r in stats["dropped"].values()))
    holds = stats.get("balanced") and accounted == stats["records_in"]
    check = (f'<p class="{"ok" if holds else "bad"}">records in ({stats["records_in"]:,}) = kept '
             f'({stats["kept"]:,}) + skipped ({sum(stats["skipped"].values()):,}) + dropped '
             f'({sum(sum(r.values()) for r in stats["dropped"].values()):,}) + errors '
             f'({sum(stats["errors"].values()):,}): {"holds" if holds else "DOES NOT HOLD"}</p>')
    return (funnel_chart(stats, rows) + check +
            f"<p>{pages:,} HTML pages entered the filters; {stats['kept']:,} documents "
            f"({stats['kept'] / max(1, pages):.1%}) came out.</p>" +
            table(["", "in", "dropped / skipped", "kept"], lines, {1, 2, 3}))


def drops_section(stats: dict) -> str:
    """Reason → count, its share of the documents entering the stage and of all HTML pages."""
    rows = funnel_rows(stats)
    pages = max(1, rows[0]["in"]) if rows else 1
    lines = []
    for r in rows:
        for reason, n in sorted(stats["dropped"].get(r["stage"], {}).items(), key=lambda kv: -kv[1]):
            lines.append([r["stage"], reason, num(n), f"{n / max(1, r['in']):.1%}", f"{n / pages:.1%}"])
    if not lines:
        return "<p>No document was dropped (no filter ran).</p>"
    return table(["stage", "reason", "documents", "share of stage input", "share of HTML pages"], lines, {2, 3, 4})


# ---- the domain mix

def domain_mix(curated: Path, tokens: dict | None) -> list[list]:
    columns = ["text", "domain"]
    data = pads.dataset(dataset_files(str(curated)), format="parquet")
    names = set(data.schema.names)
    table_ = data.to_table(columns=[c for c in columns if c in names]).to_pydict()
    docs, chars = {}, {}
    for text, domain in zip(table_["text"], table_.get("domain") or ["all"] * len(table_["text"])):
        domain = domain or "all"
        docs[domain] = docs.get(domain, 0) + 1
        chars[domain] = chars.get(domain, 0) + len(text or "")
    token_counts = {d: v["tokens"] for d, v in (tokens or {}).get("domains", {}).items()}
    total_tokens = sum(token_counts.values()) or 1
    total_docs = sum(docs.values()) or 1
    return [[d, num(docs[d]), f"{docs[d] / total_docs:.1%}", num(chars[d]), num(token_counts.get(d)),
             f"{token_counts[d] / total_tokens:.1%}" if d in token_counts else ""]
            for d in sorted(docs, key=lambda d: -docs[d])]


# ---- corpus statistics

def corpus_section(stats: dict | None) -> str:
    """Languages, domains, lengths, scores and duplicate clusters of the curated documents (pipeline/corpus.py)."""
    if not stats or not stats.get("docs"):
        return "<p>No corpus statistics (no document kept, or a dataset curated before they existed).</p>"
    headers = ["documents", "share", "words", "share of words", "mean words"]
    rows = {key: [[name, num(docs), share, num(words), word_share, num(mean)]
                  for name, docs, share, words, word_share, mean in corpus.table_rows(stats, key)]
            for key in ("languages", "domains")}
    return (f"<p>{esc(corpus.summary(stats))}</p>" + png(corpus.figure(stats)) +
            table(["language", *headers], rows["languages"], {1, 2, 3, 4, 5}) +
            table(["domain", *headers], rows["domains"], {1, 2, 3, 4, 5}))


# ---- training and evaluation

def loss_chart(log_path: Path, unigram: float | None, wikitext: float | None) -> str:
    plt = pyplot()
    train_rows, eval_rows = read_log(log_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot([r["tokens"] for r in train_rows], [r["loss"] for r in train_rows], lw=1)
    left.set(ylabel="training loss (nats/token)", title="training loss")
    evals = [r for r in eval_rows if "bpb" in r]
    if evals:
        right.plot([r["tokens"] for r in evals], [r["bpb"] for r in evals], "o-",
                   label=f"held-out curated text {evals[-1]['bpb']:.3f}")
    if unigram:
        right.axhline(unigram, ls="--", color="grey", label=f"unigram baseline {unigram:.3f}")
    if wikitext:
        right.axhline(wikitext, ls=":", color="#b5651d", label=f"wikitext-2 at the end {wikitext:.3f}")
    right.set(ylabel="bits per byte", title="bits per byte")
    right.legend(fontsize=8)
    for ax in (left, right):
        tokens_axis(ax, "training tokens")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def eval_rows(results: dict) -> list[list]:
    rows = []
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if "bpb" in r:
            rows.append([name, num(r.get("bytes")), "bits per byte", f"{r['bpb']:.4f}", "", num(r.get("seconds"), 1)])
        if "acc" in r:
            rows.append([name, num(r["n"]), "acc", f"{r['acc']:.3f} ± {r['acc_stderr']:.3f}",
                         f"{r['chance']:.3f}" if "chance" in r else "", num(r.get("seconds"), 1)])
        if "acc_norm" in r:
            rows.append([name, num(r["n"]), "acc_norm", f"{r['acc_norm']:.3f}", "", ""])
    return rows


EVAL_HEADERS = ["task", "items / bytes", "metric", "value", "chance", "seconds"]


def _yaml(data) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def write_run_report(run_dir: str | Path) -> Path:
    """DIR/report.html from the files the run's stages wrote."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    stats = json.loads((run_dir / "curated" / "stats.json").read_text())
    tokens_path = run_dir / "tokens" / "tokens.json"
    tokens = json.loads(tokens_path.read_text()) if tokens_path.is_file() else None
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    results = json.loads((run_dir / "eval.json").read_text())
    final = summary.get("final_eval") or {}
    wikitext = results.get("wikitext", {}).get("bpb")
    stages = record.get("stages", {})

    lead = (f"{stats['records_in']:,} WARC records from {stats['inputs']} files → {stats['kept']:,} curated "
            f"documents → {tokens['tokens'] if tokens else 0:,} tokens → a {summary.get('params', 0) / 1e6:.2f} M-"
            f"parameter model trained on {summary['tokens']:,} tokens ({summary['steps']:,} steps) → held-out "
            f"{num(final.get('bpb'), 3)} bits/byte (unigram baseline {num(summary.get('unigram_bpb'), 3)})"
            + (f", wikitext-2 {wikitext:.3f} bits/byte" if wikitext else "") +
            f". Whole run {num(record.get('wall_s'), 0)} s on {record['machine'].get('cpu_count')} CPU cores.")
    timing_rows = [[name, s.get("status", ""), num(s.get("seconds"), 1),
                    f"{s.get('seconds', 0) / max(1e-9, record.get('wall_s') or 1):.0%}"] for name, s in stages.items()]
    timing_rows.append(["total", "", num(record.get("wall_s"), 1), "100%"])
    if "report_s" in record:
        timing_rows.append(["(report)", "", num(record["report_s"], 1), ""])
    eval_meta = results.get("_meta", {})
    commands = [record.get("command", "")] + [f"# {n}\n{s['command']}" for n, s in stages.items() if s.get("command")]
    train_config = run_dir / "train" / "config.json"
    config_text = "# curate (the resolved config)\n" + _yaml(stats.get("config", {}))
    if train_config.is_file():
        config_text += "\n# train\n" + _yaml(json.loads(train_config.read_text()))
    sections = [
        ("Funnel: every record in, accounted for", funnel_section(stats)),
        ("Drops by filter and reason", drops_section(stats)),
        ("Corpus statistics", corpus_section(stats.get("corpus"))),
        ("Domain mix of the curated dataset",
         table(["domain", "documents", "share", "characters", "tokens", "token share"],
               domain_mix(run_dir / "curated", tokens), {1, 2, 3, 4, 5})),
        ("Training", loss_chart(run_dir / "train" / "log.jsonl", summary.get("unigram_bpb"), wikitext) +
         table(["", "value"], [["parameters", num(summary.get("params"))],
                               ["steps", num(summary["steps"])], ["training tokens", num(summary["tokens"])],
                               ["wall time (s)", num(summary.get("wall_s"), 1)],
                               ["held-out bits per byte", num(final.get("bpb"), 4)],
                               ["unigram baseline bits per byte", num(summary.get("unigram_bpb"), 4)]], {1})),
        ("Evaluation", f"<p>Multiple choice: the first {esc(eval_meta.get('limit'))} items of each task, "
                       f"log-likelihood scoring (docs/eval.md); wikitext-2: the first "
                       f"{esc(num(eval_meta.get('text_bytes')))} bytes of the test text, sliding window.</p>" +
         table(EVAL_HEADERS, eval_rows(results), {1, 3, 4, 5})),
        ("Timings per stage", table(["stage", "status", "seconds", "share"], timing_rows, {2, 3})),
        ("Commands", "<p>The run, then the command each stage is equivalent to:</p><pre>" +
         esc("\n\n".join(commands)) + "</pre>"),
        ("Config", f"<details><summary>curate and train configs</summary><pre>{esc(config_text)}</pre></details>"),
        ("Machine", table(["", "value"], [[k, "" if v is None else v] for k, v in record["machine"].items()]) +
         f"<p>Started {esc(record.get('started', ''))}, finished {esc(record.get('finished', ''))}.</p>"),
    ]
    out = run_dir / "report.html"
    write_atomic(str(out), page("webrefinery run: crawl → curated data → model", sections, lead).encode("utf-8"))
    return out


# ---- refinery ablate

def ablation_chart(result: dict):
    """Left: wikitext-2 bits per byte per arm (bar: mean, dots: seeds). Right: each run's held-out curve."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = [a["name"] for a in result["arms"]]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    means = [result["wikitext_bpb"].get(n, {}).get("mean", float("nan")) for n in names]
    left.bar(range(len(names)), means, color=[colours[i % len(colours)] for i in range(len(names))], alpha=0.6)
    for i, name in enumerate(names):
        values = result["wikitext_bpb"].get(name, {}).get("values", [])
        left.plot([i] * len(values), values, "ko", ms=4)
        if values:
            left.text(i, means[i], f"{means[i]:.4f}", ha="center", va="bottom", fontsize=9)
    finite = [m for m in means if m == m]
    if finite:
        span = max(finite) - min(finite)
        left.set_ylim(min(finite) - max(0.05, 2 * span), max(finite) + max(0.05, 2 * span))
    left.set_xticks(range(len(names)), names)
    left.set(ylabel="wikitext-2 bits per byte (lower is better)",
             title=f"wikitext-2 at {result['tokens']:,} training tokens")
    for row in result["rows"]:
        log = Path(row["run_dir"]) / "log.jsonl"
        if log.is_file():
            evals = [r for r in read_log(log)[1] if "bpb" in r]
            colour = colours[names.index(row["arm"]) % len(colours)]
            right.plot([r["tokens"] for r in evals], [r["bpb"] for r in evals], "o-", ms=3, color=colour,
                       alpha=0.9 if row["seed"] == result["seeds"][0] else 0.5,
                       label=f"{row['arm']} seed {row['seed']}")
    right.set(ylabel="bits per byte", title="each arm's own held-out text (not comparable across arms)")
    tokens_axis(right, "training tokens")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_ablation_report(out_dir: str | Path, result: dict, mc: list[str]) -> Path:
    """DIR/ablation.md (+ ablation.png) and the self-contained DIR/report.html."""
    out_dir = Path(out_dir)
    fig = ablation_chart(result)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomic(str(out_dir / "ablation.png"), buffer.getvalue())
    chart = png(fig)
    summary = [[name, len(v["values"]), f"{v['mean']:.4f}", ", ".join(f"{x:.4f}" for x in v["values"])]
               for name, v in result["wikitext_bpb"].items()]
    md = [f"# Ablation: {' vs '.join(a['name'] for a in result['arms'])}", "", result["verdict"], "",
          result["mc_note"], "", "| arm | seeds | wikitext-2 bpb (mean) | per seed |", "|---|---:|---:|---|"]
    md += ["| " + " | ".join(str(c) for c in row) + " |" for row in summary]
    md += ["", result["table"], "", "![wikitext-2 bits per byte and held-out curves](ablation.png)", "",
           "Arms: " + "; ".join(f"`{a['name']}` = {a['spec']}" for a in result["arms"]) +
           f". {result['steps']:,} steps per model; whole ablation {result['wall_s']:,.0f} s."]
    write_atomic(str(out_dir / "ablation.md"), ("\n".join(md) + "\n").encode())
    header = (["arm", "seed", "documents", "unique tokens", "training tokens", "passes", "own held-out bpb",
               "wikitext-2 bpb"] + [f"{t} acc" for t in mc])
    rows = [[r["arm"], r["seed"], num(r["documents"]), num(r["unique_tokens"]), num(r["train_tokens"]),
             f"{r['passes']:.2f}", num(r["held_out_bpb"], 4), num(r.get("wikitext", {}).get("bpb"), 4)] +
            [f"{r[t]['acc']:.3f} ± {r[t]['acc_stderr']:.3f}" if t in r else "" for t in mc] for r in result["rows"]]
    timings = [[name, s.get("status", ""), num(s.get("seconds"), 1)] for name, s in result["stages"].items()]
    commands = "\n\n".join(f"# {n}\n{s['command']}" for n, s in result["stages"].items() if s.get("command"))
    sections = [
        ("Result", f"<p>{esc(result['mc_note'])}</p>" +
         table(["arm", "seeds", "wikitext-2 bpb (mean)", "per seed"], summary, {1, 2}) + chart),
        ("Every model", table(header, rows, set(range(2, len(header))))),
        ("Arms", table(["arm", "from", "dataset"], [[a["name"], a["spec"], a["dataset"]] for a in result["arms"]])),
        ("Timings per stage", table(["stage", "status", "seconds"], timings, {2})),
        ("Commands", f"<pre>{esc(commands)}</pre>"),
        ("Machine", table(["", "value"], [[k, "" if v is None else v] for k, v in result["machine"].items()])),
    ]
    path = out_dir / "report.html"
    write_atomic(str(path), page("webrefinery ablation: " + " vs ".join(a["name"] for a in result["arms"]),
                                 sections, result["verdict"]).encode("utf-8"))
    return path
