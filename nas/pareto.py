"""Non-dominated sorting and hypervolume for minimisation problems.

Every function takes an ``(n, m)`` array of objective values where smaller is better in every column (negate
maximised objectives first). Work runs on numpy; when ``cupy`` is installed and a CUDA device is usable the
non-dominated filter runs on the GPU (``backend="auto"``), with the same results.

Algorithms, chosen for 1e5+ points:

* non-dominated mask: 2 objectives by sort + sweep, O(n log n); 3 objectives by an offline divide-and-conquer
  (CDQ) dominance count, O(n log^2 n), fully vectorised per level; more objectives by a chunked filter against the
  growing front (O(n * front)).
* hypervolume: 2 objectives by sort + sum of rectangles; 3 objectives by a sweep over the third objective that
  maintains the 2-D staircase (Beume et al.'s HV3D idea), O(n log n) plus list updates; more objectives through
  pymoo's exact hypervolume.

Example:
    >>> import numpy as np
    >>> F = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    >>> nondominated_mask(F).tolist()
    [True, True, True, False]
    >>> float(hypervolume(F, ref=[4.0, 4.0]))
    6.0
"""

from __future__ import annotations

import bisect
import logging
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["array_module", "hypervolume", "nondominated_mask", "pareto_front"]

_GPU_MIN_POINTS = 20_000  # below this the transfer costs more than the GPU saves

log = logging.getLogger(__name__)


