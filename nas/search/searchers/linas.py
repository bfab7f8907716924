"""LINAS: predictor-in-the-loop search (after DyNAS-T's Lightweight Iterative NAS).

Each round:

1. fit one predictor per expensive objective (and one for the constraint violation) on every successfully
   evaluated config (``space.features``; optionally, for accuracy on spaces of cells, averaged with a
   graph-kernel GP on ``space.graph``), and, once evaluations have failed, one of failure against success on
   every evaluated config (a candidate predicted to fail far more often than the measured rate counts as
   infeasible); cheap objectives are called directly;
2. search the predicted problem with an inner NSGA-II, and add mutations of the measured front and random
   configs, giving a pool of unseen candidates;
3. pick the batch greedily by **predicted hypervolume gain** over the measured front, using the optimistic point
   ``mean - kappa * std`` (uncertain candidates get a bonus), adding each pick's mean prediction to the front
   before the next pick (the "kriging believer") so a batch spreads along the front.

Objectives marked ``graph_invariant`` (accuracy) are shared between configs with the same ``space.graph``: a
function is measured once (again only for a config surely faster), and its other configs differ only in the
objectives that see the implementation.

The first ``n_initial`` configs come from a Latin design over the categories (each value of each dimension
used about equally often).

Example:
    >>> s = LinasSearcher(seed=0, n_initial=12)
    >>> s.default_batch_size
    10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from nas.graph import graph_key, wl_labels
from nas.pareto import nondominated_mask
from nas.search.searchers.base import Searcher
from nas.space import Config

__all__ = ["LinasSearcher", "fit_predictor", "hypervolume_gain"]


class _BootstrapRidge:
    """Ridge regression on standardised features; std from a small bootstrap ensemble."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int, n_boot: int = 8):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        def model() -> Any:
            return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))

        self._model = model().fit(X, y)
        rng = np.random.default_rng(seed)
        self._boot = [
            model().fit(X[b], y[b]) for b in (rng.integers(0, len(y), len(y)) for _ in range(n_boot))
        ]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._model.predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self._boot]).std(axis=0)


class _Trees:
    """Extremely randomised trees; std is the spread over the trees."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int):
        from sklearn.ensemble import ExtraTreesRegressor

        self._model = ExtraTreesRegressor(
            n_estimators=48, max_features=0.7, bootstrap=True, random_state=seed, n_jobs=1
        ).fit(X, y)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._model.predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.stack([t.predict(X) for t in self._model.estimators_]).std(axis=0)


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
    """Scikit-learn fallback until the ``predictors`` package is present: ridge (additive effects, such as the
    latency of a sum of ops) or extremely randomised trees (interactions), whichever cross-validates better."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int):
        candidates = {"ridge": _BootstrapRidge, "trees": _Trees}
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


def _boosted_trees(n_estimators: int, max_depth: int, loss: str, seed: int) -> Any:
    """An unfitted scikit-learn gradient-boosted tree regressor with LINAS's small-data settings."""
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=0.1,
        subsample=0.8,
        min_samples_leaf=2,
        loss=loss,
        random_state=seed,
    )


class _Bag:
    """A bag of regressors, one per bootstrap sample (the first sees every point); its prediction is that first
    model's (or the bag mean), its std the spread over the bag. Subclasses say how one member is fitted."""

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        seed: int,
        n_bags: int = 3,
        bag_mean: bool = False,
        loss: str = "squared_error",
    ):
        self._bag_mean = bag_mean
        rng = np.random.default_rng(seed)
        self._models = []
        for b in range(n_bags):
            rows = rng.integers(0, len(y), len(y)) if b else np.arange(len(y))
            self._models.append(self._fit_member(X[rows], y[rows], seed + b, loss))

    def _fit_member(self, X: np.ndarray, y: np.ndarray, seed: int, loss: str) -> Any:
        raise NotImplementedError

    def _all(self, X: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(X) for m in self._models])

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._bag_mean:
            return self._all(X).mean(axis=0)
        return self._models[0].predict(X)

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return self._all(X).std(axis=0)


class _BaggedGBDT(_Bag):
    """A bag of gradient-boosted tree models (scikit-learn); mean and spread over the bag.

    The same model family as ``predictors.fit(kind="gbdt")``, kept in scikit-learn form: LINAS predicts tens of
    thousands of candidates per run with throw-away models, and sklearn's compiled tree inference is much faster
    than a serialisable numpy model.
    """

    def _fit_member(self, X: np.ndarray, y: np.ndarray, seed: int, loss: str) -> Any:
        return _boosted_trees(120, 4, loss, seed).fit(X, y)


