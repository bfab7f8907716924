"""Objectives and constraints of a search, and factories for the usual ones.

An :class:`Objective` is a named function ``fn(cfg) -> float`` with a direction. Its ``target`` is the text after
``@`` in its name (``"latency@raspi4"`` -> ``"raspi4"``): objectives with a target belong to that hardware target's
front, objectives without one (accuracy, MACs) to every front, so several targets share accuracy evaluations.

A :class:`Constraint` bounds an objective (or its own metric): ``Constraint("latency@raspi4", "<=", 5.0)``.
Infeasible evaluations are stored but never on a front, and searchers are told how far they miss the bound.

Example:
    >>> from nas import Config
    >>> size = Objective("size", lambda cfg: float(cfg["w"]), direction="min", expensive=False)
    >>> size(Config({"w": 3}))
    3.0
    >>> Constraint("size", "<=", 2.0).violation(3.0)
    1.0
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.space import Config, SearchSpace

__all__ = [
    "Constraint",
    "LazyFunction",
    "Objective",
    "accuracy",
    "latency",
    "macs",
    "model_bytes",
    "params",
]

_DIRECTIONS = ("min", "max")
_OPERATORS = ("<=", ">=")


class LazyFunction:
    """A ``cfg -> float`` function built on first use, once per process.

    Ray ships objectives to worker actors by pickling them; a lazy function pickles only its ``build`` recipe,
    so each actor loads the supernet (or opens the device) once, on its first evaluation, and keeps it.

    Example:
        >>> f = LazyFunction(lambda: (lambda cfg: 2.0 * cfg["k"]))
        >>> f({"k": 3})
        6.0
    """

    def __init__(self, build: Callable[[], Callable[[Config], float]], description: str = ""):
        self.build = build
        self.description = description or getattr(build, "__name__", "lazy function")
        self._fn: Callable[[Config], float] | None = None
        self._lock = threading.Lock()

    def __call__(self, cfg: Config) -> float:
        if self._fn is None:
            with self._lock:  # threads of a local pool must not load the supernet twice
                if self._fn is None:
                    self._fn = self.build()
        return self._fn(cfg)

    def __getstate__(self) -> dict[str, Any]:
        return {"build": self.build, "description": self.description}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["build"], state["description"])

    def __repr__(self) -> str:
        return f"LazyFunction({self.description})"


@dataclass(frozen=True)
class Objective:
    """A named objective ``fn(cfg) -> float`` to maximise or minimise.

    Args:
        name: unique name; ``"metric@target"`` ties it to a hardware target (one Pareto front per target).
        fn: the function; it receives a canonical :class:`nas.Config`.
        direction: ``"max"`` or ``"min"``.
        expensive: ``True`` when it needs data or a device (accuracy, measured latency); ``False`` for cheap
            analytic or predicted values, which model-based searchers may call directly instead of modelling.
        graph_invariant: ``True`` when the value depends only on the function the architecture computes (its
            ``space.graph(cfg)``), not on which of several equivalent configs computes it: true of accuracy,
            not of latency (operations whose result is never used still run). Model-based searchers then reuse
            a measured value for every config with the same graph instead of spending evaluations on them. No
            effect on spaces without graphs.

    Example:
        >>> acc = Objective("accuracy", lambda cfg: 0.9, direction="max")
        >>> acc.target is None, Objective("latency@pixel3", len).target
        (True, 'pixel3')
    """

    name: str
    fn: Callable[[Config], float] = field(repr=False)
    direction: str = "min"
    expensive: bool = True
    graph_invariant: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"an objective needs a non-empty name, got {self.name!r}")
        if self.direction not in _DIRECTIONS:
            raise ValueError(
                f"objective {self.name!r}: direction must be 'max' or 'min', got {self.direction!r}"
            )
        if not callable(self.fn):
            raise TypeError(f"objective {self.name!r}: fn must be callable cfg -> float, got {self.fn!r}")

    @property
    def target(self) -> str | None:
        """Hardware target named after ``@`` in :attr:`name`, or ``None`` when shared by every target."""
        return self.name.split("@", 1)[1] if "@" in self.name else None

    @property
    def sign(self) -> float:
        """+1 for ``"min"``, -1 for ``"max"``: multiply a value by it to get the minimisation form."""
        return 1.0 if self.direction == "min" else -1.0

    def __call__(self, cfg: Config) -> float:
        value = self.fn(cfg)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"objective {self.name!r} returned {value!r}; it must return a number") from None
        if not math.isfinite(value):
            # Stores keep no infinities (SQL has none): an infinite value would read back as NaN, so a resumed
            # or reloaded run would see an "ok" evaluation without a value. Such a config counts as failed.
            raise ValueError(f"objective {self.name!r} returned {value} for config {cfg.to_json()}")
        return value

    def describe(self) -> dict[str, Any]:
        """JSON-able description (stored with a run and checked on resume)."""
        return {"name": self.name, "direction": self.direction, "expensive": self.expensive}


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, e.g. ``Constraint("latency@raspi4", "<=", 5.0)``.

    ``metric`` names an objective of the run; give ``fn`` to constrain a metric that is not an objective (it is
    computed and stored with every evaluation). An evaluation is feasible when every constraint holds.

    Example:
        >>> c = Constraint("latency@raspi4", "<=", 5.0)
        >>> c.violation(4.0), c.violation(6.5)
        (0.0, 1.5)
    """

    metric: str
    op: str
    bound: float
    fn: Callable[[Config], float] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in _OPERATORS:
            raise ValueError(f"constraint on {self.metric!r}: operator must be '<=' or '>=', got {self.op!r}")
        try:
            bound = float(self.bound)
        except (TypeError, ValueError):
            raise ValueError(
                f"constraint on {self.metric!r}: bound must be a number, got {self.bound!r}"
            ) from None
        if not math.isfinite(bound):
            raise ValueError(f"constraint on {self.metric!r}: bound must be finite, got {self.bound!r}")
        object.__setattr__(self, "bound", bound)

    def violation(self, value: float) -> float:
        """How far ``value`` misses the bound (0 when satisfied; ``inf`` for a missing value)."""
        if value is None or not math.isfinite(float(value)):
            return math.inf
        gap = float(value) - self.bound if self.op == "<=" else self.bound - float(value)
        return max(0.0, gap)

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "op": self.op, "bound": self.bound, "own_fn": self.fn is not None}

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def check_objectives(objectives: Sequence[Objective], constraints: Sequence[Constraint]) -> None:
    """Reject duplicate names and constraints on unknown metrics, naming what would be accepted."""
    if not objectives:
        raise ValueError("a search needs at least one Objective")
    names: list[str] = []
    for o in objectives:
        if not isinstance(o, Objective):
            raise TypeError(f"objectives must be nas.search.Objective instances, got {type(o).__name__}")
        if o.name in names:
            raise ValueError(f"objective name {o.name!r} is used twice; names must be unique")
        names.append(o.name)
    for c in constraints:
        if not isinstance(c, Constraint):
            raise TypeError(f"constraints must be nas.search.Constraint instances, got {type(c).__name__}")
        if c.fn is None and c.metric not in names:
            raise ValueError(
                f"constraint {c} names no objective; objectives are {names}, or pass fn= to compute the metric"
            )
        if c.fn is not None and c.metric in names:
            raise ValueError(f"constraint {c}: {c.metric!r} is already an objective; drop fn=")


