"""Search-space DSL: discrete dimensions, spaces, immutable configs and their encodings.

A :class:`SearchSpace` is a named, ordered set of :class:`Choice` dimensions. A :class:`Config` is one point of
it: an immutable, hashable mapping ``name -> value`` with a stable JSON form and a stable ``key``.

Values of a dimension are listed from the smallest network to the largest, so ``space.min()`` takes the first
value of every dimension and ``space.max()`` the last.

A dimension can be *conditional*: ``Choice("s1.b3.kernel", (3, 5, 7), when={"s1.depth": (4,)})`` only matters
when stage 1 runs four blocks. :meth:`SearchSpace.canonical` sets inactive dimensions to their canonical value
(the first value unless given), so that configs describing the same network share one key.

Example:
    >>> from nas.space import Choice, SearchSpace
    >>> space = SearchSpace("toy", [Choice("depth", (1, 2)), Choice("b1.width", (8, 16), when={"depth": (2,)})])
    >>> space.size
    3
    >>> cfg = space.canonical({"depth": 1, "b1.width": 16})
    >>> dict(cfg)
    {'depth': 1, 'b1.width': 8}
    >>> space.from_indices(space.to_indices(cfg)) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.graph import Graph

Value = int | float | str | bool
SeedLike = int | np.random.Generator | None

__all__ = [
    "Choice",
    "Config",
    "InvalidConfigError",
    "SearchSpace",
    "Value",
    "as_generator",
]


class InvalidConfigError(ValueError):
    """A config, dimension or value does not fit the search space.

    The message names the offending dimension and what would be accepted.
    """


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Turn an int seed, ``None`` or an existing generator into a ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer)):
        return np.random.default_rng(seed)
    raise TypeError(f"expected an int seed, None or numpy.random.Generator, got {type(seed).__name__}")


def _check_scalar(name: str, value: Any) -> Value:
    """Normalise numpy scalars to Python ones and reject values JSON cannot carry exactly."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidConfigError(f"{name!r}: value {value!r} is not finite; use a finite number")
        return value
    raise InvalidConfigError(
        f"{name!r}: value {value!r} of type {type(value).__name__} is not allowed; "
        "use an int, float, str or bool"
    )


def _same_value(a: Value, b: Value) -> bool:
    """Equality that keeps bools, ints and floats apart (``True != 1``, ``1 != 1.0``) like their JSON does."""
    return type(a) is type(b) and a == b