class _LinearPlusTrees:
    """Ridge regression plus boosted trees fitted on its residuals (one member of :class:`_RidgeBoost`)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, seed: int, loss: str):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.linear = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13))).fit(X, y)
        self.trees = _boosted_trees(80, 3, loss, seed).fit(X, y - self.linear.predict(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.linear.predict(X) + self.trees.predict(X)


class _RidgeBoost(_Bag):
    """Ridge regression with boosted trees on its residuals, bagged; mean and spread over the bag.

    Latency is close to a sum of per-operation costs, which a linear model learns from few points; the trees
    only have to learn the interactions (fusion, pruned branches) left in the residuals.
    """

    def _fit_member(self, X: np.ndarray, y: np.ndarray, seed: int, loss: str) -> Any:
        return _LinearPlusTrees(X, y, seed, loss)


class _GBDTPlusWL:
    """The bagged boosted trees (on ``space.features``) averaged with a Weisfeiler-Lehman graph-kernel GP (on
    ``space.graph``); the std is the mean of the two models' stds plus half their disagreement.

    Why: the two make different errors (trees split on fixed features, the GP transfers between cells sharing
    sub-structures), and their disagreement marks candidates worth a real evaluation. On NAS-Bench-201 accuracy
    (``benchmarks/search_nb201.py``) a first measurement on raspi4 raised the hypervolume ratio at 250
    evaluations from 0.976 to 0.986 (within seed noise on the other devices; either model alone searched worse),
    but measured on all four targets with the later defaults (whole-space scoring, ``explore``) it was within
    noise of plain boosted trees or worse (benchmarks/RESULTS.md), hence opt-in (``predictor="gbdt-wl"``).
    """

    takes_graph = True

    def __init__(self, X: np.ndarray, bags: Sequence[Any], y: np.ndarray, seed: int, **options: Any):
        from nas.search.searchers.wl_kernel import WLKernelGP

        self.trees = _BaggedGBDT(X, y, seed, **options)
        self.gp = WLKernelGP(bags, y, seed)

    def mean_std(
        self, X: np.ndarray, bags: Sequence[Any], with_std: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        mu_t = self.trees.predict(X)
        mu_g, sd_g = self.gp.predict(bags)
        mean = 0.5 * (mu_t + mu_g)
        if not with_std:
            return mean, np.zeros_like(mean)
        return mean, 0.5 * (self.trees.predict_std(X) + sd_g) + 0.5 * np.abs(mu_t - mu_g)


def _mean_std(
    model: Any, X: np.ndarray, bags: Sequence[Any] | None, with_std: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a LINAS model, whether it reads the graph bags or only the feature rows."""
    if getattr(model, "takes_graph", False):
        return model.mean_std(X, bags, with_std)
    mean = model.predict(X)
    return mean, (model.predict_std(X) if with_std else np.zeros_like(mean))


_BUILTIN = {"sklearn-gbdt": _BaggedGBDT, "sklearn-ridge-gbdt": _RidgeBoost, "sklearn-auto": _AutoPredictor}
# kinds that also need the configs' graphs; on a space without graphs they fall back to the named kind
_GRAPH_KINDS = {"gbdt-wl": "sklearn-gbdt"}


def fit_predictor(
    X: np.ndarray, y: np.ndarray, kind: str = "sklearn-gbdt", seed: int = 0, **options: Any
) -> Any:
    """A fitted regressor with ``predict`` and ``predict_std``.

    ``kind``: ``"sklearn-gbdt"`` (a bag of gradient-boosted trees, the best ranker of NAS-Bench-201 accuracy we
    tried), ``"sklearn-ridge-gbdt"`` (ridge plus boosted trees on its residuals: near-additive costs such as
    latency), ``"sklearn-auto"`` (ridge or extremely randomised trees, by cross-validation; fastest), or
    ``"predictors:<kind>"`` for ``predictors.fit(X, y, kind=<kind>)`` (serialisable models, slower to query).
    ``options`` go to the model class (``n_bags``, ``bag_mean`` for ``"sklearn-gbdt"``).
    """
    if kind in _BUILTIN:
        return _BUILTIN[kind](X, y, seed, **options)
    if kind.startswith("predictors:"):
        import predictors

        return predictors.fit(X, y, kind=kind.split(":", 1)[1], seed=seed, target="linear")
    raise ValueError(f"unknown LINAS predictor {kind!r}; use {sorted(_BUILTIN)} or 'predictors:<kind>'")


