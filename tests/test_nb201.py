"""NAS-Bench-201 space: arch strings, packaged accuracy and latency tables, connectivity, features."""

from __future__ import annotations

import numpy as np
import pytest

from nas import Config, InvalidConfigError
from search_spaces import nb201

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
ROW1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_space_shape_and_size():
    space = nb201.space
    assert space.name == "nb201" and space.size == 15625
    assert space.names == ("node1.in0", "node2.in0", "node2.in1", "node3.in0", "node3.in1", "node3.in2")
    assert all(
        d.values == ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3") for d in space
    )


def test_arch_round_trip_for_every_row_and_index_is_row():
    table = nb201.table()
    configs = nb201.all_configs()
    assert len(configs) == len(table) == 15625 and len({c.key for c in configs}) == 15625
    for i, (cfg, s) in enumerate(zip(configs, table["arch"])):
        assert nb201.arch_str(cfg) == s
        assert nb201.from_arch_str(s) == cfg
        assert nb201.index(cfg) == i


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|",  # two node groups
        "|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        42,
    ],
)
def test_bad_arch_strings_fail_clearly(bad):
    with pytest.raises(InvalidConfigError, match=r"arch string|must be a str"):
        nb201.from_arch_str(bad)


def test_unknown_op_error_lists_the_ops():
    with pytest.raises(InvalidConfigError, match="nor_conv_1x1"):
        nb201.from_arch_str(BEST.replace("skip_connect", "sep_conv_3x3"))


def test_known_accuracies():
    t = nb201.table()
    assert t["cifar10"].max() == pytest.approx(94.37, abs=0.005)
    assert t["cifar100"].max() == pytest.approx(73.51, abs=0.005)
    assert t["imagenet16"].max() == pytest.approx(47.31, abs=0.005)
    best = nb201.from_arch_str(BEST)
    assert nb201.accuracy(best) == pytest.approx(94.3733, abs=1e-3)
    assert nb201.index(best) == int(t["cifar10"].idxmax()) == 6111
    assert nb201.accuracy(nb201.from_arch_str(ROW1), "cifar100") == pytest.approx(70.2933, abs=1e-3)
    with pytest.raises(ValueError, match="cifar100"):
        nb201.accuracy(best, "mnist")


def test_connected_detection():
    assert nb201.is_connected(nb201.from_arch_str(BEST))
    assert not nb201.is_connected(nb201.space.min())
    # only the direct edge 0 -> 3 survives
    direct = "|none~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|"
    assert nb201.is_connected(nb201.from_arch_str(direct))
    # a path 0 -> 1 -> 2 that never reaches node 3
    dangling = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|none~0|none~1|none~2|"
    assert not nb201.is_connected(nb201.from_arch_str(dangling))
    # output fed only by node 2, which is fed only by node 1, which gets nothing from the input
    cut = "|none~0|+|none~0|skip_connect~1|+|none~0|none~1|nor_conv_1x1~2|"
    assert not nb201.is_connected(nb201.from_arch_str(cut))
    t = nb201.table()
    assert int(t["connected"].sum()) == 15625 - 341
    # disconnected cells guess on CIFAR-10; on the phone most cost next to nothing (TFLite folds the constant
    # output), though operations dangling off the input still run
    assert (t.loc[~t["connected"], "cifar10"] == 10.0).all()
    assert (
        t.loc[~t["connected"], "latency_pixel3"].median()
        < 0.1 * t.loc[t["connected"], "latency_pixel3"].min()
    )


