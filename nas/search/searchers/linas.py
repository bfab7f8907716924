"""LINAS: predictor-in-the-loop search (after DyNAS-T's Lightweight Iterative NAS).

Each round:

1. fit one predictor per expensive objective (and one for the constraint violation) on every evaluated config
   (``space.features``; positive objectives such as latency on a log scale); cheap objectives are called
   directly;
2. gather unseen candidates. A space of at most ``enumerate_limit`` configs (NAS-Bench-201: 15,625) is scored
   whole, and the candidates are the unseen configs within ``local_radius`` changed dimensions of the measured
   front (Pareto local search: front networks are near each other, and an imperfect predictor ranks a
   neighbourhood far better than a whole space); the whole space when the neighbourhood is used up. A larger
   space is searched by an inner NSGA-II on the predictors, plus one-step neighbours and mutations of the
   measured front and random configs;
3. pick the batch greedily by **predicted hypervolume gain** over the measured front, using the optimistic point
   ``mean - kappa * std`` (uncertain candidates get a bonus), adding each pick's mean prediction to the front
   before the next pick (the "kriging believer") so a batch spreads along the front. Objectives are scaled to
   the measured front's box; a candidate beyond its nadir is credited with the reference it would move to.

The first ``n_initial`` configs come from a Latin design over the categories (each value of each dimension
used about equally often). With ``batch_fraction``, model-based rounds start small and grow with the
evaluations (on NAS-Bench-201 this helped at 50-100 evaluations; on the small toy space of the tests, full
batches of 10 did better, so it is off by default).

Example:
    >>> s = LinasSearcher(seed=0, n_initial=12)
    >>> s.default_batch_size
    10
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from nas.pareto import hypervolume, nondominated_mask
from nas.search.searchers.base import Searcher
from nas.search.searchers.surrogates import fit_predictor
from nas.space import Config

__all__ = ["LinasSearcher", "fit_predictor", "hypervolume_gain"]


def hypervolume_gain(front: np.ndarray, points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Hypervolume each row of ``points`` would add to ``front`` (minimisation, bounded by ``ref``).

    ``ref`` is one reference point (shape ``(m,)``) or one per point (shape ``(n, m)``). Two objectives are done in one vectorised pass over the staircase; more
    fall back to one hypervolume per point.

    Example:
        >>> hypervolume_gain(np.array([[1.0, 2.0]]), np.array([[2.0, 1.0], [1.5, 2.5]]), np.array([3.0, 3.0]))
        array([1., 0.])
    """
    points = np.asarray(points, dtype=np.float64)
    m = points.shape[1]
    refs = np.broadcast_to(np.asarray(ref, dtype=np.float64), points.shape)
    front = np.asarray(front, dtype=np.float64).reshape(-1, m)
    if m != 2:
        out = []
        for p, r in zip(points, refs):
            inside = front[(front < r).all(axis=1)]
            base = hypervolume(inside, r) if len(inside) else 0.0
            out.append(hypervolume(np.vstack([inside, p[None]]), r) - base)
        return np.array(out)
    if len(front):
        front = front[nondominated_mask(front)]
        front = front[np.argsort(front[:, 0])]
    # Staircase as steps: on [x_i, x_{i+1}) everything above y_i is covered; left of x_0 nothing is (height ref).
    # Clipping widths and heights to each point's reference leaves out front points beyond it.
    xs = np.concatenate([[-np.inf], front[:, 0], [np.inf]])
    r0, r1 = refs[:, :1], refs[:, 1:]
    px = np.minimum(points[:, :1], r0)
    py = np.minimum(points[:, 1:], r1)
    hs = np.concatenate([r1, np.broadcast_to(front[None, :, 1], (len(points), len(front)))], axis=1)
    width = np.clip(np.minimum(xs[None, 1:], r0) - np.maximum(xs[None, :-1], px), 0.0, None)
    height = np.clip(np.minimum(hs, r1) - py, 0.0, None)
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
    for d in space.dims:
        if not d.is_active(cfg):
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


