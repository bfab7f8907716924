"""Throw-away regressors for predictor-in-the-loop search: fitted every round, queried on thousands of configs.

Each model has ``predict(X)`` and ``predict_std(X)`` (an uncertainty: spread over trees or bootstrap fits).
They stay in scikit-learn form on purpose: LINAS refits every round and predicts whole search spaces, and
sklearn's compiled tree inference is much faster than the serialisable numpy models of ``predictors``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 2, (60, 5)).astype(float)
    >>> m = fit_predictor(X, 1.0 + X @ [1.0, 2.0, 0.0, 0.5, 0.1], "sklearn-forest")
    >>> bool(abs(m.predict(X[:1])[0] - (1.0 + X[0] @ [1.0, 2.0, 0.0, 0.5, 0.1])) < 0.6)
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["KINDS", "fit_predictor"]


class _BootstrapRidge:
    """Ridge regression on standardised features; std from a small bootstrap ensemble."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int, n_boot: int = 8):
        self._model = _ridge().fit(X, y)
        rng = np.random.default_rng(seed)
        self._boot = [
            _ridge().fit(X[b], y[b]) for b in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))
        ]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._model.predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self._boot]).std(axis=0)


def _ridge() -> Any:
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))


class _Forest:
    """Extremely randomised trees on bootstrap samples; std is the spread over the trees.

    The best in-loop ranker of NAS-Bench-201 latency we measured at 30-200 samples, and close to boosting on
    accuracy, at a fraction of its fitting time.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int, n_estimators: int = 64):
        from sklearn.ensemble import ExtraTreesRegressor

        self._model = ExtraTreesRegressor(
            n_estimators=n_estimators, max_features=0.5, bootstrap=True, random_state=seed, n_jobs=1
        ).fit(X, y)

        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _trees(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # One pass over the trees gives mean and spread; predict and predict_std are called on the same rows.
        if self._cache is None or self._cache[0] is not X:  # (holding X keeps its id from being reused)
            per_tree = np.stack([t.predict(X) for t in self._model.estimators_])
            self._cache = (X, per_tree.mean(axis=0), per_tree.std(axis=0))
        return self._cache[1], self._cache[2]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._trees(X)[0]

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return self._trees(X)[1]


def _cv_error(make: Any, X: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> float:
    """Mean squared error of ``make(X, y, seed)`` in k-fold cross-validation."""
    idx = np.random.default_rng(seed).permutation(len(y))
    err = 0.0
    for k in range(folds):
        test = idx[k::folds]
        train = np.setdiff1d(idx, test)
        err += float(np.sum((make(X[train], y[train], seed).predict(X[test]) - y[test]) ** 2))
    return err / len(y)


class _AutoPredictor:
    """Ridge (additive effects, such as the latency of a sum of ops) or extremely randomised trees
    (interactions), whichever cross-validates better."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int):
        candidates = {"ridge": _BootstrapRidge, "trees": _Forest}
        if len(y) < 10:
            self.kind = "ridge"
        else:
            errors = {k: _cv_error(make, X, y, seed) for k, make in candidates.items()}
            self.kind = min(errors, key=errors.__getitem__)
        self._model = candidates[self.kind](X, y, seed)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._model.predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return self._model.predict_std(X)


class _BaggedGBDT:
    """A bag of gradient-boosted tree models; mean of the first (fitted on every point), spread over the bag."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int, n_bags: int = 3):
        from sklearn.ensemble import GradientBoostingRegressor

        rng = np.random.default_rng(seed)
        self._models = []
        for b in range(n_bags):
            rows = rng.integers(0, len(y), len(y)) if b else np.arange(len(y))
            self._models.append(
                GradientBoostingRegressor(
                    n_estimators=120,
                    max_depth=4,
                    learning_rate=0.1,
                    subsample=0.8,
                    min_samples_leaf=2,
                    random_state=seed + b,
                ).fit(X[rows], y[rows])
            )

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._models[0].predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self._models]).std(axis=0)


class _ForestPlusBoosting:
    """Mean of extremely randomised trees and one boosted model; std combines the forest's spread with the
    disagreement of the two (a model-choice uncertainty that neither model sees alone)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int):
        from sklearn.ensemble import GradientBoostingRegressor

        self._forest = _Forest(X, y, seed)
        self._boost = GradientBoostingRegressor(
            n_estimators=120,
            max_depth=4,
            learning_rate=0.1,
            subsample=0.8,
            min_samples_leaf=2,
            random_state=seed,
        ).fit(X, y)
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _both(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # predict and predict_std are called on the same rows in turn: compute the two models once.
        if self._cache is None or self._cache[0] is not X:  # (holding X keeps its id from being reused)
            self._cache = (X, self._forest.predict(X), self._boost.predict(X))
        return self._cache[1], self._cache[2]

    def predict(self, X: np.ndarray) -> np.ndarray:
        a, b = self._both(X)
        return 0.5 * (a + b)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        a, b = self._both(X)
        return np.sqrt(self._forest.predict_std(X) ** 2 + 0.25 * (a - b) ** 2)


KINDS = {
    "sklearn-forest": _Forest,
    "sklearn-gbdt": _BaggedGBDT,
    "sklearn-auto": _AutoPredictor,
    "sklearn-ridge": _BootstrapRidge,
    "sklearn-forest+gbdt": _ForestPlusBoosting,
}


def fit_predictor(X: np.ndarray, y: np.ndarray, kind: str = "sklearn-forest", seed: int = 0) -> Any:
    """A fitted regressor with ``predict`` and ``predict_std``.

    ``kind``: one of :data:`KINDS` (``"sklearn-forest"``: extremely randomised trees, fast, the default;
    ``"sklearn-gbdt"``: a bag of boosted trees; ``"sklearn-forest+gbdt"``: their mean; ``"sklearn-ridge"``;
    ``"sklearn-auto"``: ridge or trees by cross-validation), or ``"predictors:<kind>"`` for
    ``predictors.fit(X, y, kind=<kind>)`` (serialisable models, slower to query).
    """
    if kind in KINDS:
        return KINDS[kind](np.asarray(X, np.float64), np.asarray(y, np.float64), seed)
    if kind.startswith("predictors:"):
        import predictors

        return predictors.fit(X, y, kind=kind.split(":", 1)[1], seed=seed, target="linear")
    raise ValueError(f"unknown LINAS predictor {kind!r}; use one of {sorted(KINDS)} or 'predictors:<kind>'")
