"""How much of the HW-NAS-Bench latency error no architecture feature can explain.

For each NAS-Bench-201 device, boosted trees on the cells' structure features (``nb201.features_all``) are fitted
on one half of the connected cells and predict the other (2-fold, log latency), so every cell gets an
out-of-fold residual. The residuals are then read in NB201 index order: that order is a random permutation of
the architectures, so a well-specified model leaves no correlation between neighbours, unless the latencies
drifted along the order in which they were measured (HW-NAS-Bench measured the devices cell by cell).

Printed per device: residual spread, the fraction of cells predicted within 10% (with 7,800 training cells, an
upper bound for the 1,000-cell fits of ``predictors.py``), the residual autocorrelation at a few lags, and the
share of residual variance that a moving average over the 50 index neighbours on each side explains, with the
within-10% figure once that drift is removed. The moving average is an oracle (it uses the test cells' own
neighbours), not a predictor: it only sizes the part of the error that is measurement drift.

Usage:
    .venv/bin/python benchmarks/nb201_latency_noise.py [--devices pixel3 raspi4 edgegpu] [--window 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from search_spaces import nb201

LAGS = (1, 5, 25, 125, 625)


def out_of_fold_residuals(X: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Residual ``y - prediction`` of every row from a model fitted on the other half of the rows."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    halves = order[: len(y) // 2], order[len(y) // 2 :]
    residual = np.empty(len(y))
    for fit, held_out in (halves, halves[::-1]):
        model = HistGradientBoostingRegressor(max_iter=600, learning_rate=0.05, random_state=seed)
        model.fit(X[fit], y[fit])
        residual[held_out] = y[held_out] - model.predict(X[held_out])
    return residual


def neighbour_mean(r: np.ndarray, window: int) -> np.ndarray:
    """Mean of the ``window`` values on each side of every entry, the entry itself left out."""
    ones = np.ones(2 * window + 1)
    total = np.convolve(r, ones, mode="same") - r
    count = np.convolve(np.ones_like(r), ones, mode="same") - 1
    return total / count


def autocorrelation(r: np.ndarray, lag: int) -> float:
    c = r - r.mean()
    return float(np.corrcoef(c[:-lag], c[lag:])[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--devices", nargs="+", default=["pixel3", "raspi4", "edgegpu"], choices=nb201.DEVICES
    )
    parser.add_argument(
        "--window", type=int, default=50, help="index neighbours on each side (drift estimate)"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    cells = nb201.all_configs()  # NB201 index order
    connected = np.array([nb201.is_connected(c) for c in cells])
    X = nb201.features_all()[connected]
    print(f"{connected.sum()} connected cells in NB201 index order, 2-fold boosted trees on log latency")
    print(
        f"{'device':>8} | {'resid sd':>8} | {'within10':>8} | "
        + " | ".join(f"ac lag {lag:>3}" for lag in LAGS)
        + f" | {'drift var':>9} | {'within10 w/o drift':>18}"
    )
    for device in args.devices:
        latency = np.array([nb201.latency(c, device) for c in cells])[connected]
        r = out_of_fold_residuals(X, np.log(latency))
        drift = neighbour_mean(r, args.window)
        explained = 1.0 - np.var(r - drift) / np.var(r)
        within = float(np.mean(np.abs(np.expm1(r)) <= 0.10))
        within_without = float(np.mean(np.abs(np.expm1(r - drift)) <= 0.10))
        acs = " | ".join(f"{autocorrelation(r, lag):>10.3f}" for lag in LAGS)
        print(
            f"{device:>8} | {r.std():>8.4f} | {within:>8.3f} | {acs} | {explained:>9.3f} | {within_without:>18.3f}"
        )
    print(f"ran {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
