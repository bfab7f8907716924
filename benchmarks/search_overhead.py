"""Overhead of the search engine itself: evaluations per second with objectives that cost nothing.

Local backend: random search, NSGA-II and TPE (at most 300 evaluations: it slows down as its history grows) with
two cheap analytic objectives, an in-memory store and a SQLite file store (every evaluation committed); each
searcher first runs a few untimed evaluations, so that imports and first-call set-up stay out of its rows. Ray backend: steady-state time per Ray Tune trial (actors reused) on a
local Ray instance, i.e. the overhead Ray adds to every evaluation.

Usage:
    python benchmarks/search_overhead.py                # local + ray
    python benchmarks/search_overhead.py --no-ray --budget 5000

Writes benchmarks/results/search_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import describe, machine, write_json

from nas.search import Objective, run
from nas.space import Choice, SearchSpace

# 20 dimensions of 4 values: 4**20 configs, so the budget never exhausts the space.
SPACE = SearchSpace("overhead", [Choice(f"d{i}", (0, 1, 2, 3)) for i in range(20)])


def size(c) -> float:
    return float(sum(c.values()))


def spread(c) -> float:
    return float(sum((v - 1.5) ** 2 for v in c.values()))


OBJECTIVES = [
    Objective("size", size, "max", expensive=True),
    Objective("spread", spread, "min", expensive=True),
]


def timed(**kwargs) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = run(SPACE, OBJECTIVES, progress=False, **kwargs)
    elapsed = time.perf_counter() - t0
    assert len(result.history) == kwargs["budget"] and result.history["key"].is_unique
    return elapsed, len(result.history)


def cases(budget: int, tmp: str) -> list[tuple[str, str, str, dict]]:
    """(backend, algorithm, store, run options) of the local rows; TPE gets ``min(budget, 300)`` evaluations.

    Example:
        >>> [(a, s, o.get("budget", 1000)) for _, a, s, o in cases(1000, "/tmp")]
        [('random', 'memory', 1000), ('random', 'sqlite', 1000), ('nsga2', 'memory', 1000), ('nsga2', 'sqlite', 1000), ('tpe', 'memory', 300)]
        >>> cases(10, "/tmp")[-1][3]
        {'budget': 10}
    """
    return [
        ("local", "random", "memory", {}),
        ("local", "random", "sqlite", {"store": f"sqlite:///{tmp}/a.db"}),
        ("local", "nsga2", "memory", {}),
        ("local", "nsga2", "sqlite", {"store": f"sqlite:///{tmp}/b.db"}),
        ("local", "tpe", "memory", {"budget": min(budget, 300)}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--ray-budget", type=int, default=40)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "search_overhead.json"))
    args = parser.parse_args()
    if args.budget < 1:
        parser.error(f"--budget {args.budget}: give at least 1 evaluation")
    if not args.no_ray and args.ray_budget < 2:
        # the steady state is measured between the finish times of the trials after the first 5
        parser.error(f"--ray-budget {args.ray_budget}: give at least 2 (or --no-ray)")
    started = time.time()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo in ("random", "nsga2", "tpe"):
            # untimed: without it the first row of each searcher also times its imports and set-up
            timed(algorithm=algo, budget=3)
        for backend, algo, store, extra in cases(args.budget, tmp):
            budget = extra.pop("budget", args.budget)
            elapsed, n = timed(algorithm=algo, budget=budget, **extra)
            rows.append(
                {
                    "backend": backend,
                    "algorithm": algo,
                    "store": store,
                    "evaluations": n,
                    "seconds": elapsed,
                    "evals_per_s": n / elapsed,
                    "ms_per_eval": 1000 * elapsed / n,
                }
            )
        if not args.no_ray:
            import ray

            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                num_cpus=2,
                object_store_memory=150 * 1024 * 1024,
                include_dashboard=False,
                log_to_driver=False,
            )
            try:
                for conc in (1, 2):
                    # Steady state from the finish times of the stored trials, skipping the first 5 (actor
                    # start-up): the time Ray adds per evaluation when nothing else costs anything.
                    t0 = time.perf_counter()
                    result = run(
                        SPACE,
                        OBJECTIVES,
                        algorithm="random",
                        budget=5 + args.ray_budget,
                        backend="ray",
                        max_concurrent=conc,
                        progress=False,
                    )
                    total = time.perf_counter() - t0
                    done = result.history["finished_at"].sort_values().to_numpy()[5:]
                    per_trial = (done[-1] - done[0]) / (len(done) - 1)
                    rows.append(
                        {
                            "backend": "ray",
                            "algorithm": "random",
                            "store": "memory",
                            "evaluations": len(result.history),
                            "max_concurrent": conc,
                            "seconds": total,
                            "evals_per_s": 1.0 / per_trial,
                            "ms_per_eval": 1000 * per_trial,
                            "note": "steady state after 5 trials; seconds include Tune set-up",
                        }
                    )
            finally:
                ray.shutdown()
    print(
        f"{'backend':8s} {'algorithm':9s} {'store':7s} {'conc':>4s} {'evals':>6s} {'s':>7s} {'evals/s':>9s} "
        f"{'ms/eval':>8s}"
    )
    for r in rows:
        print(
            f"{r['backend']:8s} {r['algorithm']:9s} {r['store']:7s} {r.get('max_concurrent', 1):4d} "
            f"{r['evaluations']:6d} {r['seconds']:7.2f} {r['evals_per_s']:9.1f} {r['ms_per_eval']:8.2f}"
        )
    elapsed = time.time() - started
    host = machine()
    print(f"ran in {elapsed:.0f} s on {describe(host)}")
    out = write_json(
        args.out, {"benchmark": "search_overhead", "machine": host, "elapsed_s": elapsed, "rows": rows}
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
