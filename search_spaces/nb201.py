"""NAS-Bench-201: the 15,625-cell tabular benchmark, with known accuracy and latency on six devices.

A cell is a 4-node DAG; node ``j`` sums one operation applied to every earlier node ``i`` (the edge
``node{j}.in{i}``). The six edges, in arch-string order, each take one of five operations, so the space has
5**6 = 15,625 cells. 341 of them are *disconnected*: no path of non-``none`` edges leads from the input
(node 0) to the output (node 3), so the cell's output does not depend on its input and the network
guesses (10% on CIFAR-10).

Data shipped with the project (see ``search_spaces/data/README.md`` and ``hw_profiles/README.md``):
accuracy after 200 epochs on CIFAR-10 / CIFAR-100 / ImageNet16-120 (NATS-Bench, MIT) and latency measured or
estimated by HW-NAS-Bench (ICLR'21, MIT) on edgegpu (Jetson TX2), raspi4, edgetpu, pixel3, eyeriss and fpga.

Example:
    >>> from search_spaces import nb201
    >>> best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    >>> cfg = nb201.from_arch_str(best)
    >>> nb201.space.size, nb201.is_connected(cfg)
    (15625, True)
    >>> round(nb201.accuracy(cfg, "cifar10"), 2)
    94.37
    >>> nb201.arch_str(cfg) == best, nb201.index(cfg)
    (True, 6111)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nas.graph import Graph
from nas.space import Choice, Config, InvalidConfigError, SearchSpace

__all__ = [
    "DATASETS",
    "DEVICES",
    "EDGES",
    "OPS",
    "NB201Space",
    "accuracy",
    "all_configs",
    "arch_str",
    "energy",
    "features_all",
    "from_arch_str",
    "index",
    "is_connected",
    "latency",
    "space",
    "table",
]

OPS: tuple[str, ...] = ("none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")
# (target node, source node) of each edge, in the order the arch string lists them.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGE_NAMES: tuple[str, ...] = tuple(f"node{j}.in{i}" for j, i in EDGES)
DEVICES: tuple[str, ...] = ("edgegpu", "raspi4", "edgetpu", "pixel3", "eyeriss", "fpga")
DATASETS: dict[str, str] = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16": "ImageNetTestAccuracy200Epochs",
}
_DATA = Path(__file__).with_name("data")
_ACCURACY_FILE = _DATA / "nb201_accuracy_200ep.csv.gz"
_N = len(OPS) ** len(EDGES)
_NONE, _SKIP, _POOL, _C1, _C3 = range(len(OPS))
_REAL_OPS = OPS[1:]  # every op but "none"


# ----------------------------------------------------------------------------------------- structure
_OP_INDEX = {op: k for k, op in enumerate(OPS)}


def _ops_of(cfg: Mapping[str, Any]) -> tuple[int, ...]:
    """Op index of each edge, validated against the space."""
    # Fast path for the common case (a complete, valid config); anything else goes through the space's
    # validation, which names the bad dimension or value.
    if isinstance(cfg, Mapping) and len(cfg) == len(EDGE_NAMES):
        try:
            return tuple(_OP_INDEX[cfg[name]] for name in EDGE_NAMES)
        except (KeyError, TypeError):
            pass
    return tuple(int(i) for i in space.to_indices(cfg))


def _code(ops: Iterable[int]) -> int:
    """Base-5 number of the op indices (first edge most significant): a dense id in [0, 15625)."""
    c = 0
    for o in ops:
        c = c * len(OPS) + o
    return c


def _reach(ops: tuple[int, ...]) -> tuple[list[bool], list[bool]]:
    """Nodes reachable from the input, and nodes from which the output is reachable, over non-none edges."""
    on = {(j, i): ops[e] != _NONE for e, (j, i) in enumerate(EDGES)}
    fwd = [True, False, False, False]
    for j in (1, 2, 3):
        fwd[j] = any(fwd[i] and on[j, i] for i in range(j))
    bwd = [False, False, False, True]
    for i in (2, 1, 0):
        bwd[i] = any(bwd[j] and on[j, i] for j in range(i + 1, 4))
    return fwd, bwd


@functools.cache
def _structure(ops: tuple[int, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Structure-aware feature vector of one cell and the feature names (cached: only 15,625 cells exist).

    Why these features: the devices run the whole network (stem + 3 stages of 5 cells), so latency is close to
    a sum of per-operation costs, but *which* operations cost something differs by device. Operations on an
    edge whose source is unreachable from the input still run on zeros in eager frameworks, while graph
    compilers may prune operations whose result never reaches the output. Additions (node inputs > 1) and the
    longest chain of convolutions (sequential depth vs. parallel branches) matter on parallel hardware.
    """
    fwd, bwd = _reach(ops)
    f: list[float] = []
    names: list[str] = []

    def add(name: str, value: float) -> None:
        names.append(name)
        f.append(float(value))

    # 1. one-hot of every edge (the DyNAS-T-style encoding)
    for e, name in enumerate(EDGE_NAMES):
        for k, op in enumerate(OPS):
            add(f"{name}={op}", ops[e] == k)
    # 2. liveness of every real op: on a path input -> output ("live"), fed only by zeros ("dead_in": the
    #    source is unreachable from the input), or reachable but never reaching the output ("dead_out").
    live = [ops[e] != _NONE and fwd[i] and bwd[j] for e, (j, i) in enumerate(EDGES)]
    dead_in = [ops[e] != _NONE and not fwd[i] for e, (j, i) in enumerate(EDGES)]
    dead_out = [ops[e] != _NONE and fwd[i] and not bwd[j] for e, (j, i) in enumerate(EDGES)]
    for e, name in enumerate(EDGE_NAMES):
        for k, op in enumerate(OPS[1:], start=1):
            add(f"live:{name}={op}", live[e] and ops[e] == k)
    for k, op in enumerate(OPS):
        add(f"count:{op}", sum(o == k for o in ops))
    # "used": the result reaches the output (whether or not the input is real). HW-NAS-Bench's edge GPU skips
    # operations whose result is never used but pays for used ones on zeros; its phones and Pi pay for more.
    used = [ops[e] != _NONE and bwd[j] for e, (j, i) in enumerate(EDGES)]
    zero_used = [u and not fwd[i] for u, (j, i) in zip(used, EDGES)]
    for e, name in enumerate(EDGE_NAMES):
        for k, op in enumerate(OPS[1:], start=1):
            add(f"used:{name}={op}", used[e] and ops[e] == k)
    for label, mask in (
        ("live", live),
        ("used", used),
        ("dead_in", dead_in),
        ("zero_used", zero_used),
        ("dead_out", dead_out),
    ):
        for k, op in enumerate(OPS[1:], start=1):
            add(f"{label}_count:{op}", sum(m and o == k for m, o in zip(mask, ops)))
    # 3. which live operations feed each node
    for node in (1, 2, 3):
        for k, op in enumerate(OPS[1:], start=1):
            add(
                f"node{node}_live_in:{op}",
                sum(live[e] and ops[e] == k for e, (j, _) in enumerate(EDGES) if j == node),
            )
    # which used operations feed each node and consume each node's output (operator fusion on GPUs and
    # compilers depends on these neighbourhoods)
    for node in (1, 2, 3):
        for k, op in enumerate(OPS[1:], start=1):
            add(
                f"node{node}_used_in:{op}",
                sum(used[e] and ops[e] == k for e, (j, _) in enumerate(EDGES) if j == node),
            )
    for node in (0, 1, 2):
        for k, op in enumerate(OPS[1:], start=1):
            add(
                f"node{node}_used_out:{op}",
                sum(used[e] and ops[e] == k for e, (_, i) in enumerate(EDGES) if i == node),
            )
    # 4. path structure over live edges: longest / shortest path, most convolutions on one path, path count.
    #    convs / conv3 maximise over all paths on their own, not along the longest path (see the class docs).
    longest = [0, -99, -99, -99]
    shortest = [0, 99, 99, 99]
    convs = [0, -99, -99, -99]
    conv3 = [0, -99, -99, -99]
    paths = [1, 0, 0, 0]
    for j in (1, 2, 3):
        for e, (jj, i) in enumerate(EDGES):
            if jj != j or not live[e]:
                continue
            # skip_connect is an identity, not a layer: it lengthens no path of computation.
            step = ops[e] != _SKIP
            longest[j] = max(longest[j], longest[i] + step)
            shortest[j] = min(shortest[j], shortest[i] + step)
            convs[j] = max(convs[j], convs[i] + (ops[e] in (_C1, _C3)))
            conv3[j] = max(conv3[j], conv3[i] + (ops[e] == _C3))
            paths[j] += paths[i]
    connected = fwd[3]
    add("connected", connected)
    add("depth_longest", longest[3] if connected else 0)
    add("depth_shortest", shortest[3] if connected else 0)
    add("convs_on_longest_path", convs[3] if connected else 0)
    add("conv3_on_longest_path", conv3[3] if connected else 0)
    add("paths", paths[3])
    add("live_nodes", sum(fwd[n] and bwd[n] for n in (1, 2)))
    # An intermediate node whose value reaches the output is materialised (summed, stored) even when it only
    # holds zeros: on the edge GPU each one costs about as much as a convolution.
    for n in (1, 2):
        add(f"node{n}_used", bwd[n])
        add(f"node{n}_zero", not fwd[n])
    add("used_nodes", sum(bwd[n] for n in (1, 2)))
    add("used_zero_nodes", sum(bwd[n] and not fwd[n] for n in (1, 2)))
    # additions: a node with k non-none inputs sums k tensors (k - 1 adds); count all and live ones
    n_in = [sum(ops[e] != _NONE for e, (j, _) in enumerate(EDGES) if j == node) for node in (1, 2, 3)]
    n_live_in = [sum(live[e] for e, (j, _) in enumerate(EDGES) if j == node) for node in (1, 2, 3)]
    n_used_in = [sum(used[e] for e, (j, _) in enumerate(EDGES) if j == node) for node in (1, 2, 3)]
    add("adds", sum(max(k - 1, 0) for k in n_in))
    add("live_adds", sum(max(k - 1, 0) for k in n_live_in))
    add("used_adds", sum(max(k - 1, 0) for k in n_used_in))
    arr = np.asarray(f, dtype=np.float64)
    arr.setflags(write=False)
    return arr, tuple(names)


