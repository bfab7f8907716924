"""Is one subnet really more accurate than another, or did the test set happen to favour it?

Subnets of one supernet often differ by a few tenths of a point, about what the test set's sampling moves an
accuracy by (0.14 points for 98% on 10,000 images). Both functions take *per-example correctness* (bool arrays
from :func:`nas.evaluation.subnet_correct`, one entry per test example, the same examples for every subnet) and
compare subnets on the same images, which is far more sensitive than comparing two accuracies:

* :func:`paired_difference`: the accuracy difference of two subnets, its standard error and the exact McNemar
  test (only the examples one subnet gets right and the other wrong carry information).
* :func:`bootstrap_between`: how often a set of subnets would all land between a lower and an upper one (the
  min and max subnets of a supernet) on a test set redrawn from the same distribution.

Example:
    >>> import numpy as np
    >>> a = np.array([1, 1, 1, 1, 0, 1, 1, 1], bool)
    >>> b = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
    >>> d = paired_difference(a, b)
    >>> round(d.difference, 1), d.a_only, d.b_only, d.p_value
    (25.0, 2, 0, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BetweenBootstrap", "PairedDifference", "bootstrap_between", "paired_difference"]


def _correctness(x: Any, what: str) -> np.ndarray:
    """``x`` (a bool/0-1 array or tensor, one entry per example) as a 1-d bool array; refuses anything else."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{what}: expected a 1-d array of per-example correctness, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(
                f"{what}: per-example correctness must be bool or 0/1 (nas.evaluation.subnet_correct)"
            )
        arr = arr.astype(bool)
    return arr


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same examples, in percentage points.

    ``a_only`` / ``b_only``: examples only ``a`` / only ``b`` classifies correctly; ``sd``: the standard error
    of ``difference`` over redrawn test sets; ``p_value``: exact two-sided McNemar test of "equally accurate".
    """

    difference: float
    a_only: int
    b_only: int
    sd: float
    p_value: float


def _mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial test of ``a_only`` successes in ``a_only + b_only`` fair coin flips."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    # Integers up to the one division, which Python rounds correctly however large they are (2**n as a float
    # would overflow beyond n = 1,023).
    return min(1.0, 2 * tail / 2**n)


def paired_difference(a: Any, b: Any) -> PairedDifference:
    """Compare two subnets' per-example correctness on the same examples (see :class:`PairedDifference`).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> truth = rng.random(10_000) < 0.98
        >>> flipped = truth.copy(); flipped[np.flatnonzero(truth)[:30]] = False  # 30 fewer right
        >>> d = paired_difference(truth, flipped)
        >>> round(d.difference, 2), d.a_only - d.b_only, d.p_value < 1e-6
        (0.3, 30, True)
    """
    a, b = _correctness(a, "a"), _correctness(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} examples and b {len(b)}: compare the subnets on the same examples")
    n = len(a)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    mean = (a_only - b_only) / n
    variance = (a_only + b_only) / n - mean**2  # of the per-example difference, which is -1, 0 or +1
    return PairedDifference(
        difference=100.0 * mean,
        a_only=a_only,
        b_only=b_only,
        sd=100.0 * math.sqrt(max(variance, 0.0) / n),
        p_value=_mcnemar_exact(a_only, b_only),
    )


@dataclass(frozen=True)
class BetweenBootstrap:
    """How many of the ``others`` land between ``lo`` and ``hi`` (inclusive), as measured and when redrawn.

    ``observed``: on the examples as given; ``all_between``: the fraction of ``rounds`` redrawn test sets
    (examples drawn with replacement, the same draw for every subnet) on which every one does;
    ``count_median``, ``count_low``, ``count_high``: the median, 5th and 95th percentile of the count.
    """

    observed: int
    total: int
    all_between: float
    count_median: float
    count_low: float
    count_high: float
    rounds: int


def bootstrap_between(
    lo: Any, hi: Any, others: Sequence[Any], rounds: int = 2000, seed: int = 0
) -> BetweenBootstrap:
    """Paired bootstrap of "every one of ``others`` is at least as accurate as ``lo`` and at most ``hi``".

    It separates what a supernet's training determined from the luck of one test set: a test set of the same
    size, drawn again, puts all of them between in ``all_between`` of the cases.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> lo = rng.random(10_000) < 0.975
        >>> hi = lo | (rng.random(10_000) < 0.5)      # right wherever lo is, and on half of the rest
        >>> mid = lo | (rng.random(10_000) < 0.25)
        >>> r = bootstrap_between(lo, hi, [mid, mid], rounds=200)
        >>> r.observed, r.total, r.all_between
        (2, 2, 1.0)
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: need at least 1")
    if len(others) == 0:
        raise ValueError("others: no subnets to place between lo and hi")
    columns = [_correctness(lo, "lo"), _correctness(hi, "hi")]
    columns += [_correctness(o, f"others[{i}]") for i, o in enumerate(others)]
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(
            f"lo, hi and others have {sorted({len(c) for c in columns})} examples: "
            "all must be measured on the same examples"
        )
    correct = np.stack(columns, axis=1).astype(np.float64)  # examples x (lo, hi, others...)

    def between(acc: np.ndarray) -> np.ndarray:  # acc: draws x subnets -> count per draw
        return ((acc[:, 2:] >= acc[:, :1]) & (acc[:, 2:] <= acc[:, 1:2])).sum(axis=1)

    observed = int(between(correct.mean(axis=0, keepdims=True))[0])
    rng = np.random.default_rng(seed)
    counts = []
    chunk = max(1, min(rounds, 4_000_000 // n))  # draws at a time: their multiplicities fit in ~32 MB
    for start in range(0, rounds, chunk):
        # Each redrawn test set as multiplicities of the original examples, so accuracies are one matmul.
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, rounds - start))
        counts.append(between(weights @ correct / n))
    count = np.concatenate(counts)
    k = len(others)
    return BetweenBootstrap(
        observed=observed,
        total=k,
        all_between=float((count == k).mean()),
        count_median=float(np.median(count)),
        count_low=float(np.percentile(count, 5)),
        count_high=float(np.percentile(count, 95)),
        rounds=rounds,
    )