# ---------------------------------------------------------------------------------------------- factories
def _resolve(obj: Any) -> Any:
    """A zero-argument callable is a loader (called once per process); anything else is used as is."""
    return obj() if callable(obj) and not hasattr(obj, "forward") and not hasattr(obj, "activate") else obj


class _PerThread:
    """Calls ``fn(model, cfg)`` with one copy of a stateful model per thread: the first thread uses ``model``
    itself, every other thread its own deep copy of ``model`` as it was handed over.

    Why: evaluating a subnet activates it and recalibrates batch-norm statistics in place, so two threads of a
    local search (``max_concurrent > 1``) sharing one supernet would score each other's subnets. A model that
    cannot be deep-copied is shared, and the calls on it take turns.

    Example:
        >>> calls = _PerThread([0])
        >>> calls(lambda model, cfg: model[0] + cfg, 2)
        2
    """

    def __init__(self, model: Any):
        import copy

        self._first = threading.get_ident()
        self._model = model
        self._lock = threading.Lock()
        self._copies: dict[int, Any] = {}
        try:
            self._template = copy.deepcopy(model)  # taken before any evaluation changes the model's state
        except Exception:  # e.g. a model holding a lock or an open device handle
            self._template = None
            self._shared = threading.Lock()

    def __call__(self, fn: Callable[[Any, Config], float], cfg: Config) -> float:
        if self._template is None:
            with self._shared:
                return fn(self._model, cfg)
        return fn(self._for_this_thread(), cfg)

    def _for_this_thread(self) -> Any:
        import copy

        ident = threading.get_ident()
        if ident == self._first:
            return self._model
        with self._lock:
            if ident not in self._copies:
                self._copies[ident] = copy.deepcopy(self._template)
            return self._copies[ident]


def accuracy(supernet: Any, data: Any, name: str = "accuracy", **evaluate_kwargs: Any) -> Objective:
    """Top-1 accuracy of the subnet ``cfg`` of a weight-sharing supernet, via ``nas.metrics.evaluate``.

    ``supernet`` and ``data`` may be objects or zero-argument loaders; loaders run once per process (once per
    Ray actor), on the first evaluation. Evaluation threads of a local search (``max_concurrent > 1``) each
    get their own copy of the supernet (evaluating a subnet changes the model's state).

    Example:
        >>> import search_spaces
        >>> from nas import data
        >>> obj = accuracy(lambda: search_spaces.load_trained("runs/sn"), lambda: data.mnist("test"))
        >>> obj.name, obj.direction, obj.expensive
        ('accuracy', 'max', True)
    """

    def build() -> Callable[[Config], float]:
        from nas import metrics  # lazy: torch

        nets, dataset = _PerThread(_resolve(supernet)), _resolve(data)
        return lambda cfg: float(
            nets(lambda net, c: metrics.evaluate(net, c, dataset, **evaluate_kwargs), cfg)
        )

    return Objective(
        name,
        LazyFunction(build, f"accuracy of {supernet!r}"),
        direction="max",
        expensive=True,
        graph_invariant=True,
    )