@functools.cache
def _graph(ops: tuple[int, ...]) -> Graph:
    """Live-operation graph of a cell (see :meth:`NB201Space.graph`)."""
    fwd, bwd = _reach(ops)
    live = [e for e, (j, i) in enumerate(EDGES) if ops[e] != _NONE and fwd[i] and bwd[j]]
    node_of = {e: n for n, e in enumerate(live, start=1)}  # op node of each live edge
    preds: list[tuple[int, ...]] = [()]
    for e in live:
        source = EDGES[e][1]
        preds.append((0,) if source == 0 else tuple(node_of[f] for f in live if EDGES[f][0] == source))
    preds.append(tuple(node_of[e] for e in live if EDGES[e][0] == 3))
    labels = ("input", *(OPS[ops[e]] for e in live), "output")
    return Graph(labels=labels, preds=tuple(preds))


class NB201Space(SearchSpace):
    """The NAS-Bench-201 cell space with structure-aware predictor features.

    ``features(cfg)`` starts with the one-hot encoding of the six edges (the first 30 entries, named
    ``node2.in1=nor_conv_3x3`` etc.) and adds what the cell's graph says: the same one-hot restricted to live
    and to used operations, per-op counts split by liveness (live: on an input-to-output path; used: the
    result reaches the output; dead_in / zero_used: fed only by zeros; dead_out: never reaches the output),
    the ops feeding and consuming each node, which intermediate nodes are materialised, path depths, the most
    convolutions on one path and the number of additions. ``benchmarks/predictors.py`` measures what they
    bring over the one-hot encoding on the HW-NAS-Bench devices.

    Path features count over the input-to-output paths of non-``none`` edges (0 for a disconnected cell):
    ``depth_longest`` / ``depth_shortest`` are the most / fewest layers on one path (a ``skip_connect`` adds
    no layer), ``paths`` how many paths there are. ``convs_on_longest_path`` (``conv3_on_longest_path``) is the
    most convolutions (3x3 convolutions) on any one path, which need not be a longest one: in
    ``|none~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|`` the longest path is two pools
    and the feature is 1, from the direct 1x1 convolution (the names are kept: saved predictors use them).

    Example:
        >>> len(space.feature_names) == space.features(space.max()).shape[0]
        True
    """

    def __init__(self) -> None:
        super().__init__("nb201", [Choice(name, OPS) for name in EDGE_NAMES])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return _structure((0,) * len(EDGES))[1]

    def features(self, cfg: Mapping[str, Any]) -> np.ndarray:
        return _structure(_ops_of(cfg))[0].copy()

    def features_matrix(self, configs: Iterable[Mapping[str, Any]]) -> np.ndarray:
        rows = [_structure(_ops_of(c))[0] for c in configs]
        return np.vstack(rows) if rows else np.zeros((0, len(self.feature_names)))

    def graph(self, cfg: Mapping[str, Any]) -> Graph:
        """The cell as a graph of its *live* operations (on a path from the input to the output).

        Operations become nodes (between an ``input`` and an ``output`` node), fed by the operations that enter
        their source node. Dead operations are left out: cells that differ only in dead edges, or in the order
        of equivalent branches, get the same graph (8,764 graphs for the 15,284 connected cells, the classes of
        graph isomorphism). An operation that never reaches the output changes nothing; one fed only by zeros is
        taken as zero, as NAS-Bench-201's own unique strings do, though a ReLU-Conv-BN on zeros outputs its
        BatchNorm bias, a constant (the CIFAR-10 accuracy of such cells differs from that of the other cells of
        their graph by +0.01 points on average). ``skip_connect`` stays a node although it is the identity, so
        the graph is finer than the function: cells that differ only in chains of skips (``x`` vs
        ``skip(skip(x))``) get different graphs. Contracting skips would leave 5,424 distinct networks;
        NAS-Bench-201 counts 6,466 unique strings over all 15,625 cells (theirs contract skips but keep zero-fed
        terms such as ``#+#``).

        Example:
            >>> g = space.graph(from_arch_str("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"))
            >>> g.labels, g.preds
            (('input', 'skip_connect', 'output'), ((), (0,), (1,)))
        """
        return _graph(_ops_of(cfg))

    def degenerate_reason(self, cfg: Mapping[str, Any]) -> str | None:
        """``"disconnected"`` for a cell whose output is disconnected from the input (see :func:`is_connected`):
        its latency is that of an empty network (0.05 ms on pixel3 against a 10.7 ms median), so ``nas fit``
        leaves it out.

        Example:
            >>> space.degenerate_reason(space.min()), space.degenerate_reason(space.max())
            ('disconnected', None)
        """
        return None if is_connected(cfg) else "disconnected"

    def __reduce__(self):  # one instance per process; unpickling (Ray) rebuilds it
        return (NB201Space, ())