def array_module(backend: str = "auto", n: int | None = None) -> ModuleType:
    """The array module to use: ``numpy``, or ``cupy`` when requested/available.

    ``backend="auto"`` picks cupy only when it imports, a CUDA device answers and (if given) ``n`` is large
    enough to pay for the transfer; ``"numpy"`` forces the CPU; ``"cupy"`` forces the GPU and fails loudly
    when it is not usable.
    """
    if backend == "numpy":
        return np
    if backend not in ("auto", "cupy"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'cupy', got {backend!r}")
    if backend == "auto" and n is not None and n < _GPU_MIN_POINTS:
        return np
    try:
        import cupy

        # cupy imports fine on machines without a GPU and only fails when used; ask the driver first.
        usable = bool(cupy.cuda.is_available())
    except Exception as exc:
        if backend == "cupy":
            raise RuntimeError(f"backend='cupy' requested but cupy is not usable here: {exc}") from None
        return np
    if not usable:
        if backend == "cupy":
            raise RuntimeError("backend='cupy' requested but no CUDA device is available")
        return np
    return cupy


def _as_2d(F: Any, name: str = "F") -> np.ndarray:
    arr = np.asarray(F.get() if hasattr(F, "get") else F, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1) if arr.size else arr.reshape(0, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (n_points, n_objectives) array, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN; drop or replace failed evaluations first")
    return arr


def _to_host(x: Any) -> np.ndarray:
    return x.get() if hasattr(x, "get") else np.asarray(x)


def _dense_rank(xp: ModuleType, v: Any) -> Any:
    """0-based dense rank of each value (equal values share a rank)."""
    uniq = xp.unique(v)
    return xp.searchsorted(uniq, v).astype(xp.int64)


def _cummin(xp: ModuleType, v: Any) -> Any:
    acc = getattr(xp.minimum, "accumulate", None)
    if acc is not None:
        try:
            return acc(v)
        except (NotImplementedError, TypeError):  # older cupy lacks ufunc.accumulate
            pass
    return xp.asarray(np.minimum.accumulate(_to_host(v)))


def _unique_rows_lex(xp: ModuleType, F: Any) -> tuple[Any, Any]:
    """Lexicographically sorted distinct rows of ``F`` and, for each input row, the index of its distinct row."""
    order = xp.lexsort(F.T[::-1])  # lexsort keys: last one is primary, so reverse the columns
    S = F[order]
    new = xp.ones(S.shape[0], dtype=bool)
    if S.shape[0] > 1:
        new[1:] = xp.any(S[1:] != S[:-1], axis=1)
    group = xp.cumsum(new) - 1
    inverse = xp.empty_like(group)
    inverse[order] = group
    return S[new], inverse


def _nd_sorted_2d(xp: ModuleType, U: Any) -> Any:
    """Mask of non-dominated rows of distinct, lexicographically sorted 2-objective points."""
    n = U.shape[0]
    keep = xp.ones(n, dtype=bool)
    if n > 1:
        # An earlier distinct row has f1 <= mine; it dominates me iff its f2 <= mine.
        prev_min = _cummin(xp, U[:-1, 1])
        keep[1:] = prev_min > U[1:, 1]
    return keep


def _nd_sorted_3d(xp: ModuleType, U: Any) -> Any:
    """Mask of non-dominated rows of distinct, lexicographically sorted 3-objective points.

    Row j dominates row i exactly when j < i, f2_j <= f2_i and f3_j <= f3_i (rows are distinct and sorted, so
    f1_j <= f1_i already holds). For every i we need min{f3_j : j < i, f2_j <= f2_i}: an offline 2-D dominance
    query answered by divide and conquer over the index, one vectorised pass per level.
    """
    n = U.shape[0]
    if n <= 1:
        return xp.ones(n, dtype=bool)
    r2 = _dense_rank(xp, U[:, 1])
    r3 = _dense_rank(xp, U[:, 2])
    big = n + 1  # r3 < big; sentinel "no dominator" value is >= big
    best = xp.full(n, big, dtype=xp.int64)  # min r3 over dominance candidates found so far
    idx = xp.arange(n, dtype=xp.int64)
    h = 1
    while h < n:
        block = idx // (2 * h)
        left = (idx % (2 * h)) < h
        n_blocks = int(_to_host(block[-1])) + 1
        li = idx[left]
        ri = idx[~left]
        if ri.shape[0]:
            # Left points sorted by (block, r2); running min of r3 restarted per block by an offset that makes
            # every later block's values smaller than all earlier ones.
            lkey = block[li] * big + r2[li]
            lorder = xp.argsort(lkey, kind="stable")
            lkey_sorted = lkey[lorder]
            lval = r3[li][lorder] + (n_blocks - block[li][lorder]) * big
            lmin = _cummin(xp, lval)
            rkey = block[ri] * big + r2[ri]
            pos = xp.searchsorted(lkey_sorted, rkey, side="right") - 1
            valid = pos >= 0
            posc = xp.maximum(pos, 0)
            same_block = valid & (lkey_sorted[posc] // big == block[ri])
            cand = lmin[posc] - (n_blocks - block[ri]) * big
            cand = xp.where(same_block, cand, big)
            best[ri] = xp.minimum(best[ri], cand)
        h *= 2
    return best > r3


def _nd_generic(F: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Non-dominated mask for any number of objectives (rows distinct, lexicographically sorted)."""
    n, m = F.shape
    keep = np.zeros(n, dtype=bool)
    front = np.zeros((0, m))
    for start in range(0, n, chunk):
        block = F[start : start + chunk]
        # Any dominator comes earlier in lexicographic order, and some non-dominated row dominates it too, so
        # comparing with the front found so far and with earlier rows of the same chunk suffices.
        dom = np.zeros(block.shape[0], dtype=bool)
        if front.shape[0]:
            le = (front[None, :, :] <= block[:, None, :]).all(axis=2)
            dom |= le.any(axis=1)
        le_in = (block[None, :, :] <= block[:, None, :]).all(axis=2)  # [i, j]: row j weakly dominates row i
        le_in &= np.tri(block.shape[0], k=-1, dtype=bool)  # only earlier rows j < i (distinct rows)
        dom |= le_in.any(axis=1)
        keep[start : start + block.shape[0]] = ~dom
        front = np.vstack([front, block[~dom]])
    return keep


def nondominated_mask(F: Any, backend: str = "auto") -> np.ndarray:
    """Boolean mask of the rows of ``F`` that no other row dominates (minimisation).

    Row ``a`` dominates row ``b`` when ``a <= b`` in every objective and ``a != b``; identical rows therefore
    share the same status. Returns a numpy array whatever the backend.

    Example:
        >>> nondominated_mask([[0, 1], [1, 0], [1, 1], [0, 1]]).tolist()
        [True, True, False, True]
    """
    F = _as_2d(F)
    n, m = F.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    xp = array_module(backend, n) if m <= 3 else np
    if xp is np or backend != "auto":
        return _nondominated_mask(xp, F)
    try:
        return _nondominated_mask(xp, F)
    except Exception as exc:  # any GPU failure: a kernel that does not compile, out of memory, an old cupy
        # `auto` promised the same answer as numpy, not a GPU: a device that answers the driver query but then
        # fails (an old cupy, a kernel that does not compile, no memory left) must not end a search.
        log.warning("the GPU non-dominated filter failed (%s: %s); using numpy", type(exc).__name__, exc)
        return _nondominated_mask(np, F)


def _nondominated_mask(xp: ModuleType, F: np.ndarray) -> np.ndarray:
    """:func:`nondominated_mask` on the array module ``xp`` (``F`` non-empty, 2-D)."""
    m = F.shape[1]
    Fx = xp.asarray(F)
    U, inverse = _unique_rows_lex(xp, Fx)
    if m == 1:
        keep_u = U[:, 0] == U[0, 0]
    elif m == 2:
        keep_u = _nd_sorted_2d(xp, U)
    elif m == 3:
        keep_u = _nd_sorted_3d(xp, U)
    else:
        keep_u = _nd_generic(_to_host(U))
    return _to_host(xp.asarray(keep_u)[inverse]).astype(bool)


def pareto_front(F: Any, backend: str = "auto") -> np.ndarray:
    """The distinct non-dominated rows of ``F``, sorted lexicographically."""
    F = _as_2d(F)
    if F.shape[0] == 0:
        return F
    front = np.unique(F[nondominated_mask(F, backend)], axis=0)
    return front


def _hv2d(P: np.ndarray, ref: np.ndarray) -> float:
    P = P[np.lexsort((P[:, 1], P[:, 0]))]
    keep = _nd_sorted_2d(np, P)
    P = P[keep]  # f1 increasing, f2 strictly decreasing
    widths = np.diff(np.append(P[:, 0], ref[0]))
    return float(np.sum(widths * (ref[1] - P[:, 1])))


def _hv3d(P: np.ndarray, ref: np.ndarray) -> float:
    """Sweep over f3; keep the 2-D staircase of the points seen so far and its dominated area."""
    P = P[np.argsort(P[:, 2], kind="stable")]
    xs: list[float] = []  # staircase: x increasing, y strictly decreasing
    ys: list[float] = []
    rx, ry, rz = float(ref[0]), float(ref[1]), float(ref[2])
    area = 0.0
    volume = 0.0
    for i in range(P.shape[0]):
        x, y, z = float(P[i, 0]), float(P[i, 1]), float(P[i, 2])
        if i:
            volume += area * (z - float(P[i - 1, 2]))
        k = bisect.bisect_right(xs, x)  # xs[:k] <= x
        if k and ys[k - 1] <= y:
            continue  # dominated in (f1, f2) by a point already swept
        upper = ys[k - 1] if k else ry  # height the staircase already covers just right of x
        j = k
        left = x
        added = 0.0
        while j < len(xs) and ys[j] >= y:  # points p now dominates in 2-D
            added += (xs[j] - left) * (upper - y)
            left, upper = xs[j], ys[j]
            j += 1
        right = xs[j] if j < len(xs) else rx
        added += (right - left) * (upper - y)
        area += added
        xs[k:j] = [x]
        ys[k:j] = [y]
    volume += area * (rz - float(P[-1, 2]))
    return volume


def hypervolume(F: Any, ref: Any, backend: str = "auto") -> float:
    """Volume dominated by the rows of ``F`` and bounded by the reference point ``ref`` (minimisation).

    Rows that are not strictly better than ``ref`` in every objective add nothing. ``backend`` only affects the
    non-dominated filter used for more than 3 objectives; 2-D and 3-D sweeps run on the CPU.

    Example:
        >>> hypervolume([[1, 1, 1]], ref=[2, 3, 4])
        6.0
    """
    F = _as_2d(F)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if F.shape[0] and F.shape[1] != ref.shape[0]:
        raise ValueError(f"ref has {ref.shape[0]} entries but F has {F.shape[1]} objectives")
    if not np.isfinite(ref).all():
        raise ValueError(f"ref must be finite, got {ref.tolist()}")
    P = F[(ref > F).all(axis=1)] if F.shape[0] else F
    if P.shape[0] == 0:
        return 0.0
    m = P.shape[1]
    if m == 1:
        return float(ref[0] - P[:, 0].min())
    if m == 2:
        return _hv2d(P, ref)
    if m == 3:
        return _hv3d(P, ref)
    from pymoo.indicators.hv import HV

    P = P[nondominated_mask(P, backend)]
    return float(HV(ref_point=ref)(P))
