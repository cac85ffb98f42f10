"""trafilatura's pruning rules evaluated in Python: the same elements, in the same order, in a fraction of the time.

trafilatura decides what is boilerplate with XPath expressions such as

    .//*[self::div or self::p or self::section][re:test(@class, 'footer|menu|...') or contains(@style, ...)]

and evaluates them with libxml2, which calls back into Python for every `re:test` on every candidate element;
on the sample crawl those expressions take ~45 % of extraction time. `CompiledXPath` reads such an expression
and builds one Python function over an element: the tag test becomes lxml's C-level tag filter, attribute
tests are `elem.get` and a compiled regex. It understands only the XPath 1.0 that these rules use (below);
anything else (positions, other axes, functions it does not know) is left to lxml, so the only effect of
`install` is speed. Semantics kept, each checked against libxml2 in tests/pipeline/test_fastxpath.py:

- `@a|@b` as a string is the value of the first of the two in source order ('' if neither is there), as
  XPath's string() of a node-set and lxml's `re:test` take the first node;
- `re:test(s, pattern[, flags])` is `re.search` (lxml's EXSLT implementation uses Python's `re`), with
  IGNORECASE for flag 'i';
- `contains`, `starts-with`, `translate`, `not`, `and`, `or`, `=` on attributes, `@a` for presence,
  `self::tag`, and `.//tag` inside a predicate for "has such a descendant".

`install()` swaps the compiled rules into trafilatura's rule lists in place (every module that imported a list
sees them); `uninstall()` puts the originals back. The extraction child installs them (pipeline/extraction.py);
`check=True` evaluates both and raises on any difference (the tests run real pages through it).
"""
from __future__ import annotations

import re
from typing import Callable

from lxml import etree

# a name may carry one prefix (re:test) but stops before an axis's '::' (self::div is self, ::, div)
_TOKEN = re.compile(r"""\s*(?:(?P<str>'[^']*'|"[^"]*")|(?P<op>\.//|::|[\[\]()|,=@*])|(?P<name>[A-Za-z_][\w.-]*(?::[A-Za-z_][\w.-]*)?))""")


class Unsupported(ValueError):
    """The expression uses XPath this module does not evaluate; lxml keeps it."""


def _tokens(src: str) -> list[str]:
    out, at = [], 0
    src = src.strip()
    while at < len(src):
        match = _TOKEN.match(src, at)
        if match is None or match.end() == at:
            raise Unsupported(f"cannot read {src[at:at + 20]!r}")
        out.append(match.group(match.lastgroup))
        at = match.end()
    return out


# The parser builds a small tree of tuples; `_Source` turns it into the body of one Python function.
#   ('or' | 'and', [node, ...]), ('not', node), ('self', tag), ('descendant', tag), ('exists', names),
#   ('equals', names, literal), ('contains' | 'starts-with', string, literal), ('re', string, pattern, flags)
# strings: ('attributes', names), ('literal', value), ('translate', string, source, target)