space = NB201Space()


# ----------------------------------------------------------------------------------------- arch strings
def _parse_arch(s: str) -> tuple[int, ...]:
    """Op index of each edge of an arch string; raises InvalidConfigError saying what is wrong."""
    if not isinstance(s, str):
        raise InvalidConfigError(f"an NB201 arch string must be a str, got {type(s).__name__}")
    expected = "expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with op one of " + ", ".join(OPS)
    nodes = s.strip().split("+")
    if len(nodes) != 3:
        raise InvalidConfigError(f"arch string {s!r} has {len(nodes)} node groups; {expected}")
    ops: list[int] = []
    for j, group in enumerate(nodes, start=1):
        if not (len(group) > 1 and group.startswith("|") and group.endswith("|")):
            raise InvalidConfigError(
                f"arch string {s!r}: node group {group!r} is not wrapped in '|'; {expected}"
            )
        edges = group[1:-1].split("|")
        if len(edges) != j:
            raise InvalidConfigError(
                f"arch string {s!r}: node {j} needs {j} inputs, got {len(edges)}; {expected}"
            )
        for i, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if not sep or src != str(i):
                raise InvalidConfigError(
                    f"arch string {s!r}: edge {edge!r} of node {j} should be 'op~{i}'; {expected}"
                )
            if op not in _OP_INDEX:
                raise InvalidConfigError(
                    f"arch string {s!r}: unknown operation {op!r}; use one of {list(OPS)}"
                )
            ops.append(_OP_INDEX[op])
    return tuple(ops)


