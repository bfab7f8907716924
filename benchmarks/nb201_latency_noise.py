"""How much of the HW-NAS-Bench latency error no architecture feature can explain.

For each NAS-Bench-201 device, boosted trees on the cells' structure features (``nb201.features_all``) are fitted
on one half of the connected cells and predict the other (2-fold, log latency), so every cell gets an
out-of-fold residual. The residuals are then read in NB201 index order: that order is a random permutation of
the architectures, so a well-specified model leaves no correlation between neighbours, unless the latencies
drifted along the order in which they were measured (HW-NAS-Bench measured the devices cell by cell).

Printed per device: residual spread, the fraction of cells predicted within 10% and the Kendall tau between
predicted and table latency (``predictors.metrics.kendall_tau``; with 7,642 training cells, upper bounds in
practice for the 1,000-cell fits of ``predictors.py``), the residual autocorrelation at a few lags, and the
share of residual variance that a moving average over the 50 index neighbours on each side explains, with the
within-10% figure once that drift is removed. The moving average is an oracle (it uses the test cells' own
neighbours), not a predictor: it only sizes the part of the error that is measurement drift. Last, the
correlation of the residuals between every two devices, over the cells both measured: a residual another device
shares (the same cell slow on two ARM CPUs) would let that device's published profile serve as a feature of a
new one's predictor; a correlation near 0 says what is left is each measurement's own noise. On edgetpu only
the 10,926 connected cells HW-NAS-Bench measured take part (neighbours are then the next measured cells).

Usage:
    .venv/bin/python benchmarks/nb201_latency_noise.py [--devices pixel3 raspi4 edgegpu] [--window 50]

Writes benchmarks/results/nb201_latency_noise.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import describe, machine, write_json
from sklearn.ensemble import HistGradientBoostingRegressor

# The package, not benchmarks/predictors.py (Python puts this script's folder first on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from predictors.metrics import kendall_tau
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


def measured_latencies(table, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers (NB201 index order) of the connected cells of ``table`` (``nb201.table()``) with a ``device``
    latency, and those latencies.

    HW-NAS-Bench did not measure 4,699 edgetpu cells (``nb201.latency`` raises for them); they are left out.
    """
    latency = table[f"latency_{device}"].to_numpy()
    keep = np.flatnonzero(table["connected"].to_numpy() & np.isfinite(latency))
    return keep, latency[keep]


def autocorrelation(r: np.ndarray, lag: int) -> float:
    c = r - r.mean()
    return float(np.corrcoef(c[:-lag], c[lag:])[0, 1])


def residual_correlations(residuals: dict[str, np.ndarray]) -> dict[str, float]:
    """Pearson correlation of every two devices' residuals over the rows where both are finite.

    Example:
        >>> r = {"a": np.array([1.0, -1.0, 2.0, np.nan]), "b": np.array([2.0, -2.0, 4.0, 0.0])}
        >>> residual_correlations(r)
        {'a-b': 1.0}
    """
    names = list(residuals)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = np.isfinite(residuals[a]) & np.isfinite(residuals[b])
            out[f"{a}-{b}"] = round(float(np.corrcoef(residuals[a][both], residuals[b][both])[0, 1]), 6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--devices", nargs="+", default=["pixel3", "raspi4", "edgegpu"], choices=nb201.DEVICES
    )
    parser.add_argument(
        "--window", type=int, default=50, help="index neighbours on each side (drift estimate)"
    )
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results" / "nb201_latency_noise.json"),
        help="JSON file to write",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    X_all, table = nb201.features_all(), nb201.table()  # both in NB201 index order
    print("2-fold boosted trees on log latency, residuals in NB201 index order")
    print(
        f"{'device':>8} | {'cells':>6} | {'resid sd':>8} | {'within10':>8} | "
        + " | ".join(f"ac lag {lag:>3}" for lag in LAGS)
        + f" | {'drift var':>9} | {'within10 w/o drift':>18} | {'tau':>5}"
    )
    rows = []
    residuals: dict[str, np.ndarray] = {}  # per device, in NB201 index order, NaN where not measured
    for device in args.devices:
        keep, latency = measured_latencies(table, device)
        r = out_of_fold_residuals(X_all[keep], np.log(latency))
        drift = neighbour_mean(r, args.window)
        residuals[device] = np.full(len(table), np.nan)
        residuals[device][keep] = r
        row = {
            "device": device,
            "cells": len(keep),
            "residual_sd": float(r.std()),
            "within_10pct": float(np.mean(np.abs(np.expm1(r)) <= 0.10)),
            "autocorrelation": {str(lag): autocorrelation(r, lag) for lag in LAGS},
            "drift_variance_share": float(1.0 - np.var(r - drift) / np.var(r)),
            "within_10pct_without_drift": float(np.mean(np.abs(np.expm1(r - drift)) <= 0.10)),
            "kendall_tau": kendall_tau(latency, latency * np.exp(-r)),  # prediction = latency / e^residual
        }
        rows.append(row)
        acs = " | ".join(f"{v:>10.3f}" for v in row["autocorrelation"].values())
        print(
            f"{device:>8} | {len(keep):>6} | {row['residual_sd']:>8.4f} | {row['within_10pct']:>8.3f} | {acs} | "
            f"{row['drift_variance_share']:>9.3f} | {row['within_10pct_without_drift']:>18.3f} | "
            f"{row['kendall_tau']:>5.3f}"
        )
    correlations = residual_correlations(residuals)
    if correlations:
        print("residual correlation between devices (cells both measured)")
        for pair, value in correlations.items():
            print(f"{pair:>17} | {value:>6.3f}")
    elapsed = time.perf_counter() - started
    host = machine()
    print(f"ran {elapsed:.0f} s on {describe(host)}")
    payload = {
        "benchmark": "nb201_latency_noise",
        "args": vars(args),
        "machine": host,
        "seconds": elapsed,
        "rows": rows,
        "residual_correlations": correlations,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
