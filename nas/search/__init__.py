"""Multi-objective search: objectives, constraints, searchers, the runner and its store.

Example:
    >>> from nas.space import Choice, SearchSpace
    >>> from nas.search import Constraint, Objective, run
    >>> space = SearchSpace("toy", [Choice("w", (1, 2, 3, 4)), Choice("d", (1, 2, 3))])
    >>> result = run(space, [Objective("quality", lambda c: c["w"] * c["d"], "max"),
    ...                      Objective("cost", lambda c: c["w"] + 2 * c["d"], "min")],
    ...              algorithm="nsga2", budget=8, constraints=[Constraint("cost", "<=", 8)], progress=False)
    >>> len(result.history)
    8
"""

from nas.search import searchers
from nas.search.objectives import (
    Constraint,
    LazyFunction,
    Objective,
    accuracy,
    latency,
    macs,
    model_bytes,
    params,
)
from nas.search.result import SearchResult
from nas.search.runner import SearchFailedError, evaluate_config, run
from nas.search.store import Store, StoreMismatchError, open_store

__all__ = [
    "Constraint",
    "LazyFunction",
    "Objective",
    "SearchFailedError",
    "SearchResult",
    "Store",
    "StoreMismatchError",
    "accuracy",
    "evaluate_config",
    "latency",
    "macs",
    "model_bytes",
    "open_store",
    "params",
    "run",
    "searchers",
]