class _Parser:
    def __init__(self, src: str):
        self.tokens, self.at = _tokens(src), 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Unsupported(f"expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def path(self) -> tuple[tuple[str, ...], list[tuple]]:
        """`.//name[pred]...`: (tags, predicates); tags () means every element."""
        self.take(".//")
        name = self.take()
        tags: tuple[str, ...] = () if name == "*" else (self._name(name),)
        predicates = []
        while self.peek() == "[":
            self.take("[")
            if not tags and not predicates:                 # the leading self::a or self::b → a tag filter
                start = self.at
                names = self._self_union()
                if names and self.peek() == "]":
                    self.take("]")
                    tags = names
                    continue
                self.at = start
            predicates.append(self.or_expr())
            self.take("]")
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r}")
        return tags, predicates

    def _self_union(self) -> tuple[str, ...]:
        names = []
        while self.peek() == "self" and self.at + 2 < len(self.tokens) and self.tokens[self.at + 1] == "::":
            self.at += 2
            names.append(self._name(self.take()))
            if self.peek() != "or":
                break
            self.take("or")
        return tuple(names)

    @staticmethod
    def _name(token: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", token):
            raise Unsupported(f"not a plain name: {token!r}")
        return token

    def or_expr(self) -> tuple:
        terms = [self.and_expr()]
        while self.peek() == "or":
            self.take("or")
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else ("or", _merge_patterns(terms))

    def and_expr(self) -> tuple:
        terms = [self.unary()]
        while self.peek() == "and":
            self.take("and")
            terms.append(self.unary())
        return terms[0] if len(terms) == 1 else ("and", terms)

    def unary(self) -> tuple:
        token = self.peek()
        if token in ("(", "not"):
            negate = self.take() == "not"
            if negate:
                self.take("(")
            inner = self.or_expr()
            self.take(")")
            return ("not", inner) if negate else inner
        if token == "self":
            self.take("self")
            self.take("::")
            return "self", self._name(self.take())
        if token == ".//":
            self.take(".//")
            return "descendant", self._name(self.take())
        if token == "@":
            names = self.attributes()
            if self.peek() == "=":
                self.take("=")
                return "equals", names, self.literal()
            return "exists", names
        if token in ("contains", "starts-with", "re:test"):
            function = self.take()
            self.take("(")
            subject = self.string()
            self.take(",")
            argument = self.literal()
            if function != "re:test":
                self.take(")")
                return function, subject, argument
            flags = self.literal() if self.peek() == "," and self.take(",") else ""
            self.take(")")
            if set(flags) - {"i", "g"}:
                raise Unsupported(f"re:test flags {flags!r}")
            re.compile(argument)
            return "re", subject, argument, "i" in flags
        raise Unsupported(f"unexpected {token!r}")

    def attributes(self) -> tuple[str, ...]:
        names = []
        while True:
            self.take("@")
            names.append(self._name(self.take()))
            if self.peek() != "|":
                return tuple(names)
            self.take("|")

    def literal(self) -> str:
        token = self.take()
        if token[0] not in "'\"":
            raise Unsupported(f"expected a string, found {token!r}")
        return token[1:-1]

    def string(self) -> tuple:
        """A string-valued argument: attributes, a literal or translate(...)."""
        token = self.peek()
        if token == "@":
            return "attributes", self.attributes()
        if token == "translate":
            self.take("translate")
            self.take("(")
            inner = self.string()
            self.take(",")
            source = self.literal()
            self.take(",")
            target = self.literal()
            self.take(")")
            return "translate", inner, source, target
        if token is not None and token[0] in "'\"":
            return "literal", self.literal()
        raise Unsupported(f"unexpected {token!r} as a string")


_NOT_MERGEABLE = re.compile(r"\\[1-9]|\(\?P|\(\?[aiLmsux]")


def _merge_patterns(terms: list[tuple]) -> list[tuple]:
    """re:test terms of one `or` on the same string with the same flags become one alternation (one search
    instead of several). Patterns with back-references, named groups or inline flags are left alone."""
    merged: dict[tuple, int] = {}
    out: list[tuple] = []
    for term in terms:
        if term[0] == "re" and not _NOT_MERGEABLE.search(term[2]):
            key = (term[1], term[3])
            if key in merged:
                kind, subject, pattern, ignore_case = out[merged[key]]
                out[merged[key]] = (kind, subject, f"{pattern}|(?:{term[2]})", ignore_case)
                continue
            merged[key] = len(out)
            term = (term[0], term[1], f"(?:{term[2]})", term[3])
        out.append(term)
    return out


class _Source:
    """Python source for a predicate over `e`, attribute values read once into locals v0, v1, ..."""

    def __init__(self):
        self.attributes: dict[str, str] = {}         # attribute name → local variable
        self.constants: dict[str, object] = {}       # compiled regexes, translate tables
        self.structural = False                      # reads the tag or the descendants, not only attributes

    def local(self, name: str) -> str:
        return self.attributes.setdefault(name, f"v{len(self.attributes)}")

    def constant(self, value) -> str:
        name = f"k{len(self.constants)}"
        self.constants[name] = value
        return name

    def boolean(self, node: tuple) -> str:
        kind = node[0]
        if kind in ("or", "and"):
            return "(" + f" {kind} ".join(self.boolean(n) for n in node[1]) + ")"
        if kind == "not":
            return f"(not {self.boolean(node[1])})"
        if kind == "self":
            self.structural = True
            return f"(e.tag == {node[1]!r})"
        if kind == "descendant":
            self.structural = True
            return f"(next(e.iterdescendants({node[1]!r}), None) is not None)"
        if kind == "exists":
            return "(" + " or ".join(f"{self.local(n)} is not None" for n in node[1]) + ")"
        if kind == "equals":
            return "(" + " or ".join(f"{self.local(n)} == {node[2]!r}" for n in node[1]) + ")"
        if kind == "contains":
            return f"({node[2]!r} in {self.string(node[1])})"
        if kind == "starts-with":
            return f"{self.string(node[1])}.startswith({node[2]!r})"
        search = re.compile(node[2], re.IGNORECASE if node[3] else 0).search
        return f"({self.constant(search)}({self.string(node[1])}) is not None)"

    def string(self, node: tuple) -> str:
        kind = node[0]
        if kind == "literal":
            return repr(node[1])
        if kind == "translate":
            source, target = node[2], node[3]
            table = {ord(c): (target[i] if i < len(target) else None)
                     for i, c in reversed(list(enumerate(source)))}     # the first occurrence of a letter counts
            return f"{self.string(node[1])}.translate({self.constant(table)})"
        names = node[1]
        if len(names) == 1:
            return f"({self.local(names[0])} or '')"
        values = ", ".join(self.local(n) for n in names)
        return f"_first(e, {names!r}, ({values},))"


def _first(elem: etree._Element, names: tuple[str, ...], values: tuple) -> str:
    """XPath's string(@a|@b): the value of the attribute that comes first in the element's source ('' if none)."""
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return present[0] if present else ""
    return elem.get(next(k for k in elem.keys() if k in names))


def _compile(predicates: list[tuple]) -> Callable[[etree._Element], bool]:
    source = _Source()
    expression = " and ".join(source.boolean(p) for p in predicates) or "True"
    reads = "".join(f"    {v} = e.get({n!r})\n" for n, v in source.attributes.items())
    namespace = {"_first": _first, **source.constants}

    def define(guard: str = "") -> Callable[[etree._Element], bool]:
        code = f"def match(e):\n{reads}{guard}    return bool({expression})\n"
        exec(compile(code, "<fastxpath>", "exec"), namespace)   # source built above from parsed tokens only
        namespace["match"].source = code
        return namespace["match"]

    match = define()
    if source.attributes and not source.structural and not match(etree.Element("none")):
        # false for an element without any of these attributes: such elements are skipped on one look
        match = define(f"    if {' and '.join(f'{v} is None' for v in source.attributes.values())}:\n"
                       f"        return False\n")
    return match


class CompiledXPath:
    """One rule as a Python predicate, called like the lxml XPath it replaces: rule(tree) → elements in
    document order. With check=True it also runs the original and raises AssertionError on any difference."""

    def __init__(self, original: etree.XPath, check: bool = False):
        self.original, self.path, self.check = original, original.path, check
        tags, predicates = _Parser(original.path).path()
        self.tags = tags or (etree.Element,)          # etree.Element as a tag filter: elements only
        self.match = _compile(predicates)

    def __call__(self, tree):
        match = self.match
        # XPath's .// from a document is every element, the root too; from an element, its descendants
        elements = tree.iterdescendants(*self.tags) if isinstance(tree, etree._Element) else tree.iter(*self.tags)
        found = [e for e in elements if match(e)]
        if self.check:
            expected = self.original(tree)
            if len(found) != len(expected) or any(a is not b for a, b in zip(found, expected)):
                mismatches.append(self.path)
                raise AssertionError(f"fastxpath differs from lxml on {self.path.strip()[:120]!r}: "
                                     f"{len(found)} elements against {len(expected)}")
        return found


mismatches: list[str] = []     # paths that differed in check mode, for tests
_installed: dict[int, tuple[list, int, etree.XPath]] = {}


def install(check: bool = False) -> int:
    """Swap every trafilatura rule this module can evaluate for its compiled form; returns how many. Idempotent."""
    try:
        from trafilatura import xpaths as rules  # here, not at the top: a trafilatura without it just runs its own
    except ImportError:
        return 0
    uninstall()
    for value in vars(rules).values():
        if not isinstance(value, list):
            continue
        for index, rule in enumerate(value):
            if isinstance(rule, etree.XPath):
                try:
                    compiled = CompiledXPath(rule, check)
                except (Unsupported, re.error):      # a pattern Python's re refuses fails in lxml too, at use
                    continue
                value[index] = compiled
                _installed[id(compiled)] = (value, index, rule)
    return len(_installed)


def uninstall() -> None:
    """Put trafilatura's own rules back."""
    for rules, index, original in _installed.values():
        rules[index] = original
    _installed.clear()
