"""Uniform random search over unseen configs: the baseline every other searcher must beat."""

from __future__ import annotations

from collections.abc import Sequence

from nas.search.searchers.base import Searcher
from nas.space import Config


class RandomSearcher(Searcher):
    """Samples canonical configs uniformly, never proposing one it has already been told about.

    Example:
        >>> from nas.space import Choice, SearchSpace
        >>> from nas.search.searchers import Problem
        >>> s = RandomSearcher(seed=0)
        >>> s.setup(Problem(SearchSpace("t", [Choice("k", (3, 5, 7))]), ("size",)))
        >>> len({c.key for c in s.ask(3)})
        3
    """

    name = "random"
    default_batch_size = 16

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._handed_out: set[str] = set()

    def _ask(self, n: int) -> Sequence[Config]:
        out = self.random_unseen(n, exclude=self._handed_out)
        self._handed_out.update(c.key for c in out)
        return out