class _LogTarget:
    """A model of ``log(y - shift)`` read back on the original scale; the std by the delta method
    (``d exp(z) = exp(z) dz``). ``shift=0``: a strictly positive objective (latency: noise and op costs are
    multiplicative); a shift just below the best measured value stretches the best end of the scale."""

    def __init__(self, model: Any, shift: float = 0.0):
        self._model = model
        self.shift = float(shift)
        self.takes_graph = getattr(model, "takes_graph", False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self._model.predict(X)) + self.shift

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self._model.predict(X)) * self._model.predict_std(X)

    def mean_std(
        self, X: np.ndarray, bags: Sequence[Any], with_std: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        mean, std = _mean_std(self._model, X, bags, with_std)
        return np.exp(mean) + self.shift, np.exp(mean) * std


def hypervolume_gain(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume each row of ``points`` would add to ``front`` (minimisation, bounded by ``ref``).

    Two objectives are one vectorised pass over the staircase; more are sliced along the first objective
    (between consecutive front values the covered region is a fixed front of one objective fewer), which
    stays vectorised over the points: 15,000 candidates against a 3-objective front of 30 take milliseconds,
    where one exact hypervolume per point took a second.

    Example:
        >>> hypervolume_gain(np.array([[1.0, 2.0]]), np.array([[2.0, 1.0], [1.5, 2.5]]), np.array([3.0, 3.0]))
        array([1., 0.])
    """
    points = np.asarray(points, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    front = np.asarray(front, dtype=np.float64).reshape(-1, points.shape[1])
    front = front[(front < ref).all(axis=1)]
    if len(front):
        front = front[nondominated_mask(front)]
    if points.shape[1] == 1:
        best = front[:, 0].min() if len(front) else ref[0]
        return np.clip(best - np.minimum(points[:, 0], ref[0]), 0.0, None)
    if points.shape[1] == 2:
        return _staircase_gain(front, points, ref)
    # Slabs along objective 0: on [edges[k], edges[k+1]) the front points with objective 0 <= edges[k] cover
    # the rest of the objectives; a point's gain is the sum of its (m-1)-dimensional gains times slab widths.
    edges = np.concatenate([[-np.inf], np.unique(front[:, 0]), [ref[0]]])
    p0 = np.minimum(points[:, 0], ref[0])
    gain = np.zeros(len(points))
    for k in range(len(edges) - 1):
        width = np.clip(edges[k + 1] - np.maximum(edges[k], p0), 0.0, None)
        live = width > 0
        if live.any():
            covering = front[front[:, 0] <= edges[k]][:, 1:]
            gain[live] += width[live] * hypervolume_gain(covering, points[live, 1:], ref[1:])
    return gain


def _staircase_gain(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """:func:`hypervolume_gain` for two objectives and a non-dominated ``front`` inside ``ref``."""
    front = front[np.argsort(front[:, 0])]
    # Staircase as steps: on [x_i, x_{i+1}) everything above y_i is covered; left of x_0 nothing is (height ref).
    xs = np.concatenate([[-np.inf], front[:, 0], [ref[0]]])
    hs = np.concatenate([[ref[1]], front[:, 1]])
    px = np.minimum(points[:, :1], ref[0])
    py = np.minimum(points[:, 1:], ref[1])
    width = np.clip(np.minimum(xs[None, 1:], ref[0]) - np.maximum(xs[None, :-1], px), 0.0, None)
    height = np.clip(hs[None, :] - py, 0.0, None)
    return (width * height).sum(axis=1)


def _dominance_distance(front: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How far (max over objectives) each point must move to stop being dominated by ``front`` (0 if it is not)."""
    if len(front) == 0:
        return np.zeros(len(points))
    gaps = (points[:, None, :] - front[None, :, :]).min(axis=2)  # >= 0 iff front row weakly dominates point
    return np.clip(gaps.max(axis=1), 0.0, None)


def _neighbours(space: Any, cfg: Config, limit: int = 256) -> list[Config]:
    """Configs that differ from ``cfg`` in one active dimension (at most ``limit``)."""
    out = []
    inactive = space.inactive_names(cfg)
    for d in space.dims:
        if d.name in inactive:
            continue
        for v in d.values:
            if v != cfg[d.name]:
                out.append(space.canonical(cfg.replace(**{d.name: v})))
                if len(out) >= limit:
                    return out
    return out


def _rank_and_crowding(F: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constrained non-dominated rank (feasible first, infeasible by violation) and crowding distance."""
    n = len(F)
    rank = np.zeros(n, dtype=np.int64)
    crowd = np.zeros(n)
    feasible = V <= 0
    left = np.flatnonzero(feasible)
    r = 0
    while len(left):
        mask = nondominated_mask(F[left])
        front = left[mask]
        rank[front] = r
        crowd[front] = _crowding(F[front])
        left = left[~mask]
        r += 1
    infeasible = np.flatnonzero(~feasible)
    if len(infeasible):
        rank[infeasible] = r + np.argsort(np.argsort(V[infeasible]))
    return rank, crowd


def _crowding(F: np.ndarray) -> np.ndarray:
    n, m = F.shape
    if n <= 2:
        return np.full(n, np.inf)
    dist = np.zeros(n)
    for j in range(m):
        order = np.argsort(F[:, j])
        span = F[order[-1], j] - F[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (F[order[2:], j] - F[order[:-2], j]) / span
    return dist


class _SharedGraphs:
    """Graph-invariant objectives (accuracy) shared between configs that compute the same function.

    Measured graphs take their measured mean with std 0; an unmeasured graph takes the first prediction made for
    any of its configs in this round, so the model's arbitrary differences between copies (split on dead edges)
    cannot make one copy look better than another. Only the other objectives (latency: dead operations still
    run) tell copies apart, so among the copies of a new graph the selection prefers the one predicted fastest.
    """

    def __init__(
        self,
        key: Any,
        configs: Sequence[Config],
        F: np.ndarray,
        columns: Sequence[int],
        pending: Sequence[Config] = (),
    ):
        self.key = key
        self.columns = list(columns)
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for c, f in zip(configs, F[:, self.columns]):
            k = key(c)
            sums[k] = sums.get(k, 0.0) + f
            counts[k] = counts.get(k, 0) + 1
        self.measured = {k: v / counts[k] for k, v in sums.items()}
        self.pending = {key(c) for c in pending} - set(self.measured)
        self._first_mean: dict[str, np.ndarray] = {}
        self._first_std: dict[str, np.ndarray] = {}

    def apply(self, cands: Sequence[Config], mu: np.ndarray, sd: np.ndarray, with_std: bool) -> None:
        """Overwrite the shared columns of the predictions ``mu`` and ``sd`` in place."""
        cols = self.columns
        for i, c in enumerate(cands):
            k = self.key(c)
            if k in self.measured:
                mu[i, cols], sd[i, cols] = self.measured[k], 0.0
                continue
            mu[i, cols] = self._first_mean.setdefault(k, mu[i, cols].copy())
            if with_std:
                sd[i, cols] = self._first_std.setdefault(k, sd[i, cols].copy())

    def not_pending(self, cands: Sequence[Config]) -> list[Config]:
        """The candidates whose graph is not being evaluated right now."""
        return [c for c in cands if self.key(c) not in self.pending]


_TRANSFORMS = ("auto", "none", "log", "log-best")


def _skewness(y: np.ndarray) -> float:
    """Sample skewness (0 for fewer than 3 values or constant ones).

    Example:
        >>> round(_skewness(np.array([1.0, 1.0, 1.0, 1.0, 10.0])), 2)
        1.5
    """
    y = np.asarray(y, dtype=np.float64)
    d = y - y.mean()
    m2 = float((d**2).mean()) if len(y) else 0.0
    return float((d**3).mean() / m2**1.5) if len(y) >= 3 and m2 > 0 else 0.0


def _kappa_schedule(kappa: float | Sequence[Sequence[float]]) -> list[tuple[int, float]]:
    """``kappa`` as sorted ``(evaluations, kappa)`` steps starting at 0; a clear error for anything else."""
    if isinstance(kappa, (int, float)) and not isinstance(kappa, bool):
        steps = [(0, float(kappa))]
    else:
        try:
            steps = sorted((int(at), float(k)) for at, k in kappa)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(
                f"kappa must be a number or a list of (evaluations, kappa) steps such as [(0, 0.25), (100, 0.75)], "
                f"got {kappa!r}"
            ) from None
        if not steps or steps[0][0] != 0:
            raise ValueError(f"a kappa schedule must start at 0 evaluations, got {kappa!r}")
    if any(k < 0 for _, k in steps):
        raise ValueError(f"kappa must be >= 0, got {kappa!r}")
    return steps


class LinasSearcher(Searcher):
    """Predictor-in-the-loop multi-objective search.

    Args:
        seed: random seed.
        n_initial: size of the initial Latin design (default: ``max(10, 2 * n_dims)``).
        predictor: model per objective: one kind for all, or one kind per objective (the constraint
            violation's model takes the first). Kinds: those of :func:`fit_predictor` (``"sklearn-gbdt"``,
            the default, ``"sklearn-ridge-gbdt"``, ``"sklearn-auto"``, ``"predictors:gbdt"``, ...) and
            ``"gbdt-wl"``: the boosted trees averaged with a Weisfeiler-Lehman graph-kernel GP on
            ``space.graph`` (:mod:`nas.search.searchers.wl_kernel`); on a space without graphs it is
            ``"sklearn-gbdt"``. Use it for accuracy only, e.g. ``["gbdt-wl", "sklearn-gbdt"]``: the kernel
            compares the *share* of common structure, while costs such as latency are sums over operations
            (mixed into a latency model it made NAS-Bench-201 searches clearly worse).
        kappa: weight of the predicted std in the optimistic point ``mean - kappa * std``: a number, or a
            schedule of ``(evaluations, kappa)`` steps, e.g. ``[(0, 0.25), (100, 0.75)]`` (exploit while the
            models are young, explore more once they have seen 100 configs).
        inner_pop, inner_generations: size of the inner NSGA-II run on the predictors.
        n_random: random configs added to the candidate pool each round.
        n_mutations: mutations of each measured front config added to the pool.
        neighbours: add every one-step neighbour of the measured front to the pool.
        target_transform: how each expensive objective is modelled (one for all, or a list, one per
            objective; the constraint model takes the first): ``"log-best"``: the log of the distance to just
            below the best measured value, so the few best configs are told apart as sharply as the long tail
            of poor ones; ``"log"``: the log of an objective whose measured values are all positive (latency);
            ``"none"``; ``"auto"`` (default): ``"log-best"`` when the measured values (minimisation form) are
            skewed towards the bad end (sample skewness > 1: accuracy on NAS-Bench-201, where most cells are
            good and a few are useless), else ``"none"``. NAS-Bench-201, 10 seeds, hypervolume ratio at 100
            evaluations with ``"log-best"`` instead of ``"none"``: raspi4 0.935 -> 0.953, fpga 0.937 -> 0.970.
        log_best_gap: how far below the best measured value ``"log-best"`` puts its zero, as a fraction of
            the measured range (smaller: sharper at the best end).
        n_bags, bag_mean, loss: bag size of the ``"sklearn-gbdt"`` / ``"sklearn-ridge-gbdt"`` predictors,
            whether the bag's mean (rather than the model fitted on every point) is the prediction, and the
            boosting loss (``"squared_error"`` or ``"huber"``, robust to a heavy tail of bad configs).
        late_batch, late_after: once ``late_after`` configs are measured, propose at most ``late_batch`` per
            round and wait for them before the next (fresher models late in a run; ``None``: off).
        exhaustive: a space with at most this many configs is scored whole each round (every unseen config is a
            candidate) instead of through the inner search and sampled pool (NAS-Bench-201: 15,625 configs,
            about 0.1 s per round). ``0``: always sample.
        explore: fraction of each batch (rounded) that goes not by hypervolume gain but to the candidate on the
            optimistic predicted front farthest from every measured config. Why: boosted trees never predict
            beyond the best value they have seen, so a region the first designs missed (NAS-Bench-201 on fpga:
            the slow, most accurate cells) shows no gain and is never visited; one such pick per batch of 10
            checks the model where it has no data.
        share_equivalent: for objectives marked ``graph_invariant`` (accuracy) on a space with graphs, a
            candidate whose graph was measured before takes that measurement (mean over its measured configs,
            std 0) instead of a prediction and is scored by its pessimistic point (a second copy is measured
            only when surely faster: dead operations run on some devices); unmeasured configs with one graph
            share one prediction. Why: many configs compute the same function (NAS-Bench-201: 15,284 connected
            cells, 8,764 distinct graphs); a model that tells them apart by their dead edges spent 46 of 100
            evaluations on functional duplicates (raspi4, seed 0) and chased the noise between them.
    """

    name = "linas"
    default_batch_size: ClassVar[int] = 10
    # Each objective's model also fits the partial results that have its value (the accuracy of a cell one
    # target's profile lacks); fronts, the initial design and the failure model count only complete ones.
    learns_from_partial: ClassVar[bool] = True

    def __init__(
        self,
        seed: int = 0,
        n_initial: int | None = None,
        predictor: str | Sequence[str] = "sklearn-gbdt",
        kappa: float | Sequence[Sequence[float]] = 0.5,
        inner_pop: int = 64,
        inner_generations: int = 20,
        n_random: int = 500,
        n_mutations: int = 8,
        neighbours: bool = True,
        target_transform: str | Sequence[str] = "auto",
        n_bags: int = 3,
        bag_mean: bool = False,
        late_batch: int | None = None,
        late_after: int = 150,
        loss: str = "squared_error",
        share_equivalent: bool = True,
        log_best_gap: float = 0.1,
        exhaustive: int = 20_000,
        explore: float = 0.2,
    ):
        super().__init__(seed)
        self.n_initial = n_initial
        self.predictor = predictor
        self.kappa = kappa
        self._kappa_steps = _kappa_schedule(kappa)
        self.inner_pop = int(inner_pop)
        self.inner_generations = int(inner_generations)
        self.n_random = int(n_random)
        self.n_mutations = int(n_mutations)
        self.neighbours = bool(neighbours)
        transforms = [target_transform] if isinstance(target_transform, str) else list(target_transform)
        if not transforms or not all(t in _TRANSFORMS for t in transforms):
            raise ValueError(
                f"target_transform must be one of {_TRANSFORMS} or a list of them (one per objective), "
                f"got {target_transform!r}"
            )
        self.target_transform = target_transform
        self.n_bags = int(n_bags)
        self.bag_mean = bool(bag_mean)
        self.late_batch = None if late_batch is None else int(late_batch)
        self.late_after = int(late_after)
        self.loss = loss
        self.share_equivalent = bool(share_equivalent)
        if not log_best_gap > 0:
            raise ValueError(f"log_best_gap must be > 0, got {log_best_gap!r}")
        self.log_best_gap = float(log_best_gap)
        self.exhaustive = int(exhaustive)
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"explore must be a fraction of the batch in [0, 1], got {explore!r}")
        self.explore = float(explore)
        self._every_config: list[Config] | None = None
        self._graph_keys: dict[str, str | None] = {}
        self._handed_out: dict[str, Config] = {}  # every config proposed, by key
        self._features: dict[str, np.ndarray] = {}
        self._bags: dict[str, Any] = {}
        self._has_graph: bool | None = None
        self._design: list[Config] | None = None

    # ------------------------------------------------------------------------------------------ helpers
    def _feature_rows(self, configs: Sequence[Config]) -> np.ndarray:
        rows = []
        for c in configs:
            f = self._features.get(c.key)
            if f is None:
                f = self._features[c.key] = np.asarray(self.space.features(c), dtype=np.float64)
            rows.append(f)
        return np.vstack(rows)

    def _kappa_now(self) -> float:
        """The exploration weight for the number of configs evaluated so far."""
        n = len(self.configs)
        return next(k for at, k in reversed(self._kappa_steps) if n >= at)

    def _graph_key(self, c: Config) -> str | None:
        """Key of the config's graph (equal for configs that compute the same function), ``None`` without one."""
        if c.key not in self._graph_keys:
            g = self.space.graph(c)
            self._graph_keys[c.key] = None if g is None else graph_key(g)
        return self._graph_keys[c.key]

    def _graph_bags(self, configs: Sequence[Config]) -> list[Any] | None:
        """Weisfeiler-Lehman label bags of the configs' graphs, or ``None`` when the space has no graphs."""
        if self._has_graph is None:
            self._has_graph = self.space.graph(configs[0]) is not None if configs else False
        if not self._has_graph:
            return None
        out = []
        for c in configs:
            bag = self._bags.get(c.key)
            if bag is None:
                bag = self._bags[c.key] = wl_labels(self.space.graph(c), iterations=1)
            out.append(bag)
        return out

    def _latin_design(self, n: int) -> list[Config]:
        """``n`` configs in which each value of each dimension appears ``n // card`` or ``n // card + 1`` times
        (the extra uses go to the first values, the small end of a NAS dimension, where a front starts),
        canonicalised and de-duplicated."""
        space = self.space
        columns = []
        for card in space.cardinalities:
            reps = -(-n // int(card))
            values = np.tile(np.arange(int(card)), reps)[:n]
            columns.append(self.rng.permutation(values))
        out: dict[str, Config] = {}
        for row in np.stack(columns, axis=1):
            c = space.canonical(space.from_indices(row))
            out.setdefault(c.key, c)
        return list(out.values())

    def _latin(self, n: int, n_initial: int) -> list[Config]:
        """The next ``n`` configs of the initial design, planned once for all ``n_initial`` configs so that a
        small batch size does not shrink it (a design planned per batch of 3 would use only 3 values of a
        5-valued dimension)."""
        if self._design is None:
            self._design = self._latin_design(max(n, n_initial))
        found: list[Config] = []
        while self._design and len(found) < n:
            c = self._design.pop(0)
            if c.key not in self.known and c.key not in self._handed_out:
                found.append(c)
        if not found:  # the design collapsed onto known configs (canonical duplicates): explore randomly
            found = self.random_unseen(min(n, n_initial), exclude=self._handed_out)
        return found  # possibly fewer than n: the engine asks again, and the models take over

    # ------------------------------------------------------------------------------------------ ask
    def _ask(self, n: int) -> Sequence[Config]:
        n_initial = self.n_initial if self.n_initial is not None else max(10, 2 * len(self.space))
        F_all = self.values
        ok = np.isfinite(F_all).all(axis=1) if len(F_all) else np.zeros(0, dtype=bool)
        n_ok_distinct = len({self.configs[i].key for i in np.flatnonzero(ok)})
        if n_ok_distinct + len(self._handed_out.keys() - set(self.known)) < n_initial or n_ok_distinct < 4:
            out = self._latin(n, n_initial)
        else:
            if self.late_batch is not None and len(self.configs) >= self.late_after:
                if any(k not in self.known for k in self._handed_out):
                    return []  # the engine waits for the pending results: the next models will see them
                n = min(n, self.late_batch)
            out = self._model_based(n, ok)
        self._handed_out.update((c.key, c) for c in out)
        return out

    def _model_based(self, n: int, ok: np.ndarray) -> list[Config]:
        assert self.problem is not None
        idx = np.flatnonzero(ok)
        configs = [self.configs[i] for i in idx]
        F = self.values[idx]
        V = np.where(np.isfinite(self.violations[idx]), self.violations[idx], np.nan)
        X = self._feature_rows(configs)
        bags = self._graph_bags(configs)
        m = F.shape[1]

        models: list[Any] = []
        for j in range(m):
            if j in self.problem.cheap:
                models.append(None)
                continue
            Xj, bags_j, yj = X, bags, F[:, j]
            partial = np.flatnonzero(~ok & np.isfinite(self.values[:, j]))
            if len(partial):
                more = [self.configs[i] for i in partial]
                Xj = np.vstack([X, self._feature_rows(more)])
                bags_j = None if bags is None else bags + self._graph_bags(more)
                yj = np.concatenate([yj, self.values[partial, j]])
            models.append(self._fit(Xj, bags_j, yj, self.seed + len(self.configs), j))
        v_model = None
        if self.problem.n_constraints and np.nanmax(np.nan_to_num(V, nan=0.0)) > 0:
            Vfit = np.where(np.isfinite(V), V, np.nanmax(V))
            v_model = self._fit(X, bags, Vfit, self.seed + 1, -1)
        fail_model, fail_threshold = self._failure_model(X)
        needs_graph = any(getattr(md, "takes_graph", False) for md in (*models, v_model, fail_model))
        shared = self._equivalence_sharing(configs, F)

        def predict(
            cands: Sequence[Config], with_std: bool = True
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            Xc = self._feature_rows(cands)
            bc = self._graph_bags(cands) if needs_graph else None
            mu = np.zeros((len(cands), m))
            sd = np.zeros((len(cands), m))
            failed = np.zeros(len(cands), dtype=bool)
            for j, model in enumerate(models):
                if model is None:
                    mu[:, j], bad = _cheap_values(self.problem.cheap[j], cands)
                    failed |= bad
                else:
                    mu[:, j], sd[:, j] = _mean_std(model, Xc, bc, with_std)
            if shared is not None:
                shared.apply(cands, mu, sd, with_std)
            viol = np.zeros(len(cands))
            if v_model is not None:
                viol, viol_sd = _mean_std(v_model, Xc, bc, with_std)
                viol = viol - self._kappa_now() * viol_sd
            if fail_model is not None:
                # likely to fail, even optimistically: infeasible, by its failure probability
                p, p_sd = _mean_std(fail_model, Xc, bc, with_std)
                viol = np.where(
                    p - self._kappa_now() * p_sd > fail_threshold, np.maximum(viol, 0.0) + p, viol
                )
            # A config whose cheap objective cannot be computed ranks below every feasible one; if it is
            # proposed all the same, its evaluation fails and is recorded like any failed evaluation.
            viol = np.where(failed, np.maximum(viol, 0.0) + _FAILED_CHEAP_VIOLATION, viol)
            return mu, sd, viol

        pool = self._candidates(configs, F, V, predict)
        if shared is not None:  # a graph in flight gets no second config before its result is in
            pool = shared.not_pending(pool)
        if not pool:
            return self.random_unseen(n, exclude=self._handed_out)
        mu, sd, viol = predict(pool)
        siblings = known = None
        if shared is not None:
            siblings = [shared.key(c) for c in pool]
            known = np.array([k in shared.measured for k in siblings])
        return self._select(n, pool, mu, sd, viol, F, V, siblings, known)

    def _failure_model(self, X: np.ndarray) -> tuple[Any, float]:
        """A model of failure (1) against success (0) over every told config (``None`` when none failed), and
        the predicted failure probability above which a candidate counts as infeasible.

        Why: failed evaluations have no values, and models of the successes alone predict a failing region (nets
        too wide for the memory) as good as its neighbours: a LINAS run spent 44 of 100 evaluations there. The
        threshold sits halfway between the measured failure rate and certainty, so failures that no feature
        explains (a flaky device: the same probability everywhere) leave the search as it was; so does the
        model, ridge or extremely randomised trees by cross-validation (``"sklearn-auto"``), which for such
        failures mostly picks the smooth ridge (7 of 8 toy cases; trees in 8 of 8 where a region fails).

        Toy MobileNetV3-like space, 100 evaluations: where the widest, deepest nets fail, 26% of the evaluations
        failed before (5 seeds; hypervolume ratio 0.967), 11% with it (0.987); where 30% of the configs fail at
        random, 31% failed either way (8 seeds; 0.975 either way; the predictor's own boosted trees cost 0.009
        there, avoiding the neighbours of every failed config). NAS-Bench-201 with cells failing on a 3x3 conv
        on the first edge, failures among 48 model-based picks, seeds 0-2: gbdt-wl 19, 13, 8 -> 2, 2, 1.
        """
        ok = np.isfinite(self.values).all(axis=1)
        failed = list({self.configs[i].key: self.configs[i] for i in np.flatnonzero(~ok)}.values())
        if not failed:
            return None, 1.0
        Xf = np.vstack([X, self._feature_rows(failed)])
        y = np.concatenate([np.zeros(len(X)), np.ones(len(failed))])
        return fit_predictor(Xf, y, "sklearn-auto", seed=self.seed + 2), 0.5 * (1.0 + float(y.mean()))

    def _equivalence_sharing(self, configs: list[Config], F: np.ndarray) -> _SharedGraphs | None:
        """Sharing of graph-invariant objectives between configs with one graph, or ``None`` when nothing is
        shared (option off, no such objective, or a space without graphs)."""
        assert self.problem is not None
        columns = sorted(j for j in self.problem.graph_invariant if j not in self.problem.cheap)
        if not (self.share_equivalent and columns and configs and self._graph_key(configs[0]) is not None):
            return None
        pending = [c for k, c in self._handed_out.items() if k not in self.known]
        return _SharedGraphs(self._graph_key, configs, F, columns, pending)

    def _kind(self, j: int) -> str:
        """Predictor kind of objective ``j`` (``-1``: the constraint violation, which takes the first kind)."""
        if isinstance(self.predictor, str):
            return self.predictor
        return self.predictor[max(j, 0)]

    def _model_options(self, kind: str) -> dict[str, Any]:
        if kind in ("sklearn-gbdt", "sklearn-ridge-gbdt", "gbdt-wl"):
            return {"n_bags": self.n_bags, "bag_mean": self.bag_mean, "loss": self.loss}
        return {}

    def _transform(self, j: int, y: np.ndarray) -> str:
        """Target transform of objective ``j`` for the measured values ``y`` (``"auto"`` resolved)."""
        tt = self.target_transform
        tt = tt if isinstance(tt, str) else tt[min(max(j, 0), len(tt) - 1)]
        if tt != "auto":
            return tt
        return "log-best" if _skewness(y) > 1.0 else "none"

    def _fit(self, X: np.ndarray, bags: list[Any] | None, y: np.ndarray, seed: int, j: int) -> Any:
        """A predictor of objective ``j``, on the log scale if asked and the values allow it."""
        kind = self._kind(j)
        shift = 0.0
        tt = self._transform(j, y)
        log = j >= 0 and tt == "log" and (y > 0).all()
        if j >= 0 and tt == "log-best" and len(y):
            # log of the distance to just below the best value: differences among the best configs weigh as
            # much as the long tail of poor ones (accuracy: 94.0 vs 94.3 matters, 40 vs 60 does not)
            span = float(y.max() - y.min())
            shift, log = float(y.min()) - (self.log_best_gap * span if span > 0 else 1.0), True
        target = np.log(y - shift) if log else y
        if kind in _GRAPH_KINDS:
            if bags is None:  # the space has no graphs: the kind's graph-free part alone
                kind = _GRAPH_KINDS[kind]
            else:
                model = _GBDTPlusWL(X, bags, target, seed, **self._model_options(kind))
                return _LogTarget(model, shift) if log else model
        model = fit_predictor(X, target, kind, seed=seed, **self._model_options(kind))
        return _LogTarget(model, shift) if log else model

    def _candidates(self, configs: list[Config], F: np.ndarray, V: np.ndarray, predict: Any) -> list[Config]:
        space = self.space
        seen = set(self.known) | self._handed_out.keys()
        if space.size <= self.exhaustive:
            # A small space is scored whole: the acquisition's true maximum instead of a sampled pool's
            if self._every_config is None:
                every = (space.canonical(c) for c in space.all_configs())
                self._every_config = list({c.key: c for c in every}.values())
            return [c for c in self._every_config if c.key not in seen]
        pool: dict[str, Config] = {}

        def add(c: Config) -> None:
            if c.key not in seen:
                pool.setdefault(c.key, c)

        for c in self._inner_search(configs, F, V, predict):
            add(c)
        feasible = np.nan_to_num(V, nan=np.inf) <= 0
        base = np.flatnonzero(feasible) if feasible.any() else np.arange(len(configs))
        front = base[nondominated_mask(F[base])]
        prob = min(0.5, 2.0 / max(len(space), 1))
        for i in front:
            if self.neighbours:
                for c in _neighbours(space, configs[i]):
                    add(c)
            for _ in range(self.n_mutations):
                add(space.mutate(configs[i], self.rng, prob=prob))
        for _ in range(self.n_random):
            add(space.sample(self.rng))
        return list(pool.values())

    def _inner_search(
        self, configs: list[Config], F: np.ndarray, V: np.ndarray, predict: Any
    ) -> list[Config]:
        """NSGA-II on the predicted objectives, started from the measured configs; returns every config visited.

        A compact numpy NSGA-II rather than pymoo: the inner problem is cheap and small spaces would make pymoo's
        duplicate elimination spin, while here duplicates are simply not re-predicted.
        """
        space = self.space
        card = space.cardinalities
        d = len(card)
        visited: dict[str, Config] = {}
        scores: dict[str, tuple[np.ndarray, float]] = {}

        def evaluate(rows: np.ndarray) -> tuple[list[Config], np.ndarray, np.ndarray]:
            cands = [space.canonical(space.from_indices(r)) for r in rows]
            new = [c for c in {c.key: c for c in cands}.values() if c.key not in scores]
            if new:
                mu, _, viol = predict(new, with_std=False)
                for i, c in enumerate(new):
                    scores[c.key] = (mu[i], float(viol[i]))
                    visited.setdefault(c.key, c)
            Fp = np.array([scores[c.key][0] for c in cands])
            Vp = np.array([max(scores[c.key][1], 0.0) for c in cands])
            return cands, Fp, Vp

        # Start from the measured configs, feasible ones first in the order they were told (so past inner_pop
        # evaluations mostly the initial design: a diverse start, not the measured front, whose neighbourhood the
        # pool gets from its mutations and neighbours), topped up with random ones. Starting from the best
        # instead (constrained rank, then crowding) searched no better: 10-dim toy space, 250 evaluations,
        # 5 seeds, hypervolume 819.9 against 821.7.
        order = np.lexsort((np.arange(len(F)), np.nan_to_num(V, nan=np.inf) > 0))
        rows = [space.to_indices(configs[i]) for i in order[: self.inner_pop]]
        while len(rows) < self.inner_pop:
            rows.append(self.rng.integers(0, card))
        pop = np.array(rows, dtype=np.int64)
        _, Fp, Vp = evaluate(pop)
        for _ in range(self.inner_generations):
            rank, crowd = _rank_and_crowding(Fp, Vp)
            # binary tournaments on (rank, crowding)
            a = self.rng.integers(0, len(pop), (len(pop), 2))
            b = self.rng.integers(0, len(pop), (len(pop), 2))
            better = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowd[a] > crowd[b]))
            parents = np.where(better, a, b)
            p1, p2 = pop[parents[:, 0]], pop[parents[:, 1]]
            child = np.where(self.rng.random(p1.shape) < 0.5, p1, p2)  # uniform crossover
            mutate = self.rng.random(child.shape) < 1.0 / d
            shift = self.rng.integers(
                1, np.maximum(card, 2), child.shape
            )  # a different value of the same dim
            child = np.where(mutate & (card > 1), (child + shift) % card, child)
            _, Fc, Vc = evaluate(child)
            allpop = np.vstack([pop, child])
            allF, allV = np.vstack([Fp, Fc]), np.concatenate([Vp, Vc])
            _, first = np.unique(allpop, axis=0, return_index=True)  # survivors are distinct
            first = np.sort(first)
            allpop, allF, allV = allpop[first], allF[first], allV[first]
            rank, crowd = _rank_and_crowding(allF, allV)
            keep = np.lexsort((-crowd, rank))[: self.inner_pop]
            pop, Fp, Vp = allpop[keep], allF[keep], allV[keep]
        return list(visited.values())

    def _select(
        self,
        n: int,
        pool: list[Config],
        mu: np.ndarray,
        sd: np.ndarray,
        viol: np.ndarray,
        F: np.ndarray,
        V: np.ndarray,
        siblings: Sequence[Any] | None = None,
        known: np.ndarray | None = None,
    ) -> list[Config]:
        """Greedy batch by predicted hypervolume gain; ``siblings`` (a key per candidate, e.g. its graph) keeps
        two candidates with the same key out of one batch, and candidates flagged ``known`` (another config of
        their graph is measured) are scored by their pessimistic point ``mean + kappa * std``. The last
        ``explore`` share of the batch goes to :meth:`_explore_pick` instead."""
        feasible = np.nan_to_num(V, nan=np.inf) <= 0
        front = F[feasible] if feasible.any() else np.zeros((0, F.shape[1]))
        if len(front):
            front = front[nondominated_mask(front)]
        # Normalise by the measured range so every objective weighs the same; the reference point sits 10% of
        # the range beyond the worst measured value, so extreme trade-offs still count.
        lo, hi = F.min(axis=0), F.max(axis=0)
        scale = np.where(hi - lo > 0, hi - lo, 1.0)
        ref = np.full(F.shape[1], 1.1)

        def norm(a: np.ndarray) -> np.ndarray:
            return (a - lo) / scale

        opt = norm(mu - self._kappa_now() * sd)
        if known is not None and known.any():
            # A copy of a measured graph has a known accuracy: it is worth a measurement only when even its
            # pessimistic latency beats the measured copies (dead operations run on some devices, not others).
            opt[known] = norm(mu + self._kappa_now() * sd)[known]
        believed = norm(mu)
        cur = norm(front) if len(front) else np.zeros((0, F.shape[1]))
        predicted_ok = viol <= 0
        chosen: list[int] = []
        available = np.ones(len(pool), dtype=bool)
        checked = norm(F)  # what the exploration picks keep away from: measured and already chosen points
        sibling_ids = None if siblings is None else np.unique(np.asarray(siblings), return_inverse=True)[1]

        def take(i: int) -> None:
            nonlocal checked
            chosen.append(i)
            available[i] = False
            if sibling_ids is not None:
                available[sibling_ids == sibling_ids[i]] = False
            checked = np.vstack([checked, opt[i][None]])

        n_take = min(n, len(pool))
        n_explore = round(self.explore * n_take)
        for _ in range(n_take - n_explore):
            gain = hypervolume_gain(cur, opt, ref)
            # No gain anywhere: prefer what is closest to the front, so the batch still explores its edge.
            score = np.where(gain > 0, gain, -_dominance_distance(cur, opt) - 1e-12)
            score = np.where(predicted_ok, score, -1e6 - viol)
            score = np.where(available, score, -np.inf)
            best = int(np.argmax(score))
            if not np.isfinite(score[best]):
                break
            take(best)
            if predicted_ok[best]:
                cur = np.vstack([cur, believed[best][None]])
                cur = cur[nondominated_mask(cur)]
        for _ in range(n_explore):
            pick = self._explore_pick(opt, checked, available & predicted_ok)
            if pick is None:
                break
            take(pick)
        return [pool[i] for i in chosen]

    @staticmethod
    def _explore_pick(opt: np.ndarray, measured: np.ndarray, available: np.ndarray) -> int | None:
        """The candidate on the optimistic predicted front farthest (max-norm) from everything measured: a gap in
        the predicted front that no measurement has checked, whatever the hypervolume gain says."""
        idx = np.flatnonzero(available)
        if not len(idx):
            return None
        front = idx[nondominated_mask(opt[idx])]
        dist = np.abs(opt[front][:, None, :] - measured[None, :, :]).max(axis=2).min(axis=1)
        return int(front[int(np.argmax(dist))])


#: violation given to a candidate whose cheap objective raised: far beyond any predicted constraint violation
_FAILED_CHEAP_VIOLATION = 1e6


def _cheap_values(fn: Any, cands: Sequence[Config]) -> tuple[np.ndarray, np.ndarray]:
    """``fn`` on every candidate, and which ones failed (raised or gave a non-finite value).

    Failed entries get the worst value of the others so the inner search's arithmetic stays finite (the
    caller marks them infeasible). Why not let it raise: a cheap objective that fails for some configs (a
    lookup table missing a layer) fails those evaluations in every other searcher, not the whole search.
    """
    values = np.empty(len(cands))
    failed = np.zeros(len(cands), dtype=bool)
    for i, c in enumerate(cands):
        try:
            values[i] = float(fn(c))
        except Exception:
            failed[i] = True
            continue
        failed[i] = not np.isfinite(values[i])
    if failed.any():
        values[failed] = values[~failed].max() if (~failed).any() else 0.0
    return values, failed
