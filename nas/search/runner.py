"""``nas.search.run``: budgets, deduplication, the store, and local or Ray execution around a searcher.

The runner owns everything a searcher must not care about:

* the **budget** counts real evaluations exactly (failed ones included; cached answers are free);
* **deduplication**: configs are canonicalised (``space.canonical``) and identified by their key; a config
  evaluated or in flight is never evaluated again, its result is told to the searcher from the cache;
* the **store**: every evaluation is written when it finishes; ``resume=True`` replays the store into the
  searcher and continues to exactly ``budget``;
* **execution**: in this process (``backend="local"``, ``max_concurrent`` threads) or on Ray Tune
  (``backend="ray"``, see :mod:`nas.search.ray_backend`).

Example:
    >>> from nas.space import Choice, SearchSpace
    >>> from nas.search import Objective, run
    >>> space = SearchSpace("toy", [Choice("w", (1, 2, 3, 4)), Choice("d", (1, 2, 3))])
    >>> objs = [Objective("quality", lambda c: c["w"] * c["d"], "max"),
    ...         Objective("cost", lambda c: c["w"] + 2 * c["d"], "min")]
    >>> result = run(space, objs, algorithm="random", budget=6, progress=False)
    >>> len(result.history), result.history["key"].is_unique
    (6, True)
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.search.objectives import Constraint, Objective, check_objectives
from nas.search.result import USABLE_STATUSES, SearchResult
from nas.search.searchers.base import Problem, Searcher, get
from nas.search.store import Store, open_store
from nas.space import Config, SearchSpace

__all__ = ["SearchFailedError", "evaluate_config", "run"]

log = logging.getLogger(__name__)

#: consecutive asks that bring nothing new before the runner proposes random unseen configs itself
_MAX_STALLED_ASKS = 30
#: a run whose first evaluations all fail stops, instead of spending the budget on a broken objective
_FAIL_FAST_AFTER = 5


class SearchFailedError(RuntimeError):
    """The run's first evaluations all failed: an objective is broken (wrong data, a predictor of another space),
    so the search stops instead of spending its budget; the failed evaluations stay in the store."""


def _constraint_value(constraint: Constraint, cfg: Config) -> float:
    """The value of a constraint's own ``fn``; a non-number or a non-finite one fails the evaluation.

    Stores keep no infinities (SQL has none): an infinite value would read back as NaN and the evaluation as
    infeasible even where it meets a ``>=`` bound, so it counts as failed, as an objective's would.
    """
    value = constraint.fn(cfg)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"constraint on {constraint.metric!r}: its fn returned {value!r}; it must return a number"
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"constraint on {constraint.metric!r}: its fn returned {value} for config {cfg.to_json()}"
        )
    return value


def evaluate_config(
    cfg: Config,
    objectives: Sequence[Objective],
    constraints: Sequence[Constraint] = (),
    worker: str = "local",
) -> dict[str, Any]:
    """Evaluate every objective (and constrained metric) of ``cfg``; returns a store record.

    An exception in an objective makes the record ``status="failed"`` with the error text, ``nan`` values and an
    infinite violation; it does not propagate, so one bad subnet cannot stop a search.

    With several hardware targets, an exception in one target's objective (``latency@edgetpu`` of a cell the
    device's profile never measured) costs only that target: the record is ``status="partial"``, keeps every
    other value, and counts on the fronts of the targets it has values for. The searcher is told a partial
    record as failed unless it learns from partial results (LINAS: each objective's model also fits the partial
    records that have its value; :attr:`nas.search.searchers.base.Searcher.learns_from_partial`), and a constraint on a missing value makes the record
    infeasible everywhere (the bound cannot be checked). When every target fails, or a shared objective does
    (accuracy), the record is ``"failed"``.
    """
    t0 = time.perf_counter()
    values: dict[str, float] = {}
    status, error = "ok", None
    targets = {o.target for o in objectives if o.target is not None}
    target_errors: dict[str, list[str]] = {}
    try:
        for o in objectives:
            try:
                values[o.name] = o(cfg)
            except Exception as exc:
                if o.target is None or len(targets) < 2:
                    raise
                target_errors.setdefault(o.target, []).append(f"{o.name}: {type(exc).__name__}: {exc}")
        for c in constraints:
            if c.fn is not None:
                values[c.metric] = _constraint_value(c, cfg)
        if target_errors:
            text = "; ".join(e for errs in target_errors.values() for e in errs)
            status, error = ("failed" if set(target_errors) == targets else "partial"), text
            # Info, not a warning, when partial: a profile that lacks some configs (HW-NAS-Bench's edgetpu) would
            # print a line for a third of the evaluations; the CLI counts them per target, the store keeps each error.
            log.log(
                logging.WARNING if status == "failed" else logging.INFO,
                "evaluation of %s failed on target(s) %s: %s",
                cfg.to_json(),
                sorted(target_errors),
                text,
            )
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        log.warning("evaluation of %s failed: %s", cfg.to_json(), error)
    for name in [o.name for o in objectives] + [c.metric for c in constraints if c.fn is not None]:
        values.setdefault(name, math.nan)
    usable = status in USABLE_STATUSES
    violation = sum(c.violation(values[c.metric]) for c in constraints) if usable else math.inf
    return {
        "key": cfg.key,
        "config": cfg.to_json(),
        "values": values,
        "violation": float(violation),
        "status": status,
        "error": error,
        "wall_time_s": time.perf_counter() - t0,
        "finished_at": time.time(),
        "worker": worker,
    }


def space_fingerprint(space: SearchSpace) -> str:
    """Short hash of the space's dimensions and values (a resumed run must search the same space)."""
    text = json.dumps([[d.name, list(d.values), sorted(d.when.items())] for d in space.dims], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Engine:
    """Budget, cache, store and searcher bookkeeping shared by the local and Ray backends."""

    def __init__(
        self,
        space: SearchSpace,
        objectives: Sequence[Objective],
        constraints: Sequence[Constraint],
        searcher: Searcher,
        store: Store,
        budget: int,
        batch_size: int,
        progress: Any = None,
    ):
        self.space = space
        self.objectives = list(objectives)
        self.constraints = list(constraints)
        self.searcher = searcher
        self.store = store
        self.budget = budget
        self.batch_size = batch_size
        self.progress = progress
        self.cache: dict[str, dict[str, Any]] = {}
        self.pending: dict[str, Config] = {}  # proposed or running, result not back yet
        self.owed: collections.Counter[str] = collections.Counter()  # extra asks of a pending key
        self.n_done = 0
        self.n_failed_streak = 0
        self.n_ok = 0
        self.exhausted = False
        self.space_size = space.size
        self.rng = np.random.default_rng(searcher.seed + 7919)

    # ------------------------------------------------------------------------------------------ values
    def _minimisation_row(self, record: dict[str, Any]) -> np.ndarray:
        if record["status"] not in USABLE_STATUSES:
            return np.full(len(self.objectives), np.nan)
        # a partial record's missing values are nan (stored as null): the searcher decides what it learns
        values = [record["values"].get(o.name) for o in self.objectives]
        return np.array(
            [math.nan if v is None else o.sign * v for o, v in zip(self.objectives, values, strict=True)]
        )

    def _tell(self, configs: list[Config], records: list[dict[str, Any]]) -> None:
        if not configs:
            return
        F = np.vstack([self._minimisation_row(r) for r in records])
        V = np.array([r["violation"] for r in records], dtype=np.float64)
        self.searcher.tell(configs, F, V)

    def replay(self, records: Sequence[dict[str, Any]]) -> None:
        """Load stored evaluations (a resumed run) into the cache and the searcher."""
        configs = []
        for r in records:
            cfg = self.space.canonical(Config.from_json(r["config"]))
            self.cache[cfg.key] = r
            configs.append(cfg)
            self.n_ok += r["status"] == "ok"
        self.n_done = len(records)
        self._tell(configs, list(records))
        if self.progress is not None:
            self.progress.advance(self.n_done)

    # ------------------------------------------------------------------------------------------ proposing
    @property
    def remaining(self) -> int:
        """Evaluations still to start: budget minus finished minus pending."""
        return self.budget - self.n_done - len(self.pending)

    def propose(self, n: int) -> list[Config]:
        """Up to ``n`` configs never evaluated and not pending, marked pending; [] means wait (or exhausted)."""
        if len(self.cache) + len(self.pending) >= self.space_size:
            # Every config of the space is evaluated or running: nothing is left to propose. Asking the searcher
            # would only spin (pymoo tries generation after generation of duplicates: seconds on a tiny space).
            self.exhausted = True
            return []
        out: list[Config] = []
        stalled = 0
        while len(out) < n and stalled < _MAX_STALLED_ASKS:
            asked = self.searcher.ask(n - len(out))
            new_here = 0
            cached_cfgs, cached_recs = [], []
            for raw in asked:
                cfg = self.space.canonical(raw)  # searchers may return non-canonical or plain mappings
                if cfg.key in self.cache:
                    cached_cfgs.append(cfg)
                    cached_recs.append(self.cache[cfg.key])
                elif cfg.key in self.pending:
                    self.owed[cfg.key] += 1  # told when the pending result arrives
                elif len(out) < n:
                    self.pending[cfg.key] = cfg
                    out.append(cfg)
                    new_here += 1
            self._tell(cached_cfgs, cached_recs)
            if new_here == 0:
                if not asked and self.pending:
                    break  # the searcher waits for results still out
                stalled += 1
        if not out and not self.pending:
            # The searcher has nothing new to offer (converged, or asks only known configs): explore randomly,
            # so the budget is still spent exactly.
            out = self._random_unseen(n)
            for cfg in out:
                self.pending[cfg.key] = cfg
            if not out:
                self.exhausted = True
        return out

    def _random_unseen(self, n: int) -> list[Config]:
        out: dict[str, Config] = {}
        for _ in range(200 * max(n, 1)):
            if len(out) >= n:
                break
            c = self.space.sample(self.rng)
            if c.key not in self.cache and c.key not in self.pending:
                out.setdefault(c.key, c)
        if len(out) < n and self.space_size <= 1_000_000:
            for c in self.space.all_configs():  # small space nearly exhausted: enumerate
                if len(out) >= n:
                    break
                if c.key not in self.cache and c.key not in self.pending:
                    out.setdefault(c.key, c)
        return list(out.values())

    # ------------------------------------------------------------------------------------------ results
    def complete(self, cfg: Config, record: dict[str, Any]) -> None:
        """Store one finished evaluation, cache it and tell the searcher (as often as it asked for it)."""
        record = dict(record, key=cfg.key, config=cfg.to_json())
        self.store.add(record)
        self.cache[cfg.key] = record
        self.pending.pop(cfg.key, None)
        self.n_done += 1
        times = 1 + self.owed.pop(cfg.key, 0)
        self._tell([cfg] * times, [record] * times)
        if record["status"] == "ok":
            self.n_ok += 1
            self.n_failed_streak = 0
        else:  # "partial" too: a target whose objective always fails is as broken as a shared one
            self.n_failed_streak += 1
            if self.n_ok == 0 and self.n_failed_streak >= _FAIL_FAST_AFTER:
                raise SearchFailedError(
                    f"the first {self.n_failed_streak} evaluations all failed (on every target or on some); "
                    f"last error: {record['error']}"
                )
        if self.progress is not None:
            self.progress.advance(1)

    def release(self, cfg: Config) -> None:
        """Forget a pending config that will not be evaluated (a cancelled trial)."""
        self.pending.pop(cfg.key, None)


class _Progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int, description: str):
        self._bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
            )
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, n: int) -> None:
        if self._bar is not None and n:
            self._bar.advance(self._task, n)


