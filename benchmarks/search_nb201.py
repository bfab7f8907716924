"""Sample efficiency of the searchers on NAS-Bench-201: hypervolume found / true after 50, 100, 250 evaluations
(and after ``--budget`` evaluations when that is none of these).

For each hardware target (HW-NAS-Bench latency) the problem is CIFAR-10 accuracy (max) against latency (min),
both read from the tables shipped with ``search_spaces.nb201``; every evaluated config counts as one real
evaluation. By default (``--latency profile``) latency is a cheap lookup in the built-in HW-NAS-Bench profile,
which is what ``nas search --space nb201 --target DEVICE`` does: searchers may query it for any candidate and
only accuracy must be learnt. ``--latency measured`` treats the table latency as a live measurement that
model-based searchers must learn as well; there 0.99 at 250 asks for more than evaluating every one of the
8,764 distinct live graphs once (the one-per-graph set below scores 0.990): above that lie only the copies
whose table values came out lucky (training noise in accuracy, run-to-run noise in the raspi4 / pixel3
latencies), which a search sees only by measuring them.
The true front is that of the connected cells; the reference point is its nadir pushed out by 10% of its range
in each objective (with the worst cell of the table as reference, random search already scores 0.99).

Also prints, per target, what evaluating one random config of every distinct live graph (cells with the same
``graph_key`` of ``space.graph``) would score: the table accuracies of equivalent cells differ by training
noise, so the last ~1% of the true front's hypervolume is the luck of particular cells (raspi4: 0.990;
edgegpu lower, 0.89, because there a random copy is often much slower: its dead operations still run).

Prints median [min - max] over seeds and writes ``benchmarks/results/search_nb201.json``.

Usage:
    python benchmarks/search_nb201.py                                  # everything: 4 targets x 4 algorithms x 10 seeds
    python benchmarks/search_nb201.py --targets raspi4 --algorithms random linas --seeds 3
    python benchmarks/search_nb201.py --workers 2                      # runs in parallel processes
    python benchmarks/search_nb201.py --algorithms linas --linas-option kappa=1.0   # a LINAS variant
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import describe, machine, write_json

from nas.cli import CliError, parse_key_values
from nas.pareto import hypervolume, nondominated_mask

TARGETS = ("raspi4", "pixel3", "edgegpu", "fpga")
ALGORITHMS = ("random", "nsga2", "tpe", "linas")
CHECKPOINTS = (50, 100, 250)


def true_front(target: str) -> tuple[np.ndarray, np.ndarray, float]:
    """True front (minimisation form: -accuracy, latency) of the connected cells, reference point, its HV."""
    from search_spaces import nb201

    cells = [c for c in nb201.all_configs() if nb201.is_connected(c)]
    F = np.array([[-nb201.accuracy(c), nb201.latency(c, target)] for c in cells])
    front = F[nondominated_mask(F)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    ref = hi + 0.1 * (hi - lo)
    return front, ref, hypervolume(front, ref)


def checkpoints(budget: int) -> list[int]:
    """Evaluation counts the hypervolume is reported at: those of ``CHECKPOINTS`` within ``budget``, and
    ``budget`` itself (a short run, e.g. ``--budget 20``, would otherwise report nothing).

    Example:
        >>> checkpoints(250), checkpoints(120), checkpoints(20)
        ([50, 100, 250], [50, 100, 120], [20])
    """
    return sorted({b for b in CHECKPOINTS if b <= budget} | {budget})


def one_per_function(target: str, draws: int = 20, seed: int = 0) -> dict:
    """HV ratio of a set holding one random config of every distinct live graph (``graph_key``), median of
    ``draws`` draws: what evaluating every distinct architecture once would score without also picking the
    luckiest of its equivalent cells (their table accuracies differ by training noise, sd ~0.1 points)."""
    from nas.graph import graph_key
    from search_spaces import nb201

    cells = [c for c in nb201.all_configs() if nb201.is_connected(c)]
    F = np.array([[-nb201.accuracy(c), nb201.latency(c, target)] for c in cells])
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(cells):
        groups.setdefault(graph_key(nb201.space.graph(c)), []).append(i)
    _, ref, true_hv = true_front(target)
    rng = np.random.default_rng(seed)
    ratios = [
        hypervolume(F[[g[rng.integers(len(g))] for g in groups.values()]], ref) / true_hv
        for _ in range(draws)
    ]
    return {"functions": len(groups), "cells": len(cells), "hv_ratio": float(np.median(ratios))}


def one_run(args: tuple[str, str, int, int, dict]) -> dict:
    """One search; returns the HV ratio at each checkpoint and the wall time."""
    target, algorithm, seed, budget, linas_options, latency_mode, batch_size = args
    import torch

    torch.set_num_threads(1)
    from nas.search import Objective, run
    from search_spaces import nb201

    _, ref, true_hv = true_front(target)
    objectives = [
        Objective("accuracy", nb201.accuracy, "max", graph_invariant=True),
        # "profile" (default): latency is a lookup in a built-in profile (cheap), as when a user searches with a
        # profile or a fitted latency predictor (`nas search`, `search.latency(name, predictor)`); only accuracy
        # must be learnt. "measured": the HW-NAS-Bench table stands for a live measurement, so the latency is
        # expensive and model-based searchers must learn it too.
        Objective(
            f"latency@{target}",
            lambda c: nb201.latency(c, target),
            "min",
            expensive=latency_mode == "measured",
        ),
    ]
    options = linas_options if algorithm == "linas" else None
    t0 = time.perf_counter()
    result = run(
        nb201.space,
        objectives,
        algorithm=algorithm,
        budget=budget,
        seed=seed,
        progress=False,
        searcher_options=options or None,
        batch_size=batch_size,
    )
    wall = time.perf_counter() - t0
    h = result.history
    assert len(h) == budget and h["key"].is_unique, "budget or deduplication broken"
    F = np.column_stack([-h["accuracy"].to_numpy(), h[f"latency@{target}"].to_numpy()])
    ratios = {b: float(hypervolume(F[h["order"].to_numpy() < b], ref) / true_hv) for b in checkpoints(budget)}
    return {"target": target, "algorithm": algorithm, "seed": seed, "ratios": ratios, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (0 .. n-1)")
    parser.add_argument("--budget", type=int, default=250)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="configs per ask (default: each searcher's own)"
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel processes")
    parser.add_argument(
        "--linas-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="LinasSearcher keyword argument (repeatable); VALUE is read as JSON when it parses, else a string",
    )
    parser.add_argument(
        "--latency",
        choices=("measured", "profile"),
        default="profile",
        help="profile (default): latency is a lookup in the built-in HW-NAS-Bench profile, cheap, as in "
        "`nas search --space nb201 --target DEVICE` and search.latency(name, predictor); only accuracy is learnt. "
        "measured: latency counts as an expensive live measurement the searcher must learn too",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "search_nb201.json"))
    args = parser.parse_args()
    if args.budget < 1:
        parser.error(f"--budget {args.budget}: give at least 1 evaluation")

    try:
        linas_options = parse_key_values(args.linas_option, "--linas-option")
    except CliError as exc:
        raise SystemExit(str(exc)) from None
    started = time.time()
    jobs = [
        (t, a, s, args.budget, linas_options, args.latency, args.batch_size)
        for t in args.targets
        for a in args.algorithms
        for s in range(args.seeds)
    ]
    runs = []

    def report(r: dict) -> None:
        runs.append(r)
        ratios = " ".join(f"{b}:{v:.4f}" for b, v in r["ratios"].items())
        print(
            f"  {r['target']:8s} {r['algorithm']:7s} seed {r['seed']}: {ratios} ({r['wall_s']:.1f} s)",
            flush=True,
        )

    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for fut in as_completed([pool.submit(one_run, job) for job in jobs]):
                report(fut.result())
    else:
        for job in jobs:
            report(one_run(job))
    elapsed = time.time() - started

    reported = checkpoints(args.budget)
    header = f"{'target':8s} {'algorithm':9s} " + " ".join(f"{'HV@' + str(b):>22s}" for b in reported)
    header += f" {'s/run':>7s}"
    print(f"\nHypervolume found / true, median [min - max] over {args.seeds} seeds")
    print(header)
    print("-" * len(header))
    summary = []
    for t in args.targets:
        for a in args.algorithms:
            rs = [r for r in runs if r["target"] == t and r["algorithm"] == a]
            row = {"target": t, "algorithm": a, "wall_s_mean": float(np.mean([r["wall_s"] for r in rs]))}
            cells = []
            for b in reported:
                v = np.array([r["ratios"][b] for r in rs])
                row[f"hv{b}"] = {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
                cells.append(f"{np.median(v):.4f} [{v.min():.3f}-{v.max():.3f}]")
            summary.append(row)
            print(f"{t:8s} {a:9s} " + " ".join(f"{c:>22s}" for c in cells) + f" {row['wall_s_mean']:7.1f}")
    ceilings = {t: one_per_function(t) for t in args.targets}
    print(
        "\nOne random config of every distinct live graph (NB201 cells with one graph_key), median of 20 draws:"
    )
    for t, c in ceilings.items():
        print(
            f"  {t:8s} HV ratio {c['hv_ratio']:.4f} ({c['functions']} live graphs, {c['cells']} connected cells)"
        )
    host = machine()
    print(f"\nran {len(runs)} searches in {elapsed:.0f} s on {describe(host)}, {args.workers} worker(s)")

    out = write_json(
        args.out,
        {
            "benchmark": "search_nb201",
            "args": vars(args),
            "elapsed_s": elapsed,
            "machine": host,
            "summary": summary,
            "one_per_function": ceilings,
            "runs": [{**r, "ratios": {str(k): v for k, v in r["ratios"].items()}} for r in runs],
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