def _front_box(front: np.ndarray, outlier: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Ideal and nadir of a measured front, the nadir ignoring lone extreme trade-offs.

    A front point that alone spans more than ``outlier`` of an objective's range at its worst end (a network
    that guesses, 10% accurate but nearly free) would otherwise set the scale of that objective and the
    reference point, and the search would weigh the trade-offs that matter ten times too little.
    """
    lo, hi = front.min(axis=0), front.max(axis=0).copy()
    for j in range(front.shape[1]):
        v = np.sort(front[:, j])[::-1]
        span = v[0] - v[-1]
        k = 0
        while k < len(v) - 2 and v[k] - v[k + 1] > outlier * span:
            k += 1
        hi[j] = v[k]
    return lo, hi


class _LogTarget:
    """Fits a model on ``log(y)`` (latencies, sizes: multiplicative effects, skewed) and maps back."""

    def __init__(self, model: Any):
        self._model = model

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.exp(self._model.predict(X))

    def predict_std(self, X: np.ndarray) -> np.ndarray:
        # first-order: d exp(u) = exp(u) du
        return np.exp(self._model.predict(X)) * self._model.predict_std(X)


class LinasSearcher(Searcher):
    """Predictor-in-the-loop multi-objective search.

    Args:
        seed: random seed.
        n_initial: size of the initial Latin design (default: ``max(10, 2 * n_dims)``).
        predictor: model per objective, see :func:`~nas.search.searchers.surrogates.fit_predictor`
            (``"sklearn-forest+gbdt"``, ``"sklearn-forest"``, ``"sklearn-gbdt"``, ``"predictors:gbdt"``, ...).
        kappa: weight of the predicted std in the optimistic point ``mean - kappa * std``.
        log_positive: model an objective on a log scale when all its values are positive.
        enumerate_limit: spaces with at most this many configs are scored whole every round instead of searched
            by the inner NSGA-II (cheaper and better for tabular benchmarks such as NAS-Bench-201).
        local_radius: in an enumerated space, candidates are the configs within this many changed dimensions of
            the measured front (``None``: every unseen config).
        global_share: in an enumerated space, the expected share of each round picked from the whole space
            rather than the front's neighbourhood.
        batch_fraction: a model-based round proposes ``ceil(batch_fraction * evaluations so far)`` configs (at
            least 1, at most what the runner asks for) and waits for their results; ``None``: the runner's batch.
        inner_pop, inner_generations: size of the inner NSGA-II run on the predictors (larger spaces).
        n_random: random configs added to the candidate pool each round (larger spaces).
        n_mutations: mutations of each measured front config added to the pool (larger spaces).
        neighbours: add the one-step neighbours of the measured front to the pool (larger spaces).
        trim_outliers: scale objectives without lone extreme trade-offs of the front (see ``_front_box``).
    """

    name = "linas"
    default_batch_size: ClassVar[int] = 10

    def __init__(
        self,
        seed: int = 0,
        n_initial: int | None = None,
        predictor: str = "sklearn-forest+gbdt",
        kappa: float = 0.5,
        log_positive: bool = True,
        enumerate_limit: int = 20_000,
        local_radius: int | None = 1,
        batch_fraction: float | None = None,
        global_share: float = 0.0,
        inner_pop: int = 64,
        inner_generations: int = 20,
        n_random: int = 500,
        n_mutations: int = 8,
        neighbours: bool = True,
        trim_outliers: bool = True,
    ):
        super().__init__(seed)
        self.n_initial = n_initial
        self.predictor = predictor
        self.kappa = float(kappa)
        self.log_positive = bool(log_positive)
        self.enumerate_limit = int(enumerate_limit)
        self.inner_pop = int(inner_pop)
        self.inner_generations = int(inner_generations)
        self.n_random = int(n_random)
        self.n_mutations = int(n_mutations)
        self.neighbours = bool(neighbours)
        self.trim_outliers = bool(trim_outliers)
        self.local_radius = local_radius
        self.batch_fraction = batch_fraction
        self.global_share = float(global_share)
        self._handed_out: set[str] = set()
        self._outstanding: set[str] = set()  # handed out by the current model-based round, not told yet
        self._waits = 0
        self._features: dict[str, np.ndarray] = {}
        # every config of an enumerated space, with its features, index encoding and row by key
        self._all: list[Config] | None = None
        self._all_X = np.zeros((0, 0))
        self._all_idx = np.zeros((0, 0), dtype=np.int64)
        self._all_row: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ helpers
    def _feature_rows(self, configs: Sequence[Config]) -> np.ndarray:
        rows = []
        for c in configs:
            f = self._features.get(c.key)
            if f is None:
                f = self._features[c.key] = np.asarray(self.space.features(c), dtype=np.float64)
            rows.append(f)
        return np.vstack(rows)

    def _enumerate(self) -> bool:
        """Whether the space is small enough to score whole; builds the config list and features once."""
        if self._all is None:
            if self.space.size > self.enumerate_limit:
                self._all = []
            else:
                self._all = list(self.space.all_configs())
                self._all_X = np.asarray(self.space.features_matrix(self._all), dtype=np.float64)
                dims = self.space.dims  # (all_configs are valid: index them without re-validating)
                self._all_idx = np.array(
                    [[d.index(c[d.name]) for d in dims] for c in self._all], dtype=np.int64
                )
                self._all_row = {c.key: i for i, c in enumerate(self._all)}
                for c, f in zip(self._all, self._all_X):
                    self._features.setdefault(c.key, f)
        return bool(self._all)

    def _latin(self, n: int) -> list[Config]:
        space = self.space
        columns = []
        for card in space.cardinalities:
            reps = -(-n // int(card))
            columns.append(self.rng.permutation(np.tile(np.arange(card), reps)[:n]))
        idx = np.stack(columns, axis=1)
        out: dict[str, Config] = {}
        for row in idx:
            c = space.canonical(space.from_indices(row))
            if c.key not in self.known and c.key not in self._handed_out:
                out.setdefault(c.key, c)
        found = list(out.values())
        if len(found) < n:
            found += self.random_unseen(n - len(found), exclude=self._handed_out | set(out))
        return found[:n]

    # ------------------------------------------------------------------------------------------ ask
    def _ask(self, n: int) -> Sequence[Config]:
        n_initial = self.n_initial if self.n_initial is not None else max(10, 2 * len(self.space))
        F_all = self.values
        ok = np.isfinite(F_all).all(axis=1) if len(F_all) else np.zeros(0, dtype=bool)
        n_ok_distinct = len({self.configs[i].key for i in np.flatnonzero(ok)})
        if n_ok_distinct + len(self._handed_out - set(self.known)) < n_initial or n_ok_distinct < 4:
            out = self._latin(n)
        else:
            if self._outstanding and self._waits < 3:
                # A model-based round waits for its own results; the runner then evaluates what it has. (A
                # runner that never returns them, e.g. one that released them, gets new proposals after 3 tries.)
                self._waits += 1
                return []
            self._outstanding.clear()
            self._waits = 0
            if self.batch_fraction is not None:
                n = min(n, max(1, int(np.ceil(self.batch_fraction * n_ok_distinct))))
            out = self._model_based(n, ok)
            self._outstanding.update(c.key for c in out)
        self._handed_out.update(c.key for c in out)
        return out

    def _tell(self, configs: list[Config], F: np.ndarray, V: np.ndarray) -> None:
        self._outstanding.difference_update(c.key for c in configs)

    def _fit(self, X: np.ndarray, y: np.ndarray, seed: int) -> Any:
        if self.log_positive and (y > 0).all():
            return _LogTarget(fit_predictor(X, np.log(y), self.predictor, seed=seed))
        return fit_predictor(X, y, self.predictor, seed=seed)

    def _model_based(self, n: int, ok: np.ndarray) -> list[Config]:
        assert self.problem is not None
        idx = np.flatnonzero(ok)
        configs = [self.configs[i] for i in idx]
        F = self.values[idx]
        V = np.where(np.isfinite(self.violations[idx]), self.violations[idx], np.nan)
        X = self._feature_rows(configs)
        m = F.shape[1]

        models: list[Any] = []
        for j in range(m):
            if j in self.problem.cheap:
                models.append(None)
            else:
                models.append(self._fit(X, F[:, j], seed=self.seed + len(self.configs)))
        v_model = None
        if self.problem.n_constraints and np.nanmax(np.nan_to_num(V, nan=0.0)) > 0:
            Vfit = np.where(np.isfinite(V), V, np.nanmax(V))
            v_model = fit_predictor(X, Vfit, self.predictor, seed=self.seed + 1)

        def predict(
            cands: Sequence[Config], with_std: bool = True, Xc: np.ndarray | None = None
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if Xc is None:
                Xc = self._feature_rows(cands)
            mu = np.zeros((len(cands), m))
            sd = np.zeros((len(cands), m))
            for j, model in enumerate(models):
                if model is None:
                    mu[:, j] = [self.problem.cheap[j](c) for c in cands]
                else:
                    mu[:, j] = model.predict(Xc)
                    if with_std:
                        sd[:, j] = model.predict_std(Xc)
            viol = np.zeros(len(cands))
            if v_model is not None:
                viol = v_model.predict(Xc)
                if with_std:
                    viol = viol - self.kappa * v_model.predict_std(Xc)
            return mu, sd, viol

        if self._enumerate():
            assert self._all is not None
            near, unseen = self._enumerated_pool(configs, F, V)
            # Most of a round exploits the front's neighbourhood; a share (rounded at random) goes to the best
            # predicted configs anywhere, so a search stuck on a poor front still jumps.
            n_far = int(np.floor(self.global_share * n + self.rng.random())) if len(near) < len(unseen) else 0
            picked: list[Config] = []
            for rows, k in ((near, n - n_far), (unseen, n_far)):
                taken = {c.key for c in picked}
                rows = [r for r in rows if self._all[r].key not in taken]
                if k <= 0 or not rows:
                    continue
                pool = [self._all[i] for i in rows]
                mu, sd, viol = predict(pool, Xc=self._all_X[rows])
                picked += self._select(k, pool, mu, sd, viol, F, V)
            return picked
        else:
            pool = self._candidates(configs, F, V, predict)
            if not pool:
                return self.random_unseen(n, exclude=self._handed_out)
            mu, sd, viol = predict(pool)
        return self._select(n, pool, mu, sd, viol, F, V)

    def _enumerated_pool(
        self, configs: list[Config], F: np.ndarray, V: np.ndarray
    ) -> tuple[list[int], list[int]]:
        """Rows of the unseen configs within ``local_radius`` changed dimensions of the measured front (all
        unseen rows when none is left there), and rows of all unseen configs."""
        seen = set(self.known) | self._handed_out
        rows = [i for i, c in enumerate(self._all or ()) if c.key not in seen]
        if self.local_radius is None or not rows:
            return rows, rows
        feasible = np.nan_to_num(V, nan=np.inf) <= 0
        base = np.flatnonzero(feasible) if feasible.any() else np.arange(len(configs))
        front = base[nondominated_mask(F[base])]
        front_idx = self._all_idx[[self._all_row[configs[i].key] for i in front]]
        changed = (self._all_idx[rows][:, None, :] != front_idx[None]).sum(axis=2).min(axis=1)
        near = [r for r, d in zip(rows, changed) if d <= self.local_radius]
        return near or rows, rows

    def _candidates(self, configs: list[Config], F: np.ndarray, V: np.ndarray, predict: Any) -> list[Config]:
        space = self.space
        seen = set(self.known) | self._handed_out
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

        # Start from the measured configs, best (feasible) first, topped up with random ones.
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
    ) -> list[Config]:
        feasible = np.nan_to_num(V, nan=np.inf) <= 0
        front = F[feasible] if feasible.any() else np.zeros((0, F.shape[1]))
        if len(front):
            front = front[nondominated_mask(front)]
        # Normalise by the measured front's box so every objective weighs the same; the reference point sits 10%
        # of the range beyond the front's nadir (as a user would put it), lone extreme trade-offs aside.
        if self.trim_outliers and len(front) >= 3:
            lo, hi = _front_box(front)
        else:
            lo, hi = F.min(axis=0), F.max(axis=0)
        scale = np.where(hi - lo > 0, hi - lo, 1.0)
        ref = np.full(F.shape[1], 1.1)

        def norm(a: np.ndarray) -> np.ndarray:
            return (a - lo) / scale

        opt = norm(mu - self.kappa * sd)
        # A candidate beyond the nadir would move it (and the reference with it): give each candidate the
        # reference it would have on the front it extends, else the front's extremes are never credited.
        refs = np.maximum(ref[None, :], opt + 0.1)
        believed = norm(mu)
        cur = norm(front) if len(front) else np.zeros((0, F.shape[1]))
        predicted_ok = viol <= 0
        chosen: list[int] = []
        available = np.ones(len(pool), dtype=bool)
        for _ in range(min(n, len(pool))):
            gain = hypervolume_gain(cur, opt, refs)
            # No gain anywhere: prefer what is closest to the front, so the batch still explores its edge.
            score = np.where(gain > 0, gain, -_dominance_distance(cur, opt) - 1e-12)
            score = np.where(predicted_ok, score, -1e6 - viol)
            score = np.where(available, score, -np.inf)
            best = int(np.argmax(score))
            if not np.isfinite(score[best]):
                break
            chosen.append(best)
            available[best] = False
            if predicted_ok[best]:
                cur = np.vstack([cur, believed[best][None]])
                cur = cur[nondominated_mask(cur)]
        return [pool[i] for i in chosen]