class Config(Mapping[str, Value]):
    """An immutable, hashable assignment of values to dimension names.

    ``to_json()`` keeps the space's dimension order; ``key`` hashes the sorted JSON, so it is the same in every
    process and on every machine, whatever order the values were given in.

    Example:
        >>> c = Config({"depth": 2, "act": "relu"})
        >>> Config.from_json(c.to_json()) == c
        True
        >>> c.key == Config({"act": "relu", "depth": 2}).key
        True
    """

    __slots__ = ("_items", "_key")

    def __init__(self, values: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()):
        items = dict(values)
        for name in items:
            if not isinstance(name, str):
                raise InvalidConfigError(f"dimension names must be strings, got {name!r}")
        self._items: dict[str, Value] = {name: _check_scalar(name, v) for name, v in items.items()}
        canonical_json = json.dumps(self._items, sort_keys=True, separators=(",", ":"))
        self._key = hashlib.sha256(canonical_json.encode()).hexdigest()[:20]

    @property
    def key(self) -> str:
        """Stable 20-hex-digit identifier of this config (SHA-256 of its sorted JSON)."""
        return self._key

    def to_json(self) -> str:
        """Compact JSON object, in the order the values were given (the space order for validated configs)."""
        return json.dumps(self._items, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Config:
        """Parse the output of :meth:`to_json` (any JSON object of scalars)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidConfigError(f"config JSON does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidConfigError(f"config JSON must be an object, got {type(data).__name__}")
        return cls(data)

    def replace(self, **changes: Value) -> Config:
        """A copy with some values changed (dotted names: ``cfg.replace(**{"s1.depth": 3})``)."""
        return Config({**self._items, **changes})

    def __getitem__(self, name: str) -> Value:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        """Equal to a Config, or a plain mapping, with the same key: the same names and values of the same types.

        ``Config({"a": 1}) != {"a": True}`` (and ``!= {"a": 1.0}``), though ``{"a": 1} == {"a": True}``: their
        JSON and keys differ, so they are different configs in the store, and a comparison that said otherwise
        would disagree with ``Config(other)``. Numpy scalars compare as the Python values they become.
        """
        if isinstance(other, Config):
            return self._key == other._key
        if isinstance(other, Mapping):
            try:
                return self._key == Config(other)._key
            except InvalidConfigError:  # not a config at all (a non-string name, a list value)
                return False
        return NotImplemented

    def __repr__(self) -> str:
        return f"Config({self._items!r})"

    def __reduce__(self):  # picklable for Ray's object store (we never unpickle user files)
        return (Config, (self._items,))


@dataclass(frozen=True)
class Choice:
    """A categorical dimension: one of ``values``, listed from the smallest network to the largest.

    Args:
        name: dimension name; dots group dimensions (``"stage1.block0.kernel"``).
        values: allowed values (ints, floats, strings or bools; no duplicates).
        when: optional condition ``{other_dimension: allowed_values}``; the dimension is active only when every
            named dimension (which must come earlier in the space) takes one of the listed values.
        canonical: the value an inactive dimension takes; defaults to the first value.

    Example:
        >>> Choice("kernel", (3, 5, 7)).index(5)
        1
    """

    name: str
    values: tuple[Value, ...]
    when: Mapping[str, tuple[Value, ...]] = field(default_factory=dict)
    canonical: Value | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfigError(f"a dimension needs a non-empty string name, got {self.name!r}")
        if isinstance(self.values, str | bytes) or not isinstance(self.values, Iterable):
            # ("relu") is the string "relu", not a tuple: it would become the values "r", "e", "l", "u".
            raise InvalidConfigError(
                f"{self.name!r}: values must list the choices, e.g. ({self.values!r},), got {self.values!r}"
            )
        values = tuple(_check_scalar(self.name, v) for v in self.values)
        if not values:
            raise InvalidConfigError(f"{self.name!r}: a dimension needs at least one value")
        for i, v in enumerate(values):
            if any(_same_value(v, w) for w in values[:i]):
                raise InvalidConfigError(f"{self.name!r}: value {v!r} is listed twice in {values!r}")
        object.__setattr__(self, "values", values)
        for k, v in dict(self.when).items():
            # A bare value would be iterated: "relu" as ("r", "e", "l", "u"), 2 as a TypeError.
            if isinstance(v, str | bytes) or not isinstance(v, Iterable):
                raise InvalidConfigError(
                    f"{self.name!r}: when={{{k!r}: {v!r}}} must list the allowed values of {k!r}, "
                    f"e.g. when={{{k!r}: ({v!r},)}}"
                )
        when = {str(k): tuple(_check_scalar(k, x) for x in v) for k, v in dict(self.when).items()}
        object.__setattr__(self, "when", when)
        canonical = values[0] if self.canonical is None else _check_scalar(self.name, self.canonical)
        if not any(_same_value(canonical, v) for v in values):
            raise InvalidConfigError(f"{self.name!r}: canonical value {canonical!r} is not one of {values!r}")
        object.__setattr__(self, "canonical", canonical)

    def __hash__(self) -> int:
        return hash((self.name, self.values, tuple(sorted(self.when.items())), self.canonical))

    @property
    def is_numeric(self) -> bool:
        """True when every value is an int or float (bools are categorical)."""
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in self.values)

    def index(self, value: Any) -> int:
        """Position of ``value`` in ``values``; raises :class:`InvalidConfigError` naming the allowed values."""
        if isinstance(value, np.generic):  # np.str_("relu"), np.True_, np.float64(0.5): a user's numpy values
            value = value.item()
        for i, v in enumerate(self.values):
            if _same_value(v, value):
                return i
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Accept 5.0 for 5 and 5 for 5.0 (JSON blurs them), also in mixed dims such as (0.5, "2:4", 1.0);
            # never bools.
            for i, v in enumerate(self.values):
                if isinstance(v, int | float) and not isinstance(v, bool) and float(value) == float(v):
                    return i
        raise InvalidConfigError(
            f"{self.name!r}: {value!r} is not allowed; choose one of {list(self.values)}"
        )

    def is_active(self, values: Mapping[str, Value]) -> bool:
        """Whether this dimension's own condition holds on the values of the dimensions it depends on.

        A parent that is itself inactive makes this dimension inactive too; :meth:`SearchSpace.is_active` and
        :meth:`SearchSpace.inactive_names` follow the chain, this method does not.
        """
        return all(any(_same_value(values[p], a) for a in allowed) for p, allowed in self.when.items())

    def with_prefix(self, prefix: str) -> Choice:
        """The same dimension renamed to ``prefix.name`` (conditions renamed too)."""
        return Choice(
            f"{prefix}.{self.name}",
            self.values,
            {f"{prefix}.{p}": a for p, a in self.when.items()},
            self.canonical,
        )

    def __repr__(self) -> str:
        cond = f", when={dict(self.when)}" if self.when else ""
        return f"Choice({self.name!r}, {list(self.values)}{cond})"


class SearchSpace:
    """A named, ordered set of :class:`Choice` dimensions.

    Subclasses may override :meth:`features` (and :attr:`feature_names`) to give predictors structure-aware
    inputs; everything else works from the dimensions alone.

    Example:
        >>> space = SearchSpace("s", [Choice("k", (3, 5)), Choice("w", (0.5, 1.0))])
        >>> space.max()
        Config({'k': 5, 'w': 1.0})
        >>> space.size
        4
        >>> (space.with_prefix("a") + space.with_prefix("b")).names
        ('a.k', 'a.w', 'b.k', 'b.w')
    """

    def __init__(self, name: str, dims: Sequence[Choice]):
        self.name = str(name)
        self._by_name: dict[str, Choice] = {}
        for d in dims:
            if not isinstance(d, Choice):
                raise TypeError(f"space {name!r}: expected Choice dimensions, got {type(d).__name__}")
            if d.name in self._by_name:
                raise InvalidConfigError(f"space {name!r}: dimension {d.name!r} is defined twice")
            when = {}
            for parent, allowed in d.when.items():
                if parent not in self._by_name:
                    raise InvalidConfigError(
                        f"space {name!r}: {d.name!r} depends on {parent!r}, which must be defined before it"
                    )
                # The parent's own values: a condition is matched exactly, so {"depth": (2.0,)} on an int
                # depth would otherwise never hold and leave the dimension inactive for good.
                when[parent] = tuple(
                    self._by_name[parent].values[self._by_name[parent].index(a)] for a in allowed
                )
            if when:  # (2,) == (2.0,) in Python, so not compared: always the parent's values
                d = dataclasses.replace(d, when=when)
            self._by_name[d.name] = d
        self.dims: tuple[Choice, ...] = tuple(self._by_name.values())

    # ----------------------------------------------------------------------------------------- structure
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def __getitem__(self, name: str) -> Choice:
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidConfigError(self._unknown_message(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Choice]:
        return iter(self.dims)

    def __len__(self) -> int:
        return len(self.dims)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and (self.name, self.dims) == (other.name, other.dims)

    def __hash__(self) -> int:
        return hash((self.name, self.dims))

    def __repr__(self) -> str:
        lines = [f"SearchSpace({self.name!r}, {len(self.dims)} dimensions, size={self.size:.3g})"]
        lines += [f"  {d!r}" for d in self.dims[:40]]
        if len(self.dims) > 40:
            lines.append(f"  ... {len(self.dims) - 40} more")
        return "\n".join(lines)

    def with_prefix(self, prefix: str, name: str | None = None) -> SearchSpace:
        """All dimensions renamed to ``prefix.<name>``."""
        return SearchSpace(name or f"{prefix}.{self.name}", [d.with_prefix(prefix) for d in self.dims])

    def __add__(self, other: SearchSpace) -> SearchSpace:
        """Concatenate two spaces (names must not clash)."""
        return SearchSpace(f"{self.name}+{other.name}", self.dims + other.dims)

    def renamed(self, name: str) -> SearchSpace:
        return SearchSpace(name, self.dims)

    @property
    def cardinalities(self) -> np.ndarray:
        """Number of values of each dimension, in order (for integer encodings)."""
        return np.array([len(d.values) for d in self.dims], dtype=np.int64)

    @property
    def size(self) -> int:
        """Exact number of distinct networks (canonical configs) in the space."""
        total = 1
        for component in self._components():
            total *= self._count_component(component)
        return total

    def _components(self) -> list[list[Choice]]:
        """Groups of dimensions linked by conditions; different groups vary independently."""
        parent_of = {d.name: d.name for d in self.dims}

        def find(n: str) -> str:
            while parent_of[n] != n:
                parent_of[n] = parent_of[parent_of[n]]
                n = parent_of[n]
            return n

        for d in self.dims:
            for p in d.when:
                parent_of[find(d.name)] = find(p)
        groups: dict[str, list[Choice]] = {}
        for d in self.dims:
            groups.setdefault(find(d.name), []).append(d)
        return list(groups.values())

    @staticmethod
    def _count_component(dims: list[Choice]) -> int:
        """Distinct canonical assignments of one group, counted dimension by dimension.

        The state carried forward is the values of the dimensions a later condition still reads, with the
        number of ways to reach it; so a chain of conditions (layer ``i`` exists only when layer ``i - 1`` does)
        costs a few states per dimension instead of every combination of its controllers.
        """
        last_read = {p: i for i, d in enumerate(dims) for p in d.when}
        by_name = {d.name: d for d in dims}
        # state: ((name, index of its value), ...) of the controllers still read later -> count
        states: dict[tuple[tuple[str, int], ...], int] = {(): 1}
        for i, d in enumerate(dims):
            needed_later = last_read.get(d.name, -1) > i
            nxt: dict[tuple[tuple[str, int], ...], int] = {}
            for state, n in states.items():
                # j = -1 marks a controller that is itself inactive: everything conditioned on it is inactive too
                known = {name: by_name[name].values[j] for name, j in state if j >= 0}
                active = not d.when or (all(p in known for p in d.when) and d.is_active(known))
                # An inactive dimension only ever takes its canonical value; other assignments are duplicates.
                options = range(len(d.values)) if active else (-1,)
                kept = tuple((name, j) for name, j in state if last_read[name] > i)
                if needed_later:
                    for j in options:
                        key = (*kept, (d.name, j))
                        nxt[key] = nxt.get(key, 0) + n
                else:
                    nxt[kept] = nxt.get(kept, 0) + n * len(options)
            states = nxt
        return sum(states.values())

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"{name!r} is not a dimension of space {self.name!r}{hint}"

    # ----------------------------------------------------------------------------------------- configs
    def validate(self, cfg: Mapping[str, Any]) -> Config:
        """Check ``cfg`` against the space and return it as a :class:`Config` in space order.

        Raises :class:`InvalidConfigError` naming missing, unknown or out-of-range dimensions.
        """
        if not isinstance(cfg, Mapping):
            raise InvalidConfigError(
                f"space {self.name!r}: a config must be a mapping of dimension -> value, got {type(cfg).__name__}"
            )
        unknown = [k for k in cfg if k not in self._by_name]
        if unknown:
            raise InvalidConfigError(self._unknown_message(unknown[0]) + f" (unknown keys: {unknown[:5]})")
        missing = [d.name for d in self.dims if d.name not in cfg]
        if missing:
            raise InvalidConfigError(
                f"space {self.name!r}: config lacks {len(missing)} dimension(s), first {missing[:5]}; "
                f"e.g. {missing[0]!r} takes one of {list(self[missing[0]].values)}"
            )
        return Config((d.name, d.values[d.index(cfg[d.name])]) for d in self.dims)

    def canonical(self, cfg: Mapping[str, Any]) -> Config:
        """Validate ``cfg`` and set every inactive dimension to its canonical value.

        An inactive dimension may be left out (``{"depth": 2}`` where ``block3.kernel`` only matters at depth 3);
        every active one must be given. Raises :class:`InvalidConfigError` naming unknown keys, bad values and
        missing active dimensions.

        Example:
            >>> s = SearchSpace("toy", [Choice("depth", (2, 3)), Choice("k3", (3, 5), when={"depth": (3,)})])
            >>> s.canonical({"depth": 2})
            Config({'depth': 2, 'k3': 3})
        """
        if not isinstance(cfg, Mapping):
            return self.validate(cfg)  # raises, naming the type
        unknown = [k for k in cfg if k not in self._by_name]
        if unknown:
            raise InvalidConfigError(self._unknown_message(unknown[0]) + f" (unknown keys: {unknown[:5]})")
        values: dict[str, Value] = {}
        missing: list[str] = []
        inactive: set[str] = set()
        for d in self.dims:  # parents precede children, so each condition sees its parents' final values
            if d.when and not missing and not self._active_given(d, values, inactive):
                values[d.name] = d.canonical
                inactive.add(d.name)
            elif d.name in cfg:
                values[d.name] = d.values[d.index(cfg[d.name])]  # InvalidConfigError names a bad value
            else:
                missing.append(d.name)
        if missing:
            return self.validate(cfg)  # raises, naming the missing dimensions
        return Config(values)

    @staticmethod
    def _active_given(d: Choice, values: Mapping[str, Value], inactive: set[str]) -> bool:
        """Whether ``d`` matters: its condition holds on its parents' values and no parent is itself inactive
        (a dimension conditioned on an inactive one is inactive, whatever that parent's canonical value is)."""
        return not d.when or (inactive.isdisjoint(d.when) and d.is_active(values))

    def inactive_names(self, cfg: Mapping[str, Value]) -> frozenset[str]:
        """The dimensions that do not matter in ``cfg`` (their value is ignored; canonical configs hold the
        dimension's canonical value there).

        Example:
            >>> s = SearchSpace("toy", [Choice("depth", (2, 3)), Choice("k3", (3, 5), when={"depth": (3,)}),
            ...                         Choice("se3", (0, 1), when={"k3": (3,)})])
            >>> sorted(s.inactive_names({"depth": 2, "k3": 3, "se3": 0}))  # se3 follows k3 out
            ['k3', 'se3']
        """
        inactive: set[str] = set()
        for d in self.dims:
            if not self._active_given(d, cfg, inactive):
                inactive.add(d.name)
        return frozenset(inactive)

    def is_active(self, cfg: Mapping[str, Value], name: str) -> bool:
        """Whether dimension ``name`` matters in ``cfg`` (its condition holds and its parents matter)."""
        self[name]  # raises, naming the close matches, for an unknown name
        return name not in self.inactive_names(cfg)

    def max(self) -> Config:
        """The largest network: the last value of every dimension."""
        return self.canonical({d.name: d.values[-1] for d in self.dims})

    def min(self) -> Config:
        """The smallest network: the first value of every dimension."""
        return self.canonical({d.name: d.values[0] for d in self.dims})

    def sample(self, seed: SeedLike = None) -> Config:
        """One config, each dimension drawn uniformly, then made canonical."""
        rng = as_generator(seed)
        return self.canonical({d.name: d.values[int(rng.integers(len(d.values)))] for d in self.dims})

    def samples(self, n: int, seed: SeedLike = None, unique: bool = False) -> list[Config]:
        """``n`` sampled configs; with ``unique=True`` no key repeats (n must not exceed :attr:`size`)."""
        rng = as_generator(seed)
        if not unique:
            return [self.sample(rng) for _ in range(n)]
        if n > self.size:
            raise ValueError(f"asked for {n} unique configs but space {self.name!r} has only {self.size}")
        seen: dict[str, Config] = {}
        while len(seen) < n:
            c = self.sample(rng)
            seen.setdefault(c.key, c)
        return list(seen.values())

    def all_configs(self) -> Iterator[Config]:
        """Every distinct (canonical) config, in index order; only sensible for small spaces."""

        def rec(i: int, values: dict[str, Value], inactive: frozenset[str]) -> Iterator[Config]:
            if i == len(self.dims):
                yield Config(dict(values))
                return
            d = self.dims[i]
            active = self._active_given(d, values, set(inactive))
            below = inactive if active else inactive | {d.name}
            for v in d.values if active else (d.canonical,):
                values[d.name] = v
                yield from rec(i + 1, values, below)
            del values[d.name]

        return rec(0, {}, frozenset())

    # ----------------------------------------------------------------------------------------- encodings
    def to_indices(self, cfg: Mapping[str, Any]) -> np.ndarray:
        """Integer index of each value, in dimension order (the encoding evolution works on)."""
        cfg = self.validate(cfg)
        return np.array([d.index(cfg[d.name]) for d in self.dims], dtype=np.int64)

    def from_indices(self, indices: Sequence[int] | np.ndarray) -> Config:
        """Inverse of :meth:`to_indices` (the result is validated, not made canonical)."""
        idx = np.asarray(indices).reshape(-1)
        if idx.shape[0] != len(self.dims):
            raise InvalidConfigError(
                f"space {self.name!r}: expected {len(self.dims)} indices, got {idx.shape[0]}"
            )
        values = {}
        for d, i in zip(self.dims, idx.tolist()):
            if not float(i).is_integer() or not 0 <= int(i) < len(d.values):
                raise InvalidConfigError(
                    f"{d.name!r}: index {i!r} out of range; use an integer in [0, {len(d.values) - 1}]"
                )
            values[d.name] = d.values[int(i)]
        return Config(values)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the entries of :meth:`features`."""
        names: list[str] = []
        for d in self.dims:
            if d.is_numeric:
                names.append(d.name)
            else:
                names += [f"{d.name}={v}" for v in d.values]
        return tuple(names)

    def features(self, cfg: Mapping[str, Any]) -> np.ndarray:
        """Numeric feature vector for predictors.

        Numeric dimensions give their value, other dimensions a one-hot block; inactive dimensions give zeros,
        so a skipped block adds nothing. Subclasses override this with structure-aware features.
        """
        cfg = self.canonical(cfg)
        inactive = self.inactive_names(cfg)
        out: list[float] = []
        for d in self.dims:
            active = d.name not in inactive
            if d.is_numeric:
                out.append(float(cfg[d.name]) if active else 0.0)
            else:
                hot = d.index(cfg[d.name]) if active else -1
                out += [1.0 if j == hot else 0.0 for j in range(len(d.values))]
        return np.asarray(out, dtype=np.float64)

    def features_matrix(self, configs: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Stack :meth:`features` of many configs into a 2-D array."""
        rows = [self.features(c) for c in configs]
        return np.vstack(rows) if rows else np.zeros((0, len(self.feature_names)))

    def graph(self, cfg: Mapping[str, Any]) -> Graph | None:
        """The computational graph of ``cfg`` (a :class:`nas.graph.Graph`), or ``None`` (the default) when the
        space has no graph structure worth a graph kernel.

        Spaces of cells (NAS-Bench-201) override it; LINAS's ``"gbdt-wl"`` predictor then adds a
        Weisfeiler-Lehman graph-kernel model, which generalises across cells that share sub-structures.
        """
        return None

    def degenerate_reason(self, cfg: Mapping[str, Any]) -> str | None:
        """Why ``cfg`` is degenerate, a config whose measurements describe no real network and should not
        train a latency predictor (``nas fit`` leaves such profile rows out), or ``None`` (the default).

        NAS-Bench-201 overrides it: a cell whose output is disconnected from its input computes zeros, and its
        "latency" is that of an empty network.
        """
        return None

    def optuna_distributions(self) -> dict[str, Any]:
        """One ``optuna.distributions.CategoricalDistribution`` per dimension (optuna imported lazily)."""
        from optuna.distributions import CategoricalDistribution

        return {d.name: CategoricalDistribution(d.values) for d in self.dims}

    # ----------------------------------------------------------------------------------------- variation
    def mutate(self, cfg: Mapping[str, Any], seed: SeedLike = None, prob: float = 0.1) -> Config:
        """Resample each active dimension with probability ``prob`` to a different value; canonical result."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability must be in [0, 1], got {prob}")
        rng = as_generator(seed)
        values = dict(self.canonical(cfg))
        inactive: set[str] = set()
        for d in self.dims:  # in order, so that a mutated parent decides whether its children matter
            if not self._active_given(d, values, inactive):
                inactive.add(d.name)
            elif len(d.values) > 1 and rng.random() < prob:
                current = d.index(values[d.name])
                j = int(rng.integers(len(d.values) - 1))
                values[d.name] = d.values[j + (j >= current)]
        return self.canonical(values)

    def crossover(self, a: Mapping[str, Any], b: Mapping[str, Any], seed: SeedLike = None) -> Config:
        """Uniform crossover: each dimension from ``a`` or ``b`` with equal chance; canonical result."""
        rng = as_generator(seed)
        a, b = self.validate(a), self.validate(b)
        take_a = rng.random(len(self.dims)) < 0.5
        return self.canonical({d.name: (a if t else b)[d.name] for d, t in zip(self.dims, take_a)})
