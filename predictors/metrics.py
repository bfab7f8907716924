"""Error and ranking metrics for predictors (arrays in, floats out)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["evaluate", "kendall_tau", "metrics"]


# Values this close (relative) count as tied in :func:`kendall_tau`. HW-NAS-Bench's eyeriss latencies are sums of
# per-layer costs whose summation order differs between cells, so one latency appears as 5.120180000000001,
# ...002 and ...003; ranked as different, those pairs made an exact predictor score tau 0.970 instead of 1.
# Genuine differences between latencies are many orders of magnitude larger than 1e-9.
TIE_RTOL = 1e-9


def _tie_ranks(x: np.ndarray) -> np.ndarray:
    """Dense ranks of ``x`` in which neighbouring values within :data:`TIE_RTOL` (relative) share a rank."""
    values, inverse = np.unique(x, return_inverse=True)
    gap = np.diff(values)
    # infinities never merge with finite neighbours (inf - x <= rtol * inf would hold)
    close = np.isfinite(gap) & (gap <= TIE_RTOL * np.maximum(np.abs(values[:-1]), np.abs(values[1:])))
    group = np.concatenate([[0], np.cumsum(~close)])
    return group[inverse.reshape(-1)].astype(np.float64)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b rank correlation (ties handled), via SciPy, which scikit-learn already requires.

    Neighbouring values within a relative ``1e-9`` (:data:`TIE_RTOL`) count as tied, so floating-point noise
    (one cost summed in two orders) neither scores nor costs a pair. NaN anywhere gives NaN; fewer than two
    values, or a constant array, also give NaN.

    Example:
        >>> round(kendall_tau(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])), 3)
        0.333
        >>> round(kendall_tau(np.array([0.1 + 0.2, 0.3, 1.0]), np.array([0.3, 0.1 + 0.2, 1.0])), 12)
        1.0
    """
    from scipy.stats import kendalltau

    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if len(a) < 2 or np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    tau = kendalltau(_tie_ranks(a), _tie_ranks(b)).statistic
    return float(tau)


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``rmse``, ``mape`` (percent: 3.2 means 3.2 %), ``within_5pct`` and ``within_10pct`` (fractions of
    predictions within 5 % / 10 % of the truth), ``kendall_tau`` and ``n``.

    Relative errors need non-zero truths; rows with ``y_true == 0`` are left out of the relative metrics.
    ``y_true`` must be finite (a ``ValueError`` otherwise); a non-finite prediction counts as a miss in the
    within-X fractions and makes ``rmse`` and ``mape`` NaN or infinite (and ``kendall_tau`` NaN, for a NaN).

    Example:
        >>> m = metrics(np.array([1.0, 2.0, 4.0]), np.array([1.04, 2.4, 4.0]))
        >>> round(m["mape"], 2), round(m["within_5pct"], 3), round(m["within_10pct"], 3)
        (8.0, 0.667, 0.667)
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} values but y_pred has {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("cannot evaluate on zero samples")
    if not np.isfinite(y_true).all():  # a NaN truth would count as a miss and make mape/rmse NaN
        raise ValueError(
            f"y_true holds {int(np.sum(~np.isfinite(y_true)))} NaN or infinite values; drop unmeasured rows first"
        )
    nz = y_true != 0
    rel = np.abs(y_pred[nz] - y_true[nz]) / np.abs(y_true[nz])
    has_rel = rel.size > 0
    return {
        "rmse": float(np.sqrt(np.mean((y_pred - y_true) ** 2))),
        "mape": float(100.0 * rel.mean()) if has_rel else float("nan"),
        # a tiny tolerance so that exactly 10 % off (in decimal) is not lost to binary rounding
        "within_5pct": float(np.mean(rel <= 0.05 + 1e-12)) if has_rel else float("nan"),
        "within_10pct": float(np.mean(rel <= 0.10 + 1e-12)) if has_rel else float("nan"),
        "kendall_tau": kendall_tau(y_true, y_pred),
        "n": int(y_true.size),
    }


def evaluate(pred: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Metrics of a fitted predictor (anything with ``predict``) on held-out ``X, y``; see :func:`metrics`."""
    return metrics(np.asarray(y), np.asarray(pred.predict(X)))