def _config(ops: tuple[int, ...]) -> Config:
    return Config(zip(EDGE_NAMES, (OPS[o] for o in ops)))


def from_arch_str(s: str) -> Config:
    """Parse an arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` into a config.

    Raises :class:`nas.InvalidConfigError` saying which part of the string is wrong.

    Example:
        >>> dict(from_arch_str("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_1x1~2|"))["node2.in0"]
        'skip_connect'
    """
    return _config(_parse_arch(s))


def arch_str(cfg: Mapping[str, Any]) -> str:
    """The arch string of a config (inverse of :func:`from_arch_str`)."""
    cfg = space.validate(cfg)
    groups = ["|" + "|".join(f"{cfg[f'node{j}.in{i}']}~{i}" for i in range(j)) + "|" for j in (1, 2, 3)]
    return "+".join(groups)


def is_connected(cfg: Mapping[str, Any]) -> bool:
    """True when the output node is reachable from the input through non-``none`` edges.

    Example:
        >>> is_connected(space.min())
        False
    """
    return _reach(_ops_of(cfg))[0][3]


# ----------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _accuracy_table() -> Any:
    import pandas as pd

    df = pd.read_csv(_ACCURACY_FILE)
    if len(df) != _N:
        raise RuntimeError(f"{_ACCURACY_FILE} has {len(df)} rows, expected {_N}; the package data is damaged")
    return df