class _PositiveLatency:
    """A latency function whose values must be > 0.

    A value <= 0 is an extrapolation artefact, not a latency: a lookup table whose fitted overhead is negative,
    or a model of latency itself (not its log) asked about configs smaller than any it was fitted on. On a front
    it would dominate every real subnet, so it fails the evaluation instead (only this target's front, when a
    search has several), naming the value and the fix. A plain class, so that Ray can pickle it.
    """

    def __init__(self, fn: Callable[[Config], float], name: str):
        self.fn = fn
        self.name = name

    def __call__(self, cfg: Config) -> float:
        value = self.fn(cfg)
        try:
            ms = float(value)
        except (TypeError, ValueError):
            return value  # Objective says what a non-number is
        if ms <= 0:
            raise ValueError(
                f"{self.name}: {ms:.4g} ms for {_describe(cfg)} is not a latency (a predictor extrapolating below "
                "the configs it was fitted on, e.g. a lookup table with a negative fitted overhead); refit it on "
                "measurements that include configs this small"
            )
        return value


def _describe(cfg: Any) -> str:
    return cfg.to_json() if hasattr(cfg, "to_json") else repr(dict(cfg))


def latency(
    target: str,
    predictor: Any = None,
    *,
    measure: Callable[[Config], float] | None = None,
    space: SearchSpace | None = None,
    name: str | None = None,
) -> Objective:
    """Latency on a hardware ``target``, from a fitted predictor (cheap) or a live measurement (expensive).

    Args:
        target: hardware target; the objective is named ``"latency@<target>"`` unless ``name`` is given.
        predictor: an object with ``predict(X)`` on ``space.features`` rows (``space`` required), or a plain
            function ``cfg -> ms``; both count as cheap. A ``predictors.Predictor`` fitted on another space (or
            other features) is refused here, naming both spaces.
        measure: a function ``cfg -> ms`` that runs on the device (expensive).

    Example:
        >>> lat = latency("raspi4", lambda cfg: 3.0)
        >>> lat.name, lat.direction, lat.expensive
        ('latency@raspi4', 'min', False)
    """
    if (predictor is None) == (measure is None):
        raise ValueError(f"latency({target!r}): give exactly one of predictor= or measure=")
    name = name or f"latency@{target}"
    if measure is not None:
        return Objective(name, _PositiveLatency(measure, name), direction="min", expensive=True)
    if hasattr(predictor, "predict"):
        if space is None:
            raise ValueError(f"latency({target!r}): a predictor object needs space= to compute features")
        if callable(getattr(predictor, "check", None)):
            # A nas predictor knows its space and features, but predict(X) sees bare rows: a predictor of another
            # space with as many features would price every config silently wrong. Checked once, here.
            try:
                predictor.check(space.features(space.max())[None, :], space)
            except ValueError as exc:
                raise ValueError(f"latency({target!r}): {exc}") from None

        def predicted(cfg: Config) -> float:
            return float(np.asarray(predictor.predict(space.features(cfg)[None, :])).reshape(-1)[0])

        return Objective(name, _PositiveLatency(predicted, name), direction="min", expensive=False)
    if callable(predictor):
        return Objective(name, _PositiveLatency(predictor, name), direction="min", expensive=False)
    raise TypeError(f"latency({target!r}): predictor must have .predict(X) or be callable, got {predictor!r}")


def _metric_objective(metric: str, net: Any, name: str | None) -> Objective:
    def build() -> Callable[[Config], float]:
        from nas import metrics  # lazy: torch

        fn = getattr(metrics, metric)
        models = _PerThread(_resolve(net))  # a traced layer_specs extracts (activates) the subnet
        return lambda cfg: float(models(fn, cfg))

    return Objective(
        name or metric, LazyFunction(build, f"{metric} of {net!r}"), direction="min", expensive=False
    )


def macs(net: Any, name: str | None = None) -> Objective:
    """Multiply-accumulates of the subnet (``nas.metrics.macs``), minimised; cheap."""
    return _metric_objective("macs", net, name)


def params(net: Any, name: str | None = None) -> Objective:
    """Parameter count of the subnet (``nas.metrics.params``), minimised; cheap."""
    return _metric_objective("params", net, name)


def model_bytes(net: Any, name: str | None = None) -> Objective:
    """Size in bytes of the exported subnet (``nas.metrics.model_bytes``), minimised; cheap."""
    return _metric_objective("model_bytes", net, name)


def objective_table(objectives: Sequence[Objective]) -> Mapping[str, Objective]:
    return {o.name: o for o in objectives}
