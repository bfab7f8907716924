"""Searchers: one ask/tell interface over random search, pymoo, optuna and LINAS.

Example:
    >>> from nas.search import searchers
    >>> searchers.available()
    ['agemoea', 'gp', 'linas', 'nsga2', 'nsga3', 'random', 'tpe']
"""

from nas.search.searchers.base import Problem, Searcher, available, get

__all__ = ["Problem", "Searcher", "available", "get"]
