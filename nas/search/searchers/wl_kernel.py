"""A Gaussian process with the Weisfeiler-Lehman subtree kernel, for surrogates over graph-structured spaces.

The kernel between two architectures is the cosine similarity of their bags of WL subtree labels
(:func:`nas.graph.wl_labels`): the share of sub-structures they have in common. As in NAS-BOWL (Ru et al.,
ICLR 2021), a GP with this kernel generalises from a few dozen evaluated cells to cells that recombine their
parts, where trees on fixed features need many more points. LINAS's opt-in ``"gbdt-wl"`` predictor averages
it with its boosted trees.

Example:
    >>> from nas.graph import Graph, wl_labels
    >>> def cell(*ops):
    ...     return wl_labels(Graph(("in", *ops, "out"), ((),) + ((0,),) * len(ops) + (tuple(range(1, len(ops) + 1)),)))
    >>> gp = WLKernelGP([cell("conv"), cell("pool"), cell("conv", "pool"), cell("skip")], [90.0, 60.0, 88.0, 70.0])
    >>> mean, std = gp.predict([cell("conv", "skip"), cell("conv")])
    >>> bool(mean[0] > 70.0), bool(std[1] < std[0])
    (True, True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["WLKernelGP"]


class WLKernelGP:
    """GP regression on bags of graph labels with the normalised dot-product (cosine) kernel plus noise.

    ``k(a, b) = c * (cos(a, b) + s0**2) + noise * [a is b]``; ``c`` and ``noise`` are fitted by maximum
    likelihood (scikit-learn's ``GaussianProcessRegressor``, targets standardised).

    Labels never seen in training cannot correlate a candidate with any training point, so rows are stored over
    the training vocabulary only, plus one column holding the rest of the candidate's unit norm: the kernel
    values are exactly those over the full label set, without building it.

    Args:
        bags: one mapping label -> count per training architecture.
        y: the objective of each.
        seed: seed of the optimiser's restarts (none are made; kept for a uniform model signature).
    """

    def __init__(self, bags: Sequence[Mapping[str, float]], y: Sequence[float] | np.ndarray, seed: int = 0):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, DotProduct, WhiteKernel

        y = np.asarray(y, dtype=np.float64)
        if len(bags) != len(y) or len(y) < 2:
            raise ValueError(
                f"WLKernelGP needs one bag per target and at least 2 points, got {len(bags)} / {len(y)}"
            )
        self._vocab: dict[str, int] = {}
        for bag in bags:
            for label in bag:
                self._vocab.setdefault(label, len(self._vocab))
        kernel = ConstantKernel(1.0) * DotProduct(sigma_0=1e-3, sigma_0_bounds="fixed") + WhiteKernel(0.1)
        gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed)
        with warnings.catch_warnings():
            # a noise level at its lower bound (targets the kernel explains exactly) is fine, not worth a warning
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._gp = gp.fit(self._rows(bags), y)

    def _rows(self, bags: Sequence[Mapping[str, float]]) -> np.ndarray:
        Z = np.zeros((len(bags), len(self._vocab) + 1))
        for r, bag in enumerate(bags):
            norm = float(np.sqrt(sum(float(v) ** 2 for v in bag.values())))
            if norm == 0.0:
                Z[r, -1] = 1.0  # an empty graph shares nothing with anything
                continue
            for label, v in bag.items():
                k = self._vocab.get(label)
                if k is not None:
                    Z[r, k] = float(v) / norm
            Z[r, -1] = np.sqrt(max(0.0, 1.0 - float(Z[r, :-1] @ Z[r, :-1])))
        return Z

    def predict(self, bags: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (including the fitted noise) of each bag."""
        mean, std = self._gp.predict(self._rows(bags), return_std=True)
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
