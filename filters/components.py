"""Connected components of the duplicate graph: the per-node steps the Beam stage runs, and a local driver.

Nodes are integers; an edge (v, m) always has v > m. Each component ends labelled by its smallest node.

- `large_star` and `small_star` are the two operations of Kiveris et al., "Connected Components in MapReduce
  and Beyond" (SoCC 2014), as functions of one node and its neighbours, so Beam runs them after a GroupByKey
  and `connected_components` runs them from a dict. Alternating them turns every component into a star around
  its minimum in O(log² n) rounds; both preserve connectivity.
- The number of rounds is bounded. What is not yet a star afterwards is finished by union-find on one worker:
  an edge is *settled* when its larger end has no other neighbour (a leaf) and its smaller end has no smaller
  neighbour (a root); settled leaves take their root's label, every other edge goes to union-find. This is
  exact for any number of rounds, zero included; the rounds only shrink what union-find has to hold.

Both star steps take the neighbour list as an iterable they walk twice and never copy into a set, so a node
with millions of neighbours (the smallest document of a boilerplate bucket) costs memory only for the
runner's own grouping (Dataflow pages large groups from the shuffle).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator


def large_star(u: int, neighbours: Iterable[int]) -> Iterator[tuple[int, int, bool]]:
    """Link every larger neighbour v of u to m = min(Γ(u) ∪ {u}); yields (v, m, changed)."""
    m = min(min(neighbours, default=u), u)
    for v in neighbours:
        if v > u:
            yield v, m, m != u


def small_star(u: int, smaller: Iterable[int]) -> Iterator[tuple[int, int, bool]]:
    """`smaller`: the neighbours v ≤ u of u. Link each of them and u to m = min(smaller ∪ {u}); yields
    (v, m, changed), where changed means the edge was not (u, m) already."""
    m = min(min(smaller, default=u), u)
    for v in smaller:
        if v != m:
            yield v, m, True
    if u != m:
        yield u, m, False


def node_summary(x: int, neighbours: Iterable[int]) -> tuple[bool, int | None]:
    """(is_root, parent): root if x has no smaller neighbour; parent p if x's only neighbour is p < x (a leaf)."""
    first, only, smallest = None, True, x
    for y in neighbours:
        if first is None:
            first = y
        elif y != first:
            only = False
        smallest = min(smallest, y)
    is_root = smallest >= x
    parent = first if only and first is not None and first < x else None
    return is_root, parent


class UnionFind:
    """Disjoint sets over integers; `find` returns the smallest member of the set (path halving)."""

    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            small, large = (ra, rb) if ra < rb else (rb, ra)
            self.parent[large] = small         # the smaller root wins, so every root is its set's minimum

    def labels(self) -> dict[int, int]:
        return {x: self.find(x) for x in list(self.parent)}


def _neighbours(edges: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    graph = defaultdict(list)
    for v, m in edges:
        graph[v].append(m)
        graph[m].append(v)
    return graph


def star_round(edges: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], int]:
    """One large-star then one small-star step over all nodes; returns the new edges and how many changed."""
    changed, out = 0, []
    for u, neighbours in _neighbours(edges).items():
        for v, m, c in large_star(u, neighbours):
            out.append((v, m))
            changed += c
    smaller = defaultdict(list)
    for v, m in out:                          # small-star's map: each edge to its larger end
        smaller[v].append(m)
    edges = []
    for u, below in smaller.items():
        for v, m, c in small_star(u, below):
            edges.append((v, m))
            changed += c
    return sorted(set(edges)), changed


def settle(edges: list[tuple[int, int]]) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """(settled leaf → its root, the edges left for union-find)."""
    graph = _neighbours(edges)
    summary = {x: node_summary(x, ns) for x, ns in graph.items()}
    settled, rest = {}, []
    for x, (_, parent) in summary.items():
        if parent is not None and summary[parent][0]:
            settled[x] = parent
        elif parent is not None:
            rest.append((x, parent))
        else:
            rest.extend((x, y) for y in set(graph[x]) if y < x)
    return settled, rest


def finish(settled: dict[int, int], rest: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Labels of every node: union-find over `rest`, settled leaves take their root's label."""
    uf = UnionFind()
    for v, m in rest:
        uf.union(v, m)
    labels = uf.labels()
    for leaf, root in settled.items():
        labels[leaf] = labels.get(root, root)
        labels.setdefault(root, labels[leaf])
    return labels


def connected_components(edges: Iterable[tuple[int, int]], rounds: int = 6) -> tuple[dict[int, int], list[int]]:
    """Node → smallest node of its component, for every node on an edge; and the changed-edge count per round.

    Self-loops are ignored; edges may come in either orientation and more than once.
    """
    edges = sorted({(max(a, b), min(a, b)) for a, b in edges if a != b})
    changes = []
    for _ in range(rounds):
        edges, changed = star_round(edges)
        changes.append(changed)
        if not changed:
            break
    settled, rest = settle(edges)
    return finish(settled, rest), changes
