"""Computational graphs of architectures and their Weisfeiler-Lehman subtree features.

A search space whose architectures are graphs (cells of operations, as in NAS-Bench-201) can describe a config
as a :class:`Graph` (``SearchSpace.graph``). :func:`wl_labels` turns it into a bag of Weisfeiler-Lehman
subtree labels: iteration 0 counts the operations, iteration 1 each operation together with the operations
that feed it, and so on. Two cells that compute the same function through an isomorphic graph get the same bag,
and cells that share sub-structures share labels, which is what a graph-kernel surrogate needs (NAS-BOWL:
Ru et al., "Interpretable Neural Architecture Search via Bayesian Optimisation with Weisfeiler-Lehman Kernels",
ICLR 2021). LINAS uses it for its ``"gbdt-wl"`` predictor.

Example:
    >>> g = Graph(labels=("input", "conv3x3", "skip", "output"), preds=((), (0,), (0,), (1, 2)))
    >>> bag = wl_labels(g, iterations=1)
    >>> bag["0:conv3x3"], bag["1:output(conv3x3,skip)"]
    (1, 1)
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

__all__ = ["Graph", "graph_key", "wl_labels"]


@dataclass(frozen=True)
class Graph:
    """A directed acyclic graph with one label per node.

    Attributes:
        labels: the label (operation name) of each node.
        preds: for each node, the indices of the nodes that feed it.
    """

    labels: tuple[str, ...]
    preds: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.preds):
            raise ValueError(
                f"a Graph needs one preds entry per label: {len(self.labels)} labels, {len(self.preds)} preds"
            )
        n = len(self.labels)
        for v, ps in enumerate(self.preds):
            bad = [p for p in ps if not 0 <= p < n]
            if bad:
                raise ValueError(f"node {v} of a {n}-node Graph has predecessors {bad} that are not nodes")


def wl_labels(graph: Graph, iterations: int = 1) -> Counter[str]:
    """Weisfeiler-Lehman subtree labels of ``graph`` and how often each occurs.

    Iteration ``h`` relabels every node as its label of iteration ``h - 1`` followed by the sorted labels of its
    predecessors; labels are prefixed with ``"h:"`` so that iterations never collide. The labels are readable
    strings rather than hashes, so bags from different processes and runs compare.

    Example:
        >>> chain = Graph(labels=("in", "a", "b"), preds=((), (0,), (1,)))
        >>> sorted(wl_labels(chain, iterations=1))
        ['0:a', '0:b', '0:in', '1:a(in)', '1:b(a)', '1:in()']
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    labels = list(graph.labels)
    bag: Counter[str] = Counter(f"0:{label}" for label in labels)
    for h in range(1, iterations + 1):
        labels = [
            f"{labels[v]}({','.join(sorted(labels[p] for p in ps))})" for v, ps in enumerate(graph.preds)
        ]
        bag.update(f"{h}:{label}" for label in labels)
    return bag


def graph_key(graph: Graph) -> str:
    """A key that isomorphic labelled DAGs share: a hash of the sorted multiset of each node's full backward
    unfolding (its label and, recursively, its predecessors'), i.e. Weisfeiler-Lehman run to the graph's depth.

    Isomorphic graphs always get the same key. The converse holds when no two nodes of a graph have the same
    unfolding (each node is then identified by its unfolding, so the key determines the edges). When some
    do, non-isomorphic graphs can collide: below, ``c`` feeds both ``b`` nodes from one ``a``, ``d`` one from
    each ``a``. NAS-Bench-201 graphs do repeat unfoldings (two ``nor_conv_3x3`` fed by the input), yet on all
    15,625 cells the keys split them exactly as graph isomorphism does (8,764 keys for the 15,284 connected
    cells; ``tests/test_graph.py`` checks it against brute-force canonical forms).

    Searchers use it to treat configs that compute the same function (cells differing only in dead edges or in
    the order of equivalent branches) as one architecture. It is finer than "same function": a graph keeps
    identity operations (NAS-Bench-201's ``skip_connect``) as nodes, so cells that differ only in a chain of
    them (``x``, ``skip(x)``, ``skip(skip(x))``) get different keys.

    Example:
        >>> a = Graph(labels=("in", "conv", "skip", "out"), preds=((), (0,), (0,), (1, 2)))
        >>> b = Graph(labels=("in", "skip", "conv", "out"), preds=((), (0,), (0,), (1, 2)))
        >>> graph_key(a) == graph_key(b), graph_key(a) == graph_key(Graph(("in", "out"), ((), (0,))))
        (True, False)
        >>> c = Graph(("in", "a", "a", "b", "b"), ((), (0,), (0,), (1,), (1,)))
        >>> d = Graph(("in", "a", "a", "b", "b"), ((), (0,), (0,), (1,), (2,)))
        >>> graph_key(c) == graph_key(d)  # not isomorphic: a collision
        True
    """
    unfolded: list[str] = [""] * len(graph.labels)
    done = [False] * len(graph.labels)

    def unfold(v: int, depth: int = 0) -> str:
        if depth > len(graph.labels):
            raise ValueError("graph_key needs an acyclic graph; this one has a cycle")
        if not done[v]:
            parts = sorted(unfold(p, depth + 1) for p in graph.preds[v])
            digest = hashlib.blake2b(f"{graph.labels[v]}({','.join(parts)})".encode(), digest_size=12)
            unfolded[v], done[v] = digest.hexdigest(), True
        return unfolded[v]

    nodes = sorted(unfold(v) for v in range(len(graph.labels)))
    return hashlib.blake2b("|".join(nodes).encode(), digest_size=16).hexdigest()
