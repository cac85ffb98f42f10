"""Connected components (filters/components.py) against networkx, on random graphs and long chains."""
import random

import networkx as nx
from hypothesis import given, settings, strategies as st

from filters import components


def nx_labels(edges) -> dict[int, int]:
    graph = nx.Graph()
    graph.add_edges_from((a, b) for a, b in edges if a != b)
    return {node: min(c) for c in nx.connected_components(graph) for node in c}


edge_lists = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(edges=edge_lists, rounds=st.integers(0, 5))
def test_components_equal_networkx(edges, rounds):
    labels, _ = components.connected_components(edges, rounds)
    assert labels == nx_labels(edges)


@settings(max_examples=50, deadline=None)
@given(length=st.integers(2, 300), seed=st.integers(0, 1000), rounds=st.integers(0, 3))
def test_long_shuffled_chains_converge_through_the_fallback(length, seed, rounds):
    """A chain needs ~log2(length) rounds; with fewer, union-find finishes the job."""
    nodes = list(range(length))
    random.Random(seed).shuffle(nodes)                  # a path through the ids in random order
    edges = list(zip(nodes, nodes[1:]))
    labels, changes = components.connected_components(edges, rounds)
    assert labels == {n: 0 for n in nodes}
    assert len(changes) <= rounds


def test_star_rounds_count_changes_and_stop():
    edges = [(i + 1, i) for i in range(64)]
    _, changes = components.connected_components(edges, rounds=20)
    assert changes[0] > 0 and changes[-1] == 0 and len(changes) < 20