def test_connectivity_and_path_features_equal_brute_force_path_enumeration_on_all_cells():
    names = nb201.space.feature_names
    col = {n: names.index(n) for n in ("connected", "paths", "depth_longest", "depth_shortest")}
    col |= {f"{kind}:{op}": names.index(f"{kind}_count:{op}") for kind in ("live", "dead_in", "dead_out")
            for op in nb201.OPS[1:]}  # fmt: skip
    none, skip = nb201.OPS.index("none"), nb201.OPS.index("skip_connect")

    def paths(ops, src, dst):  # every path of non-none edges from node src to node dst, as edge lists
        if src == dst:
            return [[]]
        return [[e, *rest] for e, (j, i) in enumerate(nb201.EDGES) if i == src and ops[e] != none
                for rest in paths(ops, j, dst)]  # fmt: skip

    disconnected = 0
    for cfg in nb201.all_configs():
        ops = tuple(nb201.OPS.index(cfg[name]) for name in nb201.EDGE_NAMES)
        found = paths(ops, 0, 3)
        f = nb201.space.features(cfg)
        assert nb201.is_connected(cfg) == bool(found) == (nb201.space.degenerate_reason(cfg) is None)
        assert (f[col["connected"]], f[col["paths"]]) == (bool(found), len(found))
        steps = [sum(ops[e] != skip for e in p) for p in found]  # skip_connect is no layer
        assert (f[col["depth_longest"]], f[col["depth_shortest"]]) == (
            max(steps, default=0),
            min(steps, default=0),
        )
        disconnected += not found
        # every real op is exactly one of: live (on an input-output path), fed by zeros, or never used
        fed = [bool(paths(ops, 0, n)) for n in range(4)]
        used = [bool(paths(ops, n, 3)) for n in range(4)]
        counts = {kind: [0] * len(nb201.OPS) for kind in ("live", "dead_in", "dead_out")}
        for e, (j, i) in enumerate(nb201.EDGES):
            if ops[e] != none:
                counts["live" if fed[i] and used[j] else "dead_in" if not fed[i] else "dead_out"][ops[e]] += 1
        for kind, c in counts.items():
            assert [f[col[f"{kind}:{op}"]] for op in nb201.OPS[1:]] == c[1:], (kind, nb201.arch_str(cfg))
    assert disconnected == 341


def test_latency_lookup():
    cfg = nb201.from_arch_str(ROW1)
    assert nb201.latency(cfg, "raspi4") == pytest.approx(54.77739761998237, rel=1e-12)
    assert nb201.latency(cfg, "edgegpu") == pytest.approx(6.547689437866211, rel=1e-12)
    assert nb201.latency(cfg, "fpga") == pytest.approx(5.31536, rel=1e-12)
    assert nb201.energy(cfg, "eyeriss") == pytest.approx(1.5644240284999997, rel=1e-12)
    with pytest.raises(ValueError, match="edgegpu"):
        nb201.latency(cfg, "tpu-v4")
    t = nb201.table()
    missing = int(t["latency_edgetpu"].isna().idxmax())
    with pytest.raises(ValueError, match="did not measure"):
        nb201.latency(nb201.all_configs()[missing], "edgetpu")
    assert int(t["latency_edgetpu"].isna().sum()) == 4699


def test_features_are_structure_aware_and_consistent():
    space = nb201.space
    names = space.feature_names
    X = nb201.features_all()
    assert X.shape == (15625, len(names)) and np.isfinite(X).all()
    cfg = nb201.from_arch_str(BEST)
    f = dict(zip(names, space.features(cfg)))
    assert f["node1.in0=nor_conv_3x3"] == 1 and f["node3.in0=skip_connect"] == 1
    assert f["count:nor_conv_3x3"] == 4 and f["live_count:nor_conv_3x3"] == 4
    assert f["connected"] == 1 and f["convs_on_longest_path"] == 3 and f["depth_longest"] == 3
    # node 2's conv from node 1 runs on zeros when node 1 gets nothing from the input
    dead = nb201.from_arch_str("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|none~1|nor_conv_1x1~2|")
    g = dict(zip(names, space.features(dead)))
    assert g["dead_in_count:nor_conv_3x3"] == 1 and g["live_count:nor_conv_3x3"] == 0
    assert g["live_count:nor_conv_1x1"] == 1 and g["depth_longest"] == 1
    np.testing.assert_array_equal(
        space.features_matrix([cfg, dead]), np.vstack([space.features(cfg), space.features(dead)])
    )
    # invalid configs go through the space's validation
    with pytest.raises(InvalidConfigError, match=r"node1\.in0"):
        space.features(Config({**dict(cfg), "node1.in0": "conv"}))


