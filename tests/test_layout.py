"""The house's rules, read from the source (docs/architecture.md): imports point down, one way.

    pipeline.app (the `refinery` verbs) -> pipeline (curation, Beam) -> training (torch) -> filters (pure)

- filters imports none of our other packages, nor Beam or torch;
- training never imports pipeline (or Beam); its core never imports training.eval or training.post, and those two
  rooms do not import each other;
- pipeline's curation never imports pipeline.app;
- no module takes a private name (`_x`) from another; no import cycles between modules;
- a function-local import is for a heavy optional package (listed below), never one of our own modules.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("filters", "pipeline", "training")
# may be imported inside a function, with a comment saying why: heavy or optional, needed by one code path only
LOCAL_OK = {"transformers", "gguf", "flask", "werkzeug", "scipy", "matplotlib", "fasttext", "trafilatura",
            "playwright", "accelerate", "safetensors", "datasketch", "torch", "tokenizers", "peft"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path):
    """(module imported, names taken, line, inside a function?) for every import of a file."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        local = id(node) in functions
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno, local
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [a.name for a in node.names], node.lineno, local


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "training" and len(parts) > 1 and parts[1] in ("eval", "post"):
        return f"training.{parts[1]}"
    if parts[0] == "pipeline" and len(parts) > 1 and parts[1] == "app":
        return "pipeline.app"
    return parts[0]


FORBIDDEN = {
    "filters": ("pipeline", "training", "apache_beam", "torch"),
    "training": ("pipeline", "apache_beam", "training.eval", "training.post"),
    "training.eval": ("pipeline", "apache_beam", "training.post"),
    "training.post": ("pipeline", "apache_beam", "training.eval"),
    "pipeline": ("pipeline.app",),
    "pipeline.app": (),
}


def _imported_with_from(module: str, names: list[str]) -> list[str]:
    """`from pkg import mod` names a module too."""
    mods = modules()
    return [module] + [f"{module}.{n}" for n in names if f"{module}.{n}" in mods]


def test_imports_point_down():
    broken = []
    for name, path in modules().items():
        for imported, names, line, _ in imports(path):
            for target in _imported_with_from(imported, names):
                for banned in FORBIDDEN[room(name)]:
                    if target == banned or target.startswith(banned + "."):
                        broken.append(f"{path.relative_to(REPO)}:{line} ({room(name)}) imports {target}")
    assert not broken, "\n".join(broken)


def test_no_private_name_crosses_a_module():
    crossing = [f"{path.relative_to(REPO)}:{line} takes {n} from {imported}"
                for name, path in modules().items() for imported, names, line, _ in imports(path)
                if ours(imported) for n in names if n.startswith("_") and n != "__version__"]
    assert not crossing, "\n".join(crossing)


def test_no_import_cycles():
    mods = modules()
    graph = {name: {t for imported, names, _, local in imports(path) if not local and ours(imported)
                    for t in _imported_with_from(imported, names) if t in mods and t != name}
             for name, path in mods.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_function_local_imports_are_for_heavy_optional_packages_only():
    bad = []
    for name, path in modules().items():
        lines = path.read_text(encoding="utf-8").split("\n")
        for imported, _, line, local in imports(path):
            if not local:
                continue
            commented = "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")
            if ours(imported) or imported.split(".")[0] not in LOCAL_OK or not commented:
                bad.append(f"{path.relative_to(REPO)}:{line} imports {imported} inside a function"
                           + ("" if commented else " without a comment saying why"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package, banned", [("filters", "apache_beam"), ("filters", "torch"),
                                             ("training", "apache_beam")])
def test_the_rule_fails_when_broken(tmp_path, monkeypatch, package, banned):
    """The check can fail: a module that breaks the rule is found."""
    rogue = REPO / package / "_layout_probe.py"
    rogue.write_text(f"import {banned}\n")
    try:
        with pytest.raises(AssertionError, match=f"imports {banned}"):
            test_imports_point_down()
    finally:
        rogue.unlink()