def _run_local(engine: Engine, max_concurrent: int) -> None:
    queue: collections.deque[Config] = collections.deque()
    running: dict[cf.Future, Config] = {}

    def submit(pool: cf.Executor | None, cfg: Config) -> None:
        if pool is None:  # one at a time: evaluate inline, no thread hop
            fut: cf.Future = cf.Future()
            fut.set_result(evaluate_config(cfg, engine.objectives, engine.constraints))
        else:
            fut = pool.submit(evaluate_config, cfg, engine.objectives, engine.constraints, "local-thread")
        running[fut] = cfg

    pool = (
        cf.ThreadPoolExecutor(max_concurrent, thread_name_prefix="nas-eval") if max_concurrent > 1 else None
    )
    try:
        while True:
            while len(running) < max_concurrent:
                if not queue:
                    want = min(engine.batch_size, engine.remaining)
                    if want <= 0:
                        break
                    queue.extend(engine.propose(want))
                    if not queue:
                        break
                submit(pool, queue.popleft())
            if not running:
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                engine.complete(running.pop(fut), fut.result())
    finally:
        for cfg in queue:
            engine.release(cfg)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def run(
    space: SearchSpace,
    objectives: Sequence[Objective],
    algorithm: str | Searcher = "linas",
    budget: int = 250,
    seed: int = 0,
    backend: str = "local",
    ray_address: str | None = None,
    max_concurrent: int = 1,
    store: str | Store | None = None,
    resume: bool = False,
    constraints: Sequence[Constraint] = (),
    batch_size: int | None = None,
    progress: bool = True,
    searcher_options: dict[str, Any] | None = None,
    ray_options: dict[str, Any] | None = None,
) -> SearchResult:
    """Search ``space`` for the Pareto-optimal configs of ``objectives`` with ``budget`` real evaluations.

    Args:
        space: the search space.
        objectives: :class:`~nas.search.Objective` list; ``name@target`` objectives give one front per target.
        algorithm: a registered searcher name (``nas.search.searchers.available()``) or a :class:`Searcher`.
        budget: exact number of real evaluations (the run ends earlier only if the space is exhausted).
        seed: seed of the searcher.
        backend: ``"local"`` (this process, ``max_concurrent`` threads) or ``"ray"`` (Ray Tune).
        ray_address: Ray cluster address (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local Ray
            (or uses the cluster at ``$RAY_ADDRESS``).
        max_concurrent: evaluations running at once.
        store: ``sqlite:///path.db``, ``postgresql://...``, a path, a Store, or ``None`` (in memory).
        resume: continue the run held in ``store`` (its settings must match) to exactly ``budget``; a larger
            budget than the stored run's extends it.
        constraints: :class:`~nas.search.Constraint` list; infeasible results are stored but not on fronts.
        batch_size: configs per ask (default: the searcher's own, e.g. 10 for linas).
        progress: show a rich progress bar.
        searcher_options: keyword arguments for the searcher class (e.g. ``{"pop_size": 32}``).
        ray_options: Ray backend options (see :func:`nas.search.ray_backend.run_ray`).

    Returns:
        a :class:`~nas.search.SearchResult` with the whole run (earlier sessions of a resumed run included).
    """
    objectives = list(objectives)
    constraints = list(constraints)
    check_objectives(objectives, constraints)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a nas.SearchSpace, got {type(space).__name__}")
    if int(budget) != budget or budget < 1:
        raise ValueError(f"budget must be a positive integer, got {budget!r}")
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")

    if isinstance(algorithm, Searcher):
        searcher, algo_name = algorithm, type(algorithm).name or type(algorithm).__name__
        if searcher_options:
            raise ValueError("searcher_options apply to an algorithm name, not to a Searcher instance")
    else:
        algo_name = str(algorithm)
        searcher_class = get(algo_name)
        _check_searcher_options(searcher_class, algo_name, searcher_options or {})
        searcher = searcher_class(seed=seed, **(searcher_options or {}))
    searcher.setup(
        Problem(
            space=space,
            objective_names=tuple(o.name for o in objectives),
            n_constraints=len(constraints),
            cheap={i: _minimised(o) for i, o in enumerate(objectives) if not o.expensive},
            graph_invariant=frozenset(i for i, o in enumerate(objectives) if o.graph_invariant),
        )
    )
    batch = int(batch_size or searcher.default_batch_size)
    if batch < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    st = open_store(store)
    try:
        meta = {
            "space": space.name,
            "space_fingerprint": space_fingerprint(space),
            "objectives": [o.describe() for o in objectives],
            "constraints": [c.describe() for c in constraints],
            "algorithm": algo_name,
            "searcher_options": searcher_options or {},
            "seed": int(seed),
            "budget": int(budget),
        }
        st.check_meta(meta, resume)
        records = st.records() if resume else []

        desc = f"{algo_name} on {space.name}"
        with _Progress(progress, int(budget), desc) as bar:
            engine = Engine(space, objectives, constraints, searcher, st, int(budget), batch, bar)
            engine.replay(records)
            if engine.remaining > 0:
                if backend == "local":
                    _run_local(engine, int(max_concurrent))
                else:
                    from nas.search.ray_backend import run_ray

                    run_ray(engine, int(max_concurrent), ray_address, **(ray_options or {}))
        if engine.exhausted and engine.n_done < budget:
            log.warning(
                "space %s exhausted after %d configs: every config has been evaluated (budget %d)",
                space.name,
                engine.n_done,
                budget,
            )
        extra = [c.metric for c in constraints if c.fn is not None]
        return SearchResult.from_records(
            st.records(), [(o.name, o.direction) for o in objectives], extra, st.read_meta(), st.url
        )
    finally:
        if not isinstance(store, Store):  # opened here from a URL: close it (a Store passed in stays open)
            st.close()


def _check_searcher_options(cls: type, name: str, options: dict[str, Any]) -> None:
    """A clear error for an option the searcher class does not take (instead of a bare ``TypeError``)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if n not in ("self", "seed") and p.kind is not p.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"searcher {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(accepted) or 'none'}"
        )


def _minimised(objective: Objective) -> Callable[[Config], float]:
    sign = objective.sign
    return lambda cfg: sign * objective(cfg)
