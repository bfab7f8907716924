"""The ask/tell contract every searcher follows, and the registry that finds searchers by name.

A searcher proposes configs (``ask``) and learns from results (``tell``). It never sees Ray, the store or the
budget: the runner owns those. Values it is told are in **minimisation form**: maximised objectives arrive
negated, so smaller is better in every column. Constraint violations arrive as one number per config, ``0``
when feasible and the total amount by which bounds are missed otherwise (``inf`` for a failed evaluation, whose
values are ``nan``).

The contract in detail:

* ``ask(n)`` returns at most ``n`` configs, possibly fewer (even none) when the searcher must wait for results
  it already handed out (a generation of an evolutionary algorithm). It may repeat configs evaluated before;
  the runner answers those from its cache, for free.
* ``tell(configs, values, violations)`` may contain configs the searcher never asked for: a resumed run
  replays the store, and the runner fills stalls with random configs. Searchers must learn from them too.

Subclasses register themselves by their ``name`` class attribute; ``get(name)`` returns the class.

Example:
    >>> from nas.search import searchers
    >>> "random" in searchers.available()
    True
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from nas.space import Config, SearchSpace

__all__ = ["Problem", "Searcher", "available", "get"]

_REGISTRY: dict[str, type[Searcher]] = {}


@dataclass(frozen=True)
class Problem:
    """What a searcher may know about the search.

    Attributes:
        space: the search space.
        objective_names: names of the objectives, in column order of the values told.
        n_constraints: number of constraints (violations are told summed into one number).
        cheap: minimisation-form functions of the cheap objectives, by column index; model-based searchers may
            call them instead of modelling them.
        graph_invariant: column indices of the objectives that depend only on ``space.graph(cfg)`` (see
            :class:`nas.search.Objective`): configs with the same graph share their values.
    """

    space: SearchSpace
    objective_names: tuple[str, ...]
    n_constraints: int = 0
    cheap: dict[int, Callable[[Config], float]] = field(default_factory=dict)
    graph_invariant: frozenset[int] = frozenset()

    @property
    def n_objectives(self) -> int:
        return len(self.objective_names)


class Searcher(abc.ABC):
    """Base class: keeps the told history and provides the registry hook.

    Subclasses implement :meth:`_ask` and may extend :meth:`_tell`; both run after :meth:`setup`.
    """

    name: ClassVar[str] = ""
    #: configs per ask the runner uses when the user gives no batch_size
    default_batch_size: ClassVar[int] = 1
    #: A partial result (some objectives measured, others not: one hardware target of several failed) is kept as
    #: told, ``nan`` where a value is missing. Otherwise (the default: searchers that rank whole objective
    #: vectors) such a row is told as a failure, every value ``nan``.
    learns_from_partial: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
                raise ValueError(f"searcher name {cls.name!r} is registered twice")
            _REGISTRY[cls.name] = cls

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.problem: Problem | None = None
        # Everything told so far, in order; keyed views for membership tests.
        self.configs: list[Config] = []
        self.values = np.zeros((0, 0))
        self.violations = np.zeros(0)
        self.known: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ contract
    def setup(self, problem: Problem) -> None:
        """Bind the searcher to a problem; called once before the first ask or tell."""
        self.problem = problem
        self.values = np.zeros((0, problem.n_objectives))

    def ask(self, n: int) -> list[Config]:
        """Up to ``n`` configs to evaluate next (canonical configs of the problem's space)."""
        self._require_setup()
        if n <= 0:
            return []
        return list(self._ask(int(n)))

    def tell(self, configs: Sequence[Config], values: Any, violations: Any | None = None) -> None:
        """Results for ``configs``: ``values`` of shape (len(configs), n_objectives) in minimisation form.

        A failed evaluation is a row of ``nan``; a partial one has ``nan`` where its value is missing (see
        :attr:`learns_from_partial`).
        """
        self._require_setup()
        assert self.problem is not None
        configs = list(configs)
        F = np.asarray(values, dtype=np.float64).reshape(len(configs), self.problem.n_objectives)
        V = np.zeros(len(configs)) if violations is None else np.asarray(violations, np.float64).reshape(-1)
        if V.shape[0] != len(configs):
            raise ValueError(f"got {len(configs)} configs but {V.shape[0]} violations")
        if not configs:
            return
        if not self.learns_from_partial:
            F = np.where(np.isfinite(F).all(axis=1, keepdims=True), F, np.nan)
        for c in configs:
            self.known.setdefault(c.key, len(self.configs))
            self.configs.append(c)
        self.values = np.vstack([self.values, F])
        self.violations = np.concatenate([self.violations, V])
        self._tell(configs, F, V)

    # ------------------------------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _ask(self, n: int) -> Sequence[Config]: ...

    def _tell(self, configs: list[Config], F: np.ndarray, V: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Learn from new results (history is already updated)."""

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def space(self) -> SearchSpace:
        self._require_setup()
        assert self.problem is not None
        return self.problem.space

    def _require_setup(self) -> None:
        if self.problem is None:
            raise RuntimeError(f"{type(self).__name__}: call setup(problem) before ask/tell")

    def random_unseen(self, n: int, exclude: set[str] | None = None, tries: int = 50) -> list[Config]:
        """Up to ``n`` random canonical configs not told yet (and not in ``exclude``)."""
        exclude = set(exclude or ())
        out: list[Config] = []
        misses = 0
        while len(out) < n and misses < tries * max(n, 1):
            c = self.space.sample(self.rng)
            if c.key in self.known or c.key in exclude:
                misses += 1
                continue
            exclude.add(c.key)
            out.append(c)
        return out

    def clean_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Told values with failures replaced by a finite penalty (worse than anything seen) and violations."""
        F = self.values.copy()
        bad = ~np.isfinite(F)
        if bad.any():
            finite = np.where(bad, np.nan, F)
            hi = np.nanmax(finite, axis=0) if np.isfinite(finite).any() else np.zeros(F.shape[1])
            lo = np.nanmin(finite, axis=0) if np.isfinite(finite).any() else np.zeros(F.shape[1])
            hi = np.where(np.isfinite(hi), hi, 0.0)
            lo = np.where(np.isfinite(lo), lo, 0.0)
            penalty = hi + (hi - lo) + 1.0
            F = np.where(bad, penalty[None, :], F)
        V = np.where(np.isfinite(self.violations), self.violations, 1e300)
        return F, V


def get(name: str) -> type[Searcher]:
    """The searcher class registered under ``name``.

    Example:
        >>> get("nsga2").__name__
        'NSGA2Searcher'
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown search algorithm {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available() -> list[str]:
    """Names of the registered searchers."""
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Importing the modules registers their classes; heavy libraries load only when a searcher is set up.
    from nas.search.searchers import linas, optuna_samplers, pymoo_algorithms, random_search  # noqa: F401
