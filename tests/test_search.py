"""nas.search on the local backend: searchers, budget, deduplication, constraints, targets, store, resume."""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.pareto import hypervolume, nondominated_mask
from nas.report import write_report
from nas.search import (
    Constraint,
    LazyFunction,
    Objective,
    SearchResult,
    StoreMismatchError,
    evaluate_config,
    latency,
    open_store,
    run,
    searchers,
)
from nas.search.searchers.base import Problem, Searcher
from nas.search.searchers.linas import hypervolume_gain
from nas.space import Choice, Config, SearchSpace

REPO = Path(__file__).resolve().parents[1]

# A toy space with a known, non-trivial front: "quality" grows with width and depth, "cost" grows faster.
SPACE = SearchSpace(
    "toy",
    [
        Choice("w", (1, 2, 3, 4, 5)),
        Choice("d", (1, 2, 3, 4)),
        Choice("k", (3, 5, 7)),
        Choice("act", ("relu", "gelu")),
    ],
)


def quality(c: Config) -> float:
    return float(np.log(c["w"] * c["d"]) + 0.1 * (c["k"] == 5) + 0.05 * (c["act"] == "gelu"))


def cost(c: Config, target: str = "a") -> float:
    scale = 1.0 if target == "a" else 0.5
    return float(c["w"] * c["d"] * scale + 0.2 * c["k"] + 0.1 * (c["act"] == "gelu") * (target == "a"))


def objectives(calls: list | None = None) -> list[Objective]:
    def q(c: Config) -> float:
        if calls is not None:
            calls.append(c.key)
        return quality(c)

    return [Objective("quality", q, "max"), Objective("cost@a", cost, "min")]


def true_front_hv(ref: np.ndarray) -> float:
    F = np.array([[-quality(c), cost(c)] for c in SPACE.all_configs()])
    return hypervolume(F, ref)


REF = np.array([0.0, 25.0])  # minimisation form: quality >= 0, cost <= 25


def found_hv(result: SearchResult) -> float:
    return result.hypervolume({"quality": -REF[0], "cost@a": REF[1]})


# ----------------------------------------------------------------------------------------- searchers
@pytest.mark.parametrize("algorithm", ["random", "nsga2", "nsga3", "tpe", "gp", "linas"])
def test_every_searcher_spends_the_budget_exactly_without_duplicates(algorithm):
    calls: list[str] = []
    budget = 40 if algorithm != "gp" else 13
    result = run(SPACE, objectives(calls), algorithm=algorithm, budget=budget, seed=1, progress=False)
    assert len(result.history) == budget
    assert len(calls) == budget  # the objective ran exactly budget times ...
    assert len(set(calls)) == budget  # ... never twice for one config
    assert result.history["key"].is_unique
    assert result.history["order"].tolist() == list(range(budget))
    assert 0 < found_hv(result) <= true_front_hv(REF) + 1e-9


def test_registry_finds_classes_and_names_alternatives():
    assert set(searchers.available()) >= {"random", "nsga2", "agemoea", "nsga3", "tpe", "gp", "linas"}
    assert searchers.get("linas").name == "linas"
    with pytest.raises(ValueError, match=r"available: .*nsga2"):
        searchers.get("nsga4")


def test_agemoea_runs_or_says_what_to_install():
    try:
        import numba  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="numba"):
            run(SPACE, objectives(), algorithm="agemoea", budget=5, progress=False)
    else:
        assert len(run(SPACE, objectives(), algorithm="agemoea", budget=25, progress=False).history) == 25


def test_linas_finds_most_of_a_toy_front():
    ref = REF
    rand = [found_hv(run(SPACE, objectives(), "random", budget=30, seed=s, progress=False)) for s in range(3)]
    lin = [found_hv(run(SPACE, objectives(), "linas", budget=30, seed=s, progress=False)) for s in range(3)]
    true = true_front_hv(ref)
    assert np.median(lin) / true > 0.97
    assert np.median(lin) > np.median(rand)


@pytest.mark.parametrize(
    "options",
    [
        {"predictor": ["sklearn-gbdt", "sklearn-ridge-gbdt"], "target_transform": "log"},
        {"late_batch": 4, "late_after": 20, "n_bags": 4, "bag_mean": True, "loss": "huber"},
        # the sampled pool (inner NSGA-II, mutations, neighbours, random) that large spaces use
        {"exhaustive": 0, "explore": 0.5},
        {"explore": 0.0},
    ],
)
def test_linas_options_keep_the_budget_and_find_the_front(options):
    calls: list[str] = []
    result = run(
        SPACE, objectives(calls), "linas", budget=30, seed=0, progress=False, searcher_options=options
    )
    assert len(calls) == 30 and len(set(calls)) == 30
    assert found_hv(result) / true_front_hv(REF) > 0.9


def test_linas_late_batch_proposes_few_configs_and_waits_for_them():
    s = searchers.get("linas")(seed=0, late_batch=3, late_after=15)
    s.setup(Problem(SPACE, ("quality", "cost@a")))

    def tell(configs: list[Config]) -> None:
        s.tell(configs, np.array([[-quality(c), cost(c)] for c in configs]), np.zeros(len(configs)))

    tell(SPACE.samples(12, seed=3, unique=True))
    early = s.ask(10)
    assert len(early) == 10  # fewer than late_after measured: a full batch
    tell(early)
    late = s.ask(10)
    assert 1 <= len(late) <= 3
    assert s.ask(10) == []  # its configs are still pending: wait for them
    tell(late)
    assert 1 <= len(s.ask(10)) <= 3


