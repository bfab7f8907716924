"""Latency (and accuracy) predictors: arrays in, arrays out, on numpy and scikit-learn only.

``fit(X, y, kind=...)`` returns a :class:`Predictor` whose inference runs in numpy from stored parameters;
``save`` writes JSON and ``load`` reads it without executing anything (no pickle). ``evaluate`` gives rmse,
mape (%), within_5pct, within_10pct and Kendall's tau. This package does not import ``nas``: features come from
``space.features(cfg)`` on the caller's side.

Example:
    >>> import numpy as np, predictors
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 2, (300, 6)).astype(float)
    >>> y = 1.0 + X @ [0.5, 1.0, 2.0, 0.0, 0.3, 1.5]
    >>> pred = predictors.fit(X[:200], y[:200], kind="ridge", target="linear", space="toy")
    >>> predictors.evaluate(pred, X[200:], y[200:])["within_10pct"]
    1.0
"""

from __future__ import annotations

from predictors.core import FORMAT, FORMAT_VERSION, KINDS, Predictor, fit, load
from predictors.metrics import evaluate, kendall_tau, metrics
from predictors.models import PredictorFormatError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "KINDS",
    "Predictor",
    "PredictorFormatError",
    "evaluate",
    "fit",
    "kendall_tau",
    "load",
    "metrics",
]