@functools.lru_cache(maxsize=1)
def _code_to_index() -> np.ndarray:
    """NB201 index of each base-5 op code (the benchmark's row order is not the code order)."""
    lookup = np.full(_N, -1, dtype=np.int64)
    for row, s in enumerate(_accuracy_table()["ArchitectureString"]):
        lookup[_code(_parse_arch(s))] = row
    if (lookup < 0).any():
        raise RuntimeError(f"{_ACCURACY_FILE} does not list every cell once; the package data is damaged")
    return lookup


@functools.lru_cache(maxsize=1)
def all_configs() -> tuple[Config, ...]:
    """All 15,625 cells in NB201 index order (row ``i`` is ``index(cfg) == i``)."""
    return tuple(_config(_parse_arch(s)) for s in _accuracy_table()["ArchitectureString"])


def index(cfg: Mapping[str, Any]) -> int:
    """The NB201 index of a cell: its row in the benchmark tables."""
    return int(_code_to_index()[_code(_ops_of(cfg))])


def accuracy(cfg: Mapping[str, Any], dataset: str = "cifar10") -> float:
    """Test accuracy in percent after 200 epochs (mean of 3 seeds) on ``cifar10``, ``cifar100`` or ``imagenet16``.

    Example:
        >>> accuracy(space.min())  # a disconnected cell guesses
        10.0
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {list(DATASETS)}")
    return float(_accuracy_table()[DATASETS[dataset]].iat[index(cfg)])


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown NB201 device {device!r}; use one of {list(DEVICES)}")
    return device


@functools.cache
def _device_metrics(device: str) -> dict[str, np.ndarray]:
    """Every metric of the built-in ``nb201-<device>`` profile as arrays over NB201 indices (NaN = not measured)."""
    import hw_profiles

    profile = hw_profiles.load(f"nb201-{device}")
    lookup = _code_to_index()
    rows = np.array([lookup[_code(_ops_of(c))] for c in profile.configs], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for metric in ("latency_ms", *profile.extras):
        arr = np.full(_N, np.nan)
        arr[rows] = profile.metric(metric)
        arr.setflags(write=False)
        out[metric] = arr
    return out


def _metric_by_index(device: str, metric: str) -> np.ndarray:
    return _device_metrics(device)[metric]


def latency(cfg: Mapping[str, Any], device: str) -> float:
    """Latency in ms of the CIFAR-10 network built from this cell on ``device`` (HW-NAS-Bench).

    Raises ``ValueError`` for an unknown device and for edgetpu cells HW-NAS-Bench did not measure.

    Example:
        >>> round(latency(from_arch_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"), "raspi4"), 2)
        54.78
    """
    value = _metric_by_index(_check_device(device), "latency_ms")[index(cfg)]
    if np.isnan(value):
        raise ValueError(
            f"no {device} latency for cell {arch_str(cfg)}: HW-NAS-Bench did not measure it "
            f"(4,699 edgetpu cells are missing); use another device or skip this cell"
        )
    return float(value)


def energy(cfg: Mapping[str, Any], device: str) -> float:
    """Energy in mJ per inference on ``edgegpu``, ``eyeriss`` or ``fpga`` (HW-NAS-Bench)."""
    if _check_device(device) not in ("edgegpu", "eyeriss", "fpga"):
        raise ValueError(f"HW-NAS-Bench gives no energy for {device!r}; use edgegpu, eyeriss or fpga")
    return float(_metric_by_index(device, "energy_mj")[index(cfg)])


@functools.lru_cache(maxsize=1)
def features_all() -> np.ndarray:
    """``space.features`` of all 15,625 cells in NB201 index order (read-only, cached)."""
    X = space.features_matrix(all_configs())
    X.setflags(write=False)
    return X


def table() -> Any:
    """All 15,625 cells as a ``pandas.DataFrame`` indexed by NB201 index.

    Columns: ``arch``, ``cifar10``, ``cifar100``, ``imagenet16`` (accuracy %), ``latency_<device>`` (ms, NaN
    where not measured), ``energy_<device>`` (mJ) for edgegpu/eyeriss/fpga, and ``connected``.
    """
    import pandas as pd

    acc = _accuracy_table()
    df = pd.DataFrame({"arch": acc["ArchitectureString"].to_numpy()})
    for name, column in DATASETS.items():
        df[name] = acc[column].to_numpy()
    for device in DEVICES:
        df[f"latency_{device}"] = _metric_by_index(device, "latency_ms")
    for device in ("edgegpu", "eyeriss", "fpga"):
        df[f"energy_{device}"] = _metric_by_index(device, "energy_mj")
    df["connected"] = features_all()[:, space.feature_names.index("connected")].astype(bool)
    df.index.name = "index"
    return df