@pytest.mark.parametrize("batch", [2, 3, 10])
def test_linas_initial_design_uses_every_value_whatever_the_batch_size(batch):
    # Planned per batch, a design of 3 configs would use only 3 of the 5 widths (a past bug: on NAS-Bench-201
    # no initial cell had a 3x3 conv and the search never recovered).
    s = searchers.get("linas")(seed=1, n_initial=10)
    s.setup(Problem(SPACE, ("quality", "cost@a")))
    design: list[Config] = []
    while len(design) < 10:
        asked = list(s.ask(min(batch, 10 - len(design))))
        s.tell(asked, np.array([[-quality(c), cost(c)] for c in asked]), np.zeros(len(asked)))
        design += asked
    for dim in SPACE.dims:
        counts = [sum(c[dim.name] == v for c in design) for v in dim.values]
        assert min(counts) >= 10 // len(dim.values) and max(counts) <= -(-10 // len(dim.values)), (
            dim.name,
            counts,
        )


def test_linas_ridge_gbdt_learns_an_additive_cost_and_log_target_stays_positive():
    from nas.search.searchers.linas import _LogTarget, fit_predictor

    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 3.0, 12)
    X, Xt = rng.integers(0, 2, (60, 12)).astype(float), rng.integers(0, 2, (300, 12)).astype(float)
    y, yt = 1.0 + X @ w, 1.0 + Xt @ w  # a sum of per-op costs
    err = {}
    for kind in ("sklearn-gbdt", "sklearn-ridge-gbdt"):
        model = fit_predictor(X, y, kind, seed=0)
        err[kind] = np.mean(np.abs(model.predict(Xt) - yt))
        assert model.predict_std(Xt).shape == (300,) and (model.predict_std(Xt) >= 0).all()
    assert err["sklearn-ridge-gbdt"] < 0.5 * err["sklearn-gbdt"]
    logged = _LogTarget(fit_predictor(X, np.log(y), "sklearn-ridge-gbdt", seed=0))
    assert (logged.predict(Xt) > 0).all()
    assert np.mean(np.abs(logged.predict(Xt) - yt) / yt) < 0.1


def test_hypervolume_gain_matches_difference_of_hypervolumes():
    rng = np.random.default_rng(0)
    for m, n_front in [(1, 3), (2, 8), (3, 12), (3, 0), (4, 10)]:
        front = rng.random((n_front, m))
        pts = rng.random((40, m)) * 1.2  # some beyond the reference point
        pts[:3] = front[:3] if n_front >= 3 else pts[:3]  # points on the front add nothing
        ref = np.full(m, 1.1)
        base = hypervolume(front, ref) if n_front else 0.0
        expected = [hypervolume(np.vstack([front, p]), ref) - base for p in pts]
        np.testing.assert_allclose(hypervolume_gain(front, pts, ref), expected, atol=1e-12)


class _Stubborn(Searcher):
    """Always proposes the same config: the runner must still spend the budget on distinct configs."""

    name = ""  # not registered

    def _ask(self, n):
        return [SPACE.min()] * n


def test_runner_fills_with_random_configs_when_the_searcher_repeats_itself():
    calls: list[str] = []
    run(SPACE, objectives(calls), algorithm=_Stubborn(), budget=12, progress=False)
    assert len(calls) == 12 and len(set(calls)) == 12
    assert SPACE.min().key in set(calls)


def test_small_space_is_exhausted_not_overrun():
    tiny = SearchSpace("tiny", [Choice("w", (1, 2, 3))])
    objs = [Objective("w", lambda c: c["w"], "max"), Objective("c", lambda c: c["w"] ** 2, "min")]
    result = run(tiny, objs, algorithm="nsga2", budget=10, progress=False)
    assert sorted(result.history["key"]) == sorted(c.key for c in tiny.all_configs())


@pytest.mark.parametrize("algorithm", ["nsga2", "random"])
def test_a_searcher_is_not_asked_once_every_config_is_evaluated(algorithm, caplog):
    """A budget beyond a finite space's size ends the run at its size, without asking the searcher for the
    configs that cannot exist (NSGA-II spun for ~10 s through generations of duplicates)."""
    tiny = SearchSpace("tiny", [Choice("w", (1, 2, 3))])
    objs = [Objective("w", lambda c: c["w"], "max"), Objective("c", lambda c: c["w"] ** 2, "min")]
    searcher = searchers.get(algorithm)(seed=0)
    known_at_ask: list[int] = []
    ask = searcher.ask
    searcher.ask = lambda n: known_at_ask.append(len(searcher.known)) or ask(n)
    with caplog.at_level("WARNING", logger="nas.search.runner"):
        result = run(tiny, objs, algorithm=searcher, budget=8, progress=False)
    assert len(result.history) == 3 and result.history["key"].is_unique
    assert known_at_ask and max(known_at_ask) < 3  # never asked once all three were known
    assert "space tiny exhausted after 3 configs" in caplog.text


class _Spy(Searcher):
    """Proposes each new config twice in one ask, plus the previous one again, and records what it is told."""

    name = ""  # not registered

    def __init__(self, seed=0):
        super().__init__(seed)
        self.told: list[tuple[str, tuple[float, ...], float]] = []
        self._asked: list[Config] = []

    def _ask(self, n):
        i = len(self._asked)
        cfg = SPACE.canonical({"w": i % 5 + 1, "d": i % 4 + 1, "k": 3, "act": "relu"})
        # the copy is pending when asked (the runner owes it a tell); the previous config is answered from cache
        out = [cfg, cfg, *self._asked[-1:]]
        self._asked.append(cfg)
        return out

    def _tell(self, configs, F, V):
        self.told += [(c.key, tuple(f), float(v)) for c, f, v in zip(configs, F, V)]


def test_searchers_are_told_minimisation_form_values_and_violations():
    """A maximised objective arrives negated, a minimised one as is, whatever the path (a fresh result, a
    pending duplicate, a cached one); the violation is how far the bound is missed."""
    spy = _Spy()
    result = run(
        SPACE, objectives(), spy, budget=8, constraints=[Constraint("cost@a", ">=", 5.0)], progress=False
    )
    rows = result.history.set_index("key")
    assert len(spy.told) == 8 * 2 + 7  # every config told once per copy asked, 7 of them once more from cache
    for key, f, v in spy.told:
        assert f == (-rows.loc[key, "quality"], rows.loc[key, "cost@a"])
        assert v == max(0.0, 5.0 - rows.loc[key, "cost@a"])
    assert any(v > 0 for *_, v in spy.told) and any(v == 0 for *_, v in spy.told)