def test_convs_on_longest_path_is_the_most_convolutions_on_any_path():
    # the longest path is pool -> pool (2 layers, no convolution); the direct 1x1 convolution is the most
    # convolutions on one path, and that is what the feature counts (its name predates this definition)
    cell = nb201.from_arch_str("|none~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|")
    f = dict(zip(nb201.space.feature_names, nb201.space.features(cell)))
    assert (f["depth_longest"], f["convs_on_longest_path"], f["conv3_on_longest_path"]) == (2, 1, 0)


def test_use_node_and_addition_features_equal_brute_force_reachability_on_all_cells():
    """The features the path test above leaves out, recomputed from reachability by depth-first search."""
    names = nb201.space.feature_names
    real, edges = nb201.OPS[1:], nb201.EDGES
    convs = ("nor_conv_1x1", "nor_conv_3x3")

    def reach(ops, a, b):  # is there a path of non-none edges from node a to node b?
        return a == b or any(
            i == a and ops[e] != "none" and reach(ops, j, b) for e, (j, i) in enumerate(edges)
        )

    def paths(ops, a):  # every path from node a to the output, as lists of ops
        if a == 3:
            return [[]]
        return [
            [ops[e], *p]
            for e, (j, i) in enumerate(edges)
            if i == a and ops[e] != "none"
            for p in paths(ops, j)
        ]

    for cfg in nb201.all_configs():
        ops = [cfg[name] for name in nb201.EDGE_NAMES]
        fed, used = [reach(ops, 0, n) for n in range(4)], [reach(ops, n, 3) for n in range(4)]
        use = [ops[e] != "none" and used[j] for e, (j, i) in enumerate(edges)]
        live = [u and fed[i] for u, (j, i) in zip(use, edges)]
        want = {"live_nodes": sum(fed[n] and used[n] for n in (1, 2)), "used_nodes": sum(used[1:3]),
                "used_zero_nodes": sum(used[n] and not fed[n] for n in (1, 2))}  # fmt: skip
        for n in (1, 2):
            want |= {f"node{n}_used": used[n], f"node{n}_zero": not fed[n]}
        for label, mask in (("adds", [o != "none" for o in ops]), ("live_adds", live), ("used_adds", use)):
            want[label] = sum(
                max(sum(m for m, (j, _) in zip(mask, edges) if j == n) - 1, 0) for n in (1, 2, 3)
            )
        for op in real:
            want[f"used_count:{op}"] = sum(u and o == op for u, o in zip(use, ops))
            want[f"zero_used_count:{op}"] = sum(
                u and o == op and not fed[i] for u, o, (_, i) in zip(use, ops, edges)
            )
            for n in (1, 2, 3):
                want[f"node{n}_live_in:{op}"] = sum(
                    m and o == op and j == n for m, o, (j, _) in zip(live, ops, edges)
                )
                want[f"node{n}_used_in:{op}"] = sum(
                    m and o == op and j == n for m, o, (j, _) in zip(use, ops, edges)
                )
            for n in (0, 1, 2):
                want[f"node{n}_used_out:{op}"] = sum(
                    m and o == op and i == n for m, o, (_, i) in zip(use, ops, edges)
                )
            for e, name in enumerate(nb201.EDGE_NAMES):
                want[f"live:{name}={op}"], want[f"used:{name}={op}"] = (
                    live[e] and ops[e] == op,
                    use[e] and ops[e] == op,
                )
        found = paths(ops, 0)
        want["convs_on_longest_path"] = max((sum(o in convs for o in p) for p in found), default=0)
        want["conv3_on_longest_path"] = max((p.count("nor_conv_3x3") for p in found), default=0)
        f = dict(zip(names, nb201.space.features(cfg)))
        assert {k: f[k] for k in want} == {k: float(v) for k, v in want.items()}, nb201.arch_str(cfg)


def test_space_survives_pickling():
    import pickle

    again = pickle.loads(pickle.dumps(nb201.space))
    assert again == nb201.space and again.feature_names == nb201.space.feature_names
