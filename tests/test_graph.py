"""Weisfeiler-Lehman graph features, NAS-Bench-201 cell graphs and the WL-kernel GP used by LINAS."""

import itertools

import numpy as np
import pytest

from nas.graph import Graph, graph_key, wl_labels
from nas.search.searchers.wl_kernel import WLKernelGP
from search_spaces import nb201


def test_wl_labels_ignore_node_order_and_see_structure():
    a = Graph(("in", "conv", "pool", "out"), ((), (0,), (1,), (2,)))  # in -> conv -> pool -> out
    a_renumbered = Graph(("pool", "out", "in", "conv"), ((3,), (0,), (), (2,)))
    b = Graph(("in", "pool", "conv", "out"), ((), (0,), (1,), (2,)))  # same ops, other order
    assert wl_labels(a, 2) == wl_labels(a_renumbered, 2)
    assert wl_labels(a, 0) == wl_labels(b, 0)  # iteration 0 only counts operations
    assert wl_labels(a, 1) != wl_labels(b, 1)
    assert sum(wl_labels(a, 2).values()) == 3 * 4  # one label per node and iteration


def test_graph_key_is_shared_by_isomorphic_graphs_only():
    a = Graph(("in", "conv", "pool", "out"), ((), (0,), (1,), (2,)))
    a_renumbered = Graph(("pool", "out", "in", "conv"), ((3,), (0,), (), (2,)))
    b = Graph(("in", "pool", "conv", "out"), ((), (0,), (1,), (2,)))
    # two branches that differ only in how their nodes are fed: same multiset of labels, same WL bag at h=1
    c = Graph(("in", "x", "x", "y", "out"), ((), (0,), (1,), (0,), (2, 3)))
    d = Graph(("in", "x", "x", "y", "out"), ((), (0,), (0,), (1,), (2, 3)))
    assert graph_key(a) == graph_key(a_renumbered)
    assert graph_key(a) != graph_key(b)
    assert graph_key(c) != graph_key(d)
    # NAS-Bench-201: cells that differ only in dead edges compute the same function and share a key
    live = nb201.from_arch_str("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    dead_edge = nb201.from_arch_str("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|")
    other = nb201.from_arch_str("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert graph_key(nb201.space.graph(live)) == graph_key(nb201.space.graph(dead_edge))
    assert graph_key(nb201.space.graph(live)) != graph_key(nb201.space.graph(other))
    cells = [c for c in nb201.all_configs() if nb201.is_connected(c)]
    assert len({graph_key(nb201.space.graph(c)) for c in cells}) == 8764  # of 15,284 connected cells


def _canonical_form(g: Graph) -> tuple:
    """Exact isomorphism invariant by brute force: the smallest edge list over every renumbering that keeps
    nodes sorted by label (NB201 graphs have at most 8 nodes, few sharing a label)."""
    groups: dict[str, list[int]] = {}
    for v, label in enumerate(g.labels):
        groups.setdefault(label, []).append(v)
    order = sorted(groups)
    best = None
    for perms in itertools.product(*(itertools.permutations(groups[k]) for k in order)):
        new = {v: n for n, v in enumerate(v for p in perms for v in p)}
        edges = tuple(sorted((new[p], new[v]) for v, ps in enumerate(g.preds) for p in ps))
        best = edges if best is None or edges < best else best
    return tuple(k for k in order for _ in groups[k]), best


def test_graph_key_splits_nb201_exactly_as_isomorphism_does():
    """NB201 graphs repeat unfoldings (two convs fed by the input), where graph_key alone guarantees nothing;
    on this space it must still give one key per isomorphism class."""
    pairs = {(graph_key(g), _canonical_form(g)) for g in map(nb201.space.graph, nb201.all_configs())}
    keys, forms = {k for k, _ in pairs}, {f for _, f in pairs}
    assert len(keys) == len(forms) == len(pairs) == 8765  # 8,764 connected graphs + the empty one


def test_graph_rejects_inconsistent_structure():
    with pytest.raises(ValueError, match="one preds entry per label"):
        Graph(("in", "out"), ((),))
    with pytest.raises(ValueError, match="not nodes"):
        Graph(("in", "out"), ((), (5,)))
    with pytest.raises(ValueError, match="iterations"):
        wl_labels(Graph(("in",), ((),)), -1)
    with pytest.raises(ValueError, match="cycle"):
        graph_key(Graph(("a", "b"), ((1,), (0,))))


def test_nb201_graph_keeps_only_live_operations():
    cell = nb201.from_arch_str("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    # conv 0->1 then conv1x1 1->3, plus skip 0->3: all live
    g = nb201.space.graph(cell)
    assert sorted(g.labels) == sorted(["input", "nor_conv_3x3", "nor_conv_1x1", "skip_connect", "output"])
    out = g.labels.index("output")
    assert sorted(g.labels[p] for p in g.preds[out]) == ["nor_conv_1x1", "skip_connect"]
    # an op on 1->2 is dead (node 2 reaches nothing): it changes neither the graph nor the features' bag
    dead = nb201.from_arch_str(
        "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
    )
    assert wl_labels(nb201.space.graph(dead), 1) == wl_labels(g, 1)
    assert not np.array_equal(nb201.space.features(dead), nb201.space.features(cell))
    disconnected = nb201.from_arch_str("|none~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert nb201.space.graph(disconnected) == Graph(("input", "output"), ((), ()))


def test_spaces_without_graphs_say_so():
    from search_spaces import mobilenetv3

    space = mobilenetv3.space("small")
    assert space.graph(space.max()) is None


def test_wl_kernel_gp_interpolates_and_is_unsure_far_from_its_data():
    cells = [c for c in nb201.all_configs()[::97] if nb201.is_connected(c)][:60]
    bags = [wl_labels(nb201.space.graph(c), 1) for c in cells]
    y = np.array([nb201.accuracy(c) for c in cells])
    gp = WLKernelGP(bags, y, seed=0)
    mean, std = gp.predict(bags)
    assert np.corrcoef(mean, y)[0, 1] > 0.9
    unseen = Graph(("input", "never_seen_op", "output"), ((), (0,), (1,)))
    _, std_unseen = gp.predict([wl_labels(unseen, 1)])
    assert std_unseen[0] > np.median(std)
    with pytest.raises(ValueError, match="one bag per target"):
        WLKernelGP(bags[:3], y[:4])
