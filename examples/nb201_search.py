"""Hardware-aware search on NAS-Bench-201, where the true Pareto fronts are known.

Searches CIFAR-10 accuracy against latency on two real devices (Raspberry Pi 4 and Pixel 3, HW-NAS-Bench) in one
run, so both fronts share the accuracy evaluations, then compares the hypervolume found with the true one and
writes an HTML report.

    python examples/nb201_search.py --budget 100 --algorithm linas --out runs/nb201

The same from the shell:

    nas search --space nb201 --target raspi4 --target pixel3 --algorithm linas --budget 100 \\
               --store runs/nb201/search.db
    nas report runs/nb201/search.db --out runs/nb201/report
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nas import search
from nas.pareto import hypervolume, nondominated_mask
from nas.report import write_report
from search_spaces import nb201


def true_front_reference(device: str) -> tuple[np.ndarray, float]:
    """Reference point (nadir of the true front of connected cells, pushed out by 10% of its range) and the
    true front's hypervolume, in minimisation form (-accuracy, latency)."""
    table = nb201.table()
    table = table[table["connected"]]
    F = np.column_stack([-table["cifar10"].to_numpy(), table[f"latency_{device}"].to_numpy()])
    front = F[nondominated_mask(F)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    ref = hi + 0.1 * (hi - lo)
    return ref, hypervolume(front, ref)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=100, help="real evaluations (table lookups)")
    parser.add_argument("--algorithm", default="linas", help="random, nsga2, tpe, gp, agemoea or linas")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/nb201", help="run directory (store + report)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / f"search-{args.algorithm}-{args.seed}.db"
    store.unlink(missing_ok=True)  # a demo starts afresh; real runs pass resume=True instead
    devices = ("raspi4", "pixel3")
    # accuracy depends only on the function a cell computes: LINAS measures each distinct graph once
    objectives = [
        search.Objective("accuracy", lambda cfg: nb201.accuracy(cfg, "cifar10"), "max", graph_invariant=True)
    ]
    objectives += [search.latency(d, lambda cfg, d=d: nb201.latency(cfg, d)) for d in devices]

    start = time.perf_counter()
    result = search.run(
        nb201.space,
        objectives,
        algorithm=args.algorithm,
        budget=args.budget,
        seed=args.seed,
        store=f"sqlite:///{store}",
    )
    seconds = time.perf_counter() - start

    print(f"\n{args.algorithm}: {len(result)} evaluations in {seconds:.1f} s")
    for device in devices:
        front = result.pareto(target=device)
        ref, true_hv = true_front_reference(device)
        found = result.hypervolume({"accuracy": -ref[0], f"latency@{device}": ref[1]}, target=device)
        ratio = found / true_hv
        best = front.sort_values("accuracy").iloc[-1]
        print(
            f"  {device:7s} front of {len(front):2d} cells; hypervolume {ratio:.3f} of the true front; "
            f"best {best['accuracy']:.2f}% at {best[f'latency@{device}']:.2f} ms"
        )
    index = write_report(result, out / "report")
    print(f"report: {index}")


if __name__ == "__main__":
    main()