@pytest.mark.parametrize("algorithm", ["random", "nsga2", "tpe", "linas"])
def test_the_same_seed_gives_the_same_history(algorithm):
    def once():
        c = [Constraint("cost@a", "<=", 8.0)]
        return run(SPACE, objectives(), algorithm, budget=24, seed=7, constraints=c, progress=False).history

    first, second = once(), once()
    columns = ["order", "key", "quality", "cost@a", "violation", "feasible"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


# A toy space with one known optimum, reached by setting each dimension independently: 3, 1, 4 for quality and
# 0, 2, 2 for cost (squared distances, so both are 0 there).
SEPARABLE = SearchSpace("separable", [Choice(f"x{i}", (0, 1, 2, 3, 4)) for i in range(6)])
_OPTIMUM = (3, 1, 4, 0, 2, 2)


def _squared_distance(c: Config, dims: range) -> float:
    return float(sum((c[f"x{i}"] - _OPTIMUM[i]) ** 2 for i in dims))


@pytest.mark.parametrize(("algorithm", "budget", "factor"), [("nsga2", 120, 0.4), ("tpe", 60, 0.8)])
def test_searchers_move_towards_a_known_optimum(algorithm, budget, factor):
    """Weak but real check that a maximised objective is maximised and a minimised one minimised: the last
    evaluations lie much closer to the optimum than the first (random) ones; told the wrong way round, a
    searcher would move away from it (random search, 120 evaluations: 21.1 -> 21.0 on average over 4 seeds)."""
    objs = [
        Objective("quality", lambda c: -_squared_distance(c, range(3)), "max"),
        Objective("cost", lambda c: _squared_distance(c, range(3, 6)), "min"),
    ]
    h = run(SEPARABLE, objs, algorithm, budget=budget, seed=0, progress=False).history
    distance = (h["cost"] - h["quality"]).to_numpy()  # squared distance to the optimum
    assert distance[-20:].mean() < factor * distance[:20].mean()


def test_searcher_learns_from_configs_it_did_not_ask_for():
    for name in ("random", "nsga2", "tpe", "linas"):
        s = searchers.get(name)(seed=0)
        s.setup(Problem(SPACE, ("quality", "cost@a")))
        told = SPACE.samples(12, seed=3, unique=True)
        F = np.array([[-quality(c), cost(c)] for c in told])
        s.tell(told, F, np.zeros(len(told)))
        asked = s.ask(4)
        assert asked and all(c in SPACE.all_configs() or SPACE.canonical(c) == c for c in asked)


# ----------------------------------------------------------------------------------------- constraints, targets
def test_constraints_keep_infeasible_rows_off_the_front():
    result = run(
        SPACE,
        objectives(),
        algorithm="nsga2",
        budget=30,
        seed=0,
        constraints=[Constraint("cost@a", "<=", 6.0)],
        progress=False,
    )
    h = result.history
    assert (h["feasible"] == (h["cost@a"] <= 6.0)).all()
    assert (~h["feasible"]).any() and h["feasible"].any()
    front = result.pareto()
    assert (front["cost@a"] <= 6.0).all() and front["feasible"].all()


def test_constraint_on_a_metric_that_is_not_an_objective():
    c = Constraint("width", "<=", 3, fn=lambda cfg: cfg["w"])
    result = run(SPACE, objectives(), algorithm="random", budget=20, constraints=[c], progress=False)
    assert (result.history["feasible"] == (result.history["width"] <= 3)).all()
    with pytest.raises(ValueError, match="names no objective"):
        run(SPACE, objectives(), budget=2, constraints=[Constraint("width", "<=", 3)], progress=False)


def test_several_targets_share_accuracy_and_give_one_front_each():
    calls: list[str] = []
    objs = [*objectives(calls), Objective("cost@b", lambda c: cost(c, "b"), "min")]
    result = run(SPACE, objs, algorithm="nsga2", budget=30, seed=2, progress=False)
    assert len(calls) == 30  # one accuracy evaluation per config, whatever the number of targets
    assert result.targets == ["a", "b"]
    for target in ("a", "b"):
        front = result.pareto(target=target)
        F = np.column_stack([-result.history["quality"], result.history[f"cost@{target}"]])
        expected = set(result.history["key"][nondominated_mask(F)])
        assert set(front["key"]) == expected
    with pytest.raises(ValueError, match="several targets"):
        result.pareto()
    with pytest.raises(ValueError, match="unknown target"):
        result.pareto(target="c")


def test_a_misspelt_front_objective_is_named_not_a_key_error():
    result = run(SPACE, objectives(), algorithm="random", budget=6, progress=False)
    with pytest.raises(ValueError, match=r"unknown objective\(s\) \['cost@A'\]; objectives are"):
        result.pareto(objectives=["quality", "cost@A"])
    with pytest.raises(ValueError, match=r"unknown objective\(s\) \['cost'\]"):
        result.hypervolume({"quality": 0.0, "cost": 10.0}, objectives=["quality", "cost"])
    # One name is one objective, not its letters.
    assert set(result.pareto(objectives="quality")["quality"]) == {result.history["quality"].max()}


# ----------------------------------------------------------------------------------------- objectives
def test_objective_and_constraint_validation():
    with pytest.raises(ValueError, match="direction"):
        Objective("x", len, "maximise")
    with pytest.raises(ValueError, match="operator"):
        Constraint("x", "<", 1)
    with pytest.raises(ValueError, match="used twice"):
        run(SPACE, [Objective("q", quality), Objective("q", quality)], budget=1, progress=False)
    assert Constraint("x", ">=", 2).violation(1.5) == 0.5
    lat = latency("cpu", lambda c: 1.0)
    assert (lat.name, lat.target, lat.expensive) == ("latency@cpu", "cpu", False)
    with pytest.raises(ValueError, match="exactly one"):
        latency("cpu")


def test_latency_refuses_a_predictor_fitted_on_another_space():
    import predictors

    X = np.vstack([SPACE.features(c) for c in SPACE.samples(20, seed=0)])
    pred = predictors.fit(X, X.sum(1) + 1.0, kind="ridge", space=SPACE, feature_names=SPACE.feature_names)
    assert latency("cpu", pred, space=SPACE)(SPACE.max()) > 0
    other = SPACE.renamed("other")  # as many features: predict(X) alone would not notice
    with pytest.raises(ValueError, match=r"latency\('cpu'\): this predictor was fitted on features of space"):
        latency("cpu", pred, space=other)


def test_failed_evaluations_are_stored_and_a_broken_objective_fails_fast():
    def flaky(c):
        if c["w"] == 5:
            raise RuntimeError("out of memory")
        return quality(c)

    objs = [Objective("quality", flaky, "max"), Objective("cost@a", cost)]
    result = run(SPACE, objs, algorithm="nsga2", budget=30, seed=0, progress=False)
    failed = result.history[result.history["status"] == "failed"]
    assert len(result.history) == 30 and len(failed) > 0
    assert failed["error"].str.contains("out of memory").all()
    assert not result.pareto()["key"].isin(failed["key"]).any()

    def broken(c):
        raise KeyError("labels")

    with pytest.raises(RuntimeError, match=r"all failed.*labels"):
        run(SPACE, [Objective("q", broken)], budget=20, progress=False)


def _cost_b_unmeasured_for_w3(c: Config) -> float:
    """Target b's latency table has no entry for w == 3 (as HW-NAS-Bench's edgetpu lacks 4,699 NB201 cells)."""
    if c["w"] == 3:
        raise KeyError(f"{c.to_json()} not in profile b")
    return cost(c, "b")


def test_a_target_that_fails_costs_only_its_own_front(tmp_path):
    """A config one target could not price stays on the other targets' fronts ("partial"), instead of being
    dropped from every front as a failed evaluation."""
    calls: list[str] = []
    objs = [*objectives(calls), Objective("cost@b", _cost_b_unmeasured_for_w3, "min")]
    url = f"sqlite:///{tmp_path / 'run.db'}"
    result = run(SPACE, objs, algorithm="nsga2", budget=40, seed=1, store=url, progress=False)
    h = result.history
    w3 = h["config"].map(lambda t: json.loads(t)["w"] == 3)
    assert w3.any() and (~w3).any()
    assert (h["status"] == np.where(w3, "partial", "ok")).all()
    assert h.loc[w3, "error"].str.contains(r"cost@b: KeyError: .*not in profile b").all()
    assert h.loc[w3, "cost@b"].isna().all() and h.loc[w3, ["quality", "cost@a"]].notna().all().all()
    assert h["feasible"].all()
    # Target a's front is the front of every evaluation; target b's of those b could price.
    for target, rows in (("a", h), ("b", h[~w3])):
        F = np.column_stack([-rows["quality"], rows[f"cost@{target}"]])
        assert set(result.pareto(target=target)["key"]) == set(rows["key"][nondominated_mask(F)])
    # w == 3 is on a's true front (quality 3 at cost 3.6 or 4.6), so a's front keeps some partial rows.
    assert result.pareto(target="a")["key"].isin(h.loc[w3, "key"]).any()
    assert "partial" in repr(result)
    assert (result.lacking(target="a"), result.lacking(target="b")) == (0, int(w3.sum()))
    write_report(result, tmp_path / "report")
    fronts = json.loads((tmp_path / "report" / "summary.json").read_text())["fronts"]
    assert (fronts["a"]["lacking"], fronts["b"]["lacking"]) == (0, int(w3.sum()))
    assert fronts["a"]["front_keys"] == result.pareto(target="a")["key"].tolist()
    assert (
        f"{int(w3.sum())} evaluations have no value for this target"
        in (tmp_path / "report/index.html").read_text()
    )
    loaded = SearchResult.load(url)
    assert loaded.history["status"].tolist() == h["status"].tolist()
    assert set(loaded.pareto(target="a")["key"]) == set(result.pareto(target="a")["key"])


def test_partial_records_are_failed_for_the_searcher_and_for_constraints_on_missing_values():
    searcher = searchers.get("random")(seed=3)
    objs = [*objectives(), Objective("cost@b", _cost_b_unmeasured_for_w3, "min")]
    result = run(SPACE, objs, algorithm=searcher, budget=25, progress=False)
    partial = set(result.history.loc[result.history["status"] == "partial", "key"])
    # a searcher that ranks whole objective vectors holds a partial result as a failure: every value nan
    all_nan = {c.key for c, f in zip(searcher.configs, searcher.values, strict=True) if np.isnan(f).all()}
    assert partial and all_nan == partial
    # A bound on b's latency cannot be checked where b has none: infeasible on every front.
    bounded = run(
        SPACE,
        objs,
        algorithm="random",
        budget=25,
        seed=3,
        constraints=[Constraint("cost@b", "<=", 100.0)],
        progress=False,
    )
    h = bounded.history
    assert (h["feasible"] == (h["status"] == "ok")).all()
    assert not bounded.pareto(target="a")["key"].isin(h.loc[h["status"] == "partial", "key"]).any()


def test_linas_models_learn_each_objective_from_partial_results_too():
    """LINAS fits one model per objective: a partial result's measured values (quality, cost@a) teach those
    models, while fronts and the failure model still count it as failed."""
    searcher = searchers.get("linas")(seed=0, n_initial=6)
    fitted: dict[int, list[int]] = {}
    fit = searcher._fit

    def recording_fit(X, bags, y, seed, j):
        fitted.setdefault(j, []).append(len(y))
        return fit(X, bags, y, seed, j)

    searcher._fit = recording_fit
    objs = [*objectives(), Objective("cost@b", _cost_b_unmeasured_for_w3, "min")]
    h = run(SPACE, objs, algorithm=searcher, budget=20, batch_size=4, progress=False).history
    assert (h["status"] == "partial").any() and fitted
    rows = np.asarray(searcher.values)
    ok = np.isfinite(rows).all(axis=1)
    assert (~ok & np.isfinite(rows[:, 0])).any()  # partial rows kept their measured values
    # the last fit of quality and cost@a saw more results than cost@b's, which partial results lack
    assert fitted[0][-1] == fitted[1][-1] > fitted[2][-1]


def test_every_target_or_the_shared_objective_failing_is_a_failed_evaluation():
    def cost_a_unmeasured_for_w3(c: Config) -> float:
        if c["w"] == 3:
            raise KeyError("not in a's profile")
        return cost(c)

    objs = [
        Objective("quality", quality, "max"),
        Objective("cost@a", cost_a_unmeasured_for_w3, "min"),
        Objective("cost@b", _cost_b_unmeasured_for_w3, "min"),
    ]
    h = run(SPACE, objs, algorithm="random", budget=25, seed=0, progress=False).history
    w3 = h["config"].map(lambda t: json.loads(t)["w"] == 3)
    assert w3.any() and (h["status"] == np.where(w3, "failed", "ok")).all()
    assert h.loc[w3, "error"].str.contains("cost@a: KeyError").all()
    assert h.loc[w3, "error"].str.contains("cost@b: KeyError").all()
    assert not h.loc[w3, "feasible"].any()
    # One target alone: its failure is the evaluation's (there is no other front to keep it on).
    single = run(SPACE, [objs[0], objs[2]], algorithm="random", budget=25, seed=0, progress=False).history
    w3 = single["config"].map(lambda t: json.loads(t)["w"] == 3)
    assert w3.any() and (single["status"] == np.where(w3, "failed", "ok")).all()


def test_a_target_whose_objective_always_fails_stops_the_search():
    def broken(c: Config) -> float:
        raise FileNotFoundError("b.json")

    objs = [*objectives(), Objective("cost@b", broken, "min")]
    with pytest.raises(RuntimeError, match=r"first 5 evaluations all failed.*cost@b: FileNotFoundError"):
        run(SPACE, objs, algorithm="random", budget=20, progress=False)


def test_a_latency_at_or_below_zero_fails_that_target_instead_of_topping_its_front():
    """A lookup table with a negative fitted overhead predicts < 0 ms for small configs: such a value would
    dominate every real subnet on the front."""

    def overhead_below_zero(c: Config) -> float:
        return cost(c) - 3.0  # small configs (w * d <= 2) come out at or below zero

    objs = [*objectives(), latency("b", overhead_below_zero)]
    h = run(SPACE, objs, algorithm="random", budget=40, seed=0, progress=False).history
    small = h["config"].map(lambda t: cost(Config.from_json(t)) <= 3.0)
    assert small.any() and (h["status"] == np.where(small, "partial", "ok")).all()
    assert (
        h.loc[small, "error"]
        .str.contains(r"latency@b: ValueError: latency@b: -?[\d.]+ ms for .* is not a")
        .all()
    )
    assert (h["latency@b"].dropna() > 0).all()

    # the same check on the predictor path (features in, ms out) and on measured latency
    class NegativeOverhead:
        def predict(self, X):
            return X.sum(axis=1) - 1e6

    with pytest.raises(ValueError, match=r"latency@cpu: -[\d.e+]+ ms for \{.*\} is not a latency"):
        latency("cpu", NegativeOverhead(), space=SPACE)(SPACE.max())
    with pytest.raises(ValueError, match=r"latency@dev: 0 ms for .* is not a latency"):
        latency("dev", measure=lambda c: 0.0)(SPACE.max())
    assert latency("dev", measure=lambda c: 0.25)(SPACE.max()) == 0.25


def test_an_infinite_objective_value_is_a_failed_evaluation(tmp_path):
    """The store keeps no infinities: inf read back as NaN in an "ok" row, so a reloaded run disagreed."""

    def quality_or_inf(c):
        return math.inf if c["w"] == 2 else quality(c)

    url = f"sqlite:///{tmp_path / 'run.db'}"
    objs = [Objective("quality", quality_or_inf, "max"), Objective("cost", cost)]
    result = run(SPACE, objs, algorithm="random", budget=20, seed=0, store=url, progress=False)
    h = result.history
    assert (h["status"] == "failed").eq(h["config"].str.contains(r'"w":2[,}]')).all() and (
        h["status"] == "failed"
    ).any()
    assert h.loc[h["status"] == "failed", "error"].str.contains("returned inf").all()
    assert h.loc[h["status"] == "ok", "quality"].notna().all()
    loaded = SearchResult.load(url).history
    assert loaded["status"].tolist() == h["status"].tolist()


def test_an_infinite_constraint_value_is_a_failed_evaluation(tmp_path):
    """A constraint fn returning inf was stored as NaN and counted infeasible, even for a ``>=`` bound it met."""

    def size_or_inf(c):
        return math.inf if c["w"] == 2 else float(c["w"])

    url = f"sqlite:///{tmp_path / 'run.db'}"
    c = Constraint("size", ">=", 0.0, fn=size_or_inf)
    result = run(
        SPACE, objectives(), algorithm="random", budget=20, seed=0, constraints=[c], store=url, progress=False
    )
    h = result.history
    inf_rows = h["config"].str.contains(r'"w":2[,}]')
    assert inf_rows.any() and (h["status"] == "failed").eq(inf_rows).all()
    assert h.loc[inf_rows, "error"].str.contains(r"constraint on 'size'.*returned inf").all()
    assert h.loc[~inf_rows, "feasible"].all()
    assert SearchResult.load(url).history["status"].tolist() == h["status"].tolist()


def test_lazy_function_builds_once_and_pickles_without_its_state():
    built = []

    def build():
        built.append(1)
        return lambda cfg: 2.0 * cfg["w"]

    f = LazyFunction(build)
    assert f(Config({"w": 2})) == 4.0 and f(Config({"w": 3})) == 6.0
    assert len(built) == 1
    cloudpickle = pytest.importorskip("cloudpickle")  # how Ray ships objectives (closures included)
    g = pickle.loads(cloudpickle.dumps(f))
    assert g._fn is None and g(Config({"w": 1})) == 2.0


def test_evaluate_config_record():
    rec = evaluate_config(SPACE.max(), objectives(), [Constraint("cost@a", "<=", 1.0)])
    assert rec["status"] == "ok" and rec["violation"] > 0 and rec["key"] == SPACE.max().key


# ----------------------------------------------------------------------------------------- store and resume
def test_a_run_that_could_not_reach_its_ray_cluster_is_replaced_by_the_rerun(tmp_path, monkeypatch):
    import ray

    def unreachable(*args, **kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    with pytest.raises(ConnectionError, match=r"cannot reach a Ray cluster at 'auto' \(Could not find"):
        run(SPACE, objectives(), algorithm="tpe", budget=3, store=url, backend="ray", ray_address="auto")
    monkeypatch.undo()
    # the store holds that run's settings but no evaluation: nothing to lose, so the same store takes a new run
    assert len(run(SPACE, objectives(), algorithm="random", budget=3, store=url, progress=False).history) == 3


def test_store_records_round_trip_and_meta_checks(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    first = run(SPACE, objectives(), algorithm="tpe", budget=10, seed=0, store=url, progress=False)
    with sqlite3.connect(tmp_path / "run.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    loaded = SearchResult.load(url)
    assert loaded.history["key"].tolist() == first.history["key"].tolist()
    np.testing.assert_allclose(loaded.history["quality"], first.history["quality"])
    with pytest.raises(StoreMismatchError, match="resume=True"):
        run(SPACE, objectives(), algorithm="tpe", budget=10, seed=0, store=url, progress=False)
    with pytest.raises(StoreMismatchError, match="algorithm: stored 'tpe', requested 'nsga2'"):
        run(SPACE, objectives(), algorithm="nsga2", budget=10, seed=0, store=url, resume=True, progress=False)
    with pytest.raises(
        StoreMismatchError, match="already holds 10 evaluations; give a budget of at least 10"
    ):
        run(SPACE, objectives(), algorithm="tpe", budget=8, seed=0, store=url, resume=True, progress=False)
    # Resuming a finished run evaluates nothing.
    calls: list[str] = []
    again = run(
        SPACE, objectives(calls), algorithm="tpe", budget=10, seed=0, store=url, resume=True, progress=False
    )
    assert calls == [] and len(again.history) == 10


@pytest.mark.parametrize("algorithm", ["nsga2", "linas", "tpe", "random"])
def test_a_larger_budget_extends_a_finished_run(tmp_path, algorithm):
    once = run(SPACE, objectives(), algorithm=algorithm, budget=16, seed=3, progress=False)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    first = run(SPACE, objectives(), algorithm=algorithm, budget=10, seed=3, store=url, progress=False)
    calls: list[str] = []
    extended = run(
        SPACE,
        objectives(calls),
        algorithm=algorithm,
        budget=16,
        seed=3,
        store=url,
        resume=True,
        progress=False,
    )
    keys = extended.history["key"].tolist()
    assert len(calls) == 6 and keys[:10] == first.history["key"].tolist()  # only the new evaluations are made
    assert len(set(keys)) == 16
    assert extended.meta["budget"] == 16  # the store now describes the extended run
    if algorithm in ("random", "tpe"):
        # one config per ask: the continuation is exactly what a run with the larger budget asked (a batch
        # searcher's last batch was cut at the old budget, so its continuation may differ)
        assert keys == once.history["key"].tolist()


def test_run_closes_the_store_it_opened_and_leaves_a_store_passed_in_open(tmp_path):
    """The connection of a store opened from a URL stayed open until garbage collection (its -wal and -shm
    files stayed beside the database in a notebook or a test, and the file stayed locked)."""
    path = tmp_path / "run.db"
    result = run(SPACE, objectives(), algorithm="random", budget=4, store=f"sqlite:///{path}", progress=False)
    assert len(result.history) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.db"]
    store = open_store(f"sqlite:///{tmp_path / 'mine.db'}")
    run(SPACE, objectives(), algorithm="random", budget=2, store=store, progress=False)
    assert store.count() == 2  # still usable by its owner
    store.close()


def test_a_file_that_is_not_a_store_is_named_and_left_alone(tmp_path):
    profile = tmp_path / "cpu.csv"
    profile.write_text("config_json,key,latency_ms\n")
    with pytest.raises(ValueError, match=r"cpu\.csv' is not a readable SQLite database"):
        open_store(str(profile))  # nas search --store (creates a store where none is)
    with pytest.raises(ValueError, match="is not a readable SQLite database"):
        SearchResult.load(f"sqlite:///{profile}")  # nas report / nas export
    assert profile.read_text() == "config_json,key,latency_ms\n"


def test_a_damaged_or_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path):
    with sqlite3.connect(tmp_path / "run.db") as conn:
        conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("CREATE TABLE evaluations (key TEXT PRIMARY KEY, config TEXT)")
        conn.executemany("INSERT INTO evaluations VALUES (?, ?)", [(str(i), "x" * 500) for i in range(100)])
    conn.close()
    (tmp_path / "cut.db").write_bytes((tmp_path / "run.db").read_bytes()[:8192])  # a copy cut short
    (tmp_path / "notes.db").write_text("not a database\n")
    with sqlite3.connect(tmp_path / "app.db") as conn:  # another program's database
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    cases = {"cut.db": "is not a readable SQLite database", "notes.db": "is not a readable SQLite database"}
    cases["app.db"] = r"is a SQLite database of something else \(tables: people\)"
    for name, message in cases.items():
        before = (tmp_path / name).read_bytes()
        with pytest.raises(ValueError, match=message):
            run(SPACE, objectives(), budget=5, store=tmp_path / name, resume=True, progress=False)
        with pytest.raises(ValueError, match=message):
            SearchResult.load(f"sqlite:///{tmp_path / name}")
        assert (tmp_path / name).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "cut.db", "notes.db", "run.db"]


def test_postgres_url_without_driver_says_what_to_install():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"psycopg\[binary\]"):
            open_store("postgresql://user@localhost/nas")
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("mysql://x")


@pytest.mark.parametrize("algorithm", ["nsga2", "linas", "tpe"])
def test_interrupted_run_resumes_to_exactly_the_budget(tmp_path, algorithm):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    counter = itertools.count()

    def interrupting(c):
        if next(counter) == 13:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of an evaluation
        return quality(c)

    objs = [Objective("quality", interrupting, "max"), Objective("cost@a", cost)]
    with pytest.raises(KeyboardInterrupt):
        run(SPACE, objs, algorithm=algorithm, budget=30, seed=4, store=url, progress=False)
    assert open_store(url).count() == 13
    calls: list[str] = []
    result = run(
        SPACE,
        objectives(calls),
        algorithm=algorithm,
        budget=30,
        seed=4,
        store=url,
        resume=True,
        progress=False,
    )
    assert len(calls) == 17
    assert len(result.history) == 30 and result.history["key"].is_unique


_DRIVER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.test_search import SPACE, cost, quality
    from nas.search import Objective, run

    def slow_quality(c):
        time.sleep(0.02)
        return quality(c)

    run(SPACE, [Objective("quality", slow_quality, "max"), Objective("cost@a", cost)],
        algorithm="nsga2", budget=40, seed=5, store={url!r}, progress=False)
    """
)


def test_killed_driver_resumes_to_exactly_the_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(repo=str(REPO), url=url))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if (tmp_path / "run.db").exists() and open_store(url).count() >= 8:
                break
            assert proc.poll() is None, "driver finished or crashed before it could be killed"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    n_before = open_store(url).count()
    assert 8 <= n_before < 40
    calls: list[str] = []
    objs = [
        Objective("quality", lambda c: (calls.append(c.key), quality(c))[1], "max"),
        Objective("cost@a", cost),
    ]
    result = run(SPACE, objs, algorithm="nsga2", budget=40, seed=5, store=url, resume=True, progress=False)
    assert len(result.history) == 40 and result.history["key"].is_unique
    assert len(calls) == 40 - n_before


def test_local_threads_run_concurrently_and_keep_the_budget():
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(c):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return quality(c)

    objs = [Objective("quality", slow, "max"), Objective("cost@a", cost)]
    result = run(SPACE, objs, algorithm="random", budget=24, max_concurrent=3, progress=False)
    assert len(result.history) == 24 and result.history["key"].is_unique
    assert peak[0] >= 2


def test_linas_gbdt_wl_uses_cell_graphs_and_keeps_the_budget():
    from search_spaces import nb201

    calls: list[str] = []

    def acc(c: Config) -> float:
        calls.append(c.key)
        return nb201.accuracy(c)

    objs = [
        Objective("accuracy", acc, "max"),
        Objective("params", lambda c: float(nb201.index(c) % 97), "min"),
    ]
    options = {"predictor": ["gbdt-wl", "sklearn-gbdt"], "n_random": 100, "inner_generations": 5}
    result = run(nb201.space, objs, "linas", budget=40, seed=0, progress=False, searcher_options=options)
    assert len(calls) == 40 and len(set(calls)) == 40
    # the model-based rounds must beat the initial Latin design on accuracy
    history = result.history.sort_values("order")
    assert history["accuracy"].iloc[12:].max() > history["accuracy"].iloc[:12].max()


@pytest.mark.parametrize("share", [True, False])
def test_linas_rarely_measures_a_function_twice_when_accuracy_is_graph_invariant(share):
    from nas.graph import graph_key
    from search_spaces import nb201

    objs = [
        Objective("accuracy", nb201.accuracy, "max", graph_invariant=True),
        Objective("latency@raspi4", lambda c: nb201.latency(c, "raspi4"), "min"),
    ]
    options = {"share_equivalent": share}
    result = run(nb201.space, objs, "linas", budget=80, seed=0, progress=False, searcher_options=options)
    assert len(result.history) == 80 and result.history["key"].is_unique
    graphs = [graph_key(nb201.space.graph(Config.from_json(c))) for c in result.history["config"]]
    if share:
        # a second config of a measured graph only when it is surely faster (seed 0: 77 distinct graphs)
        assert len(set(graphs)) >= 70
    else:
        # the accuracy model tells copies apart by their dead edges and measures them (seed 0: 31)
        assert len(set(graphs)) < 60


def test_linas_gbdt_wl_on_a_space_without_graphs_is_the_plain_gbdt():
    def keys(predictor: str) -> list[str]:
        options = {"predictor": predictor}
        result = run(
            SPACE, objectives(), "linas", budget=25, seed=0, progress=False, searcher_options=options
        )
        return list(result.history["key"])

    assert keys("gbdt-wl") == keys("sklearn-gbdt")


def test_linas_kappa_schedule_switches_with_the_evaluations_and_rejects_nonsense():
    s = searchers.get("linas")(seed=0, kappa=[(10, 0.75), (0, 0.25)])
    s.setup(Problem(SPACE, ("quality", "cost@a")))
    assert s._kappa_now() == 0.25
    configs = SPACE.samples(12, seed=3, unique=True)
    s.tell(configs, np.array([[-quality(c), cost(c)] for c in configs]), np.zeros(len(configs)))
    assert s._kappa_now() == 0.75
    assert searchers.get("linas")(seed=0, kappa=1)._kappa_now() == 1.0
    for bad, match in (([(5, 0.5)], "start at 0"), ("high", "number or a list"), (-1.0, ">= 0")):
        with pytest.raises(ValueError, match=match):
            searchers.get("linas")(seed=0, kappa=bad)


def test_linas_auto_target_transform_stretches_skewed_objectives_only():
    s = searchers.get("linas")(seed=0)
    crowded_at_best = -np.array(
        [94.0, 93.8, 93.5, 93.1, 92.0, 91.0, 90.5, 70.0, 40.0, 10.0]
    )  # minimisation form
    even = np.linspace(1.0, 10.0, 10)
    assert s._transform(0, crowded_at_best) == "log-best"
    assert s._transform(1, even) == "none"
    assert searchers.get("linas")(seed=0, target_transform=["none", "log"])._transform(1, even) == "log"
    # the log-best model reads back on the original scale and keeps the order of the best values
    X = np.arange(10.0)[:, None]
    model = s._fit(X, None, crowded_at_best, seed=0, j=0)
    assert np.all(np.diff(model.predict(X[:4])) >= -1e-9)
    assert abs(model.predict(X[:1])[0] - crowded_at_best[0]) < 1.0
    with pytest.raises(ValueError, match="target_transform"):
        searchers.get("linas")(seed=0, target_transform="sqrt")
    with pytest.raises(ValueError, match="log_best_gap"):
        searchers.get("linas")(seed=0, log_best_gap=0.0)


def test_linas_scores_a_small_space_whole_and_samples_a_large_one():
    s = searchers.get("linas")(seed=0)
    s.setup(Problem(SPACE, ("quality", "cost@a")))
    evaluated = SPACE.samples(15, seed=0, unique=True)
    s.tell(evaluated, np.array([[-quality(c), cost(c)] for c in evaluated]), np.zeros(15))
    F = s.values
    pool = s._candidates(list(evaluated), F, np.zeros(len(F)), None)  # no model needed: no inner search
    assert len(pool) == SPACE.size - 15  # every unseen config, each once
    assert {c.key for c in pool}.isdisjoint(c.key for c in evaluated)

    def no_model(cands, with_std=True):
        m = len(cands)
        return np.zeros((m, 2)), np.zeros((m, 2)), np.zeros(m)

    big = searchers.get("linas")(seed=0, exhaustive=10, n_random=20, inner_generations=2)
    big.setup(Problem(SPACE, ("quality", "cost@a")))
    big.tell(evaluated, s.values, np.zeros(15))
    sampled = big._candidates(list(evaluated), s.values, np.zeros(15), no_model)
    assert 0 < len(sampled) < SPACE.size - 15  # a space above `exhaustive` configs: a sampled pool


def test_linas_exploration_pick_goes_to_the_unmeasured_gap_of_the_predicted_front():
    from nas.search.searchers.linas import LinasSearcher

    measured = np.array([[0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    opt = np.array(
        [
            [0.05, 0.95],  # on the predicted front, next to measured points
            [0.9, 0.05],  # on the predicted front, far from anything measured
            [1.0, 1.0],  # dominated: never an exploration pick
        ]
    )
    assert LinasSearcher._explore_pick(opt, measured, np.ones(3, dtype=bool)) == 1
    assert LinasSearcher._explore_pick(opt, measured, np.array([True, False, True])) == 0
    assert LinasSearcher._explore_pick(opt, measured, np.zeros(3, dtype=bool)) is None
    with pytest.raises(ValueError, match="explore"):
        LinasSearcher(explore=1.5)


def test_local_threads_score_supernet_accuracy_as_one_thread_does():
    # Evaluating a subnet activates it and recalibrates batch norm in place: threads sharing one supernet
    # scored each other's subnets (different accuracies than a one-at-a-time search) before each thread got
    # its own copy.
    import torch

    from nas import data
    from nas.search import accuracy, macs
    from search_spaces import mobilenetv3

    torch.manual_seed(0)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    images, labels = data.mnist("test").tensors
    dataset = (images[:200], labels[:200])

    def scores(max_concurrent: int) -> dict[str, float]:
        objs = [accuracy(net, dataset, calib_batches=1, calib_batch_size=64), macs(net)]
        result = run(
            net.space, objs, algorithm="random", budget=8, max_concurrent=max_concurrent, progress=False
        )
        return dict(zip(result.history["key"], result.history["accuracy"]))

    one_at_a_time = scores(1)
    assert len(set(one_at_a_time.values())) > 2  # the subnets score differently, so a mix-up would show
    assert scores(4) == one_at_a_time
    assert net.active_config is not None  # the caller's own supernet is still usable


def test_a_model_that_cannot_be_copied_is_shared_by_threads_taking_turns():
    from nas.search.objectives import _PerThread

    class Device:  # holds a lock, as a handle to a measured device might: deepcopy refuses it
        def __init__(self):
            self.handle = threading.Lock()
            self.inside = 0
            self.most_inside = 0

    def measure(device: Device, cfg: int) -> float:
        device.inside += 1
        device.most_inside = max(device.most_inside, device.inside)
        time.sleep(0.01)
        device.inside -= 1
        return float(cfg)

    device = Device()
    calls = _PerThread(device)
    threads = [threading.Thread(target=calls, args=(measure, i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert device.most_inside == 1


def test_linas_survives_a_cheap_objective_that_fails_for_some_configs():
    """A lookup table missing a layer fails those configs' evaluations, not the whole search."""

    def cost_or_fail(c: Config) -> float:
        if c["w"] == 4:
            raise KeyError("no table entry for w=4")
        return cost(c)

    objs = [Objective("quality", quality, "max"), Objective("cost@a", cost_or_fail, "min", expensive=False)]
    result = run(SPACE, objs, algorithm="linas", budget=30, seed=0, progress=False)
    h = result.history
    assert len(h) == 30 and h["key"].is_unique
    ok = h["status"] == "ok"
    assert ok.sum() >= 20  # the model steers away from configs it cannot score
    assert all(json.loads(c)["w"] != 4 for c in h.loc[ok, "config"])
