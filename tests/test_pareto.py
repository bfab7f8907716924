"""nas.pareto: non-dominated filter and hypervolume against brute force and pymoo."""

from __future__ import annotations

import numpy as np
import pytest

from nas import pareto
from nas.pareto import hypervolume, nondominated_mask, pareto_front


def brute_mask(F: np.ndarray) -> np.ndarray:
    out = np.ones(len(F), dtype=bool)
    for i in range(len(F)):
        dominated_by = (F[i] >= F).all(axis=1) & (F[i] != F).any(axis=1)
        out[i] = not dominated_by.any()
    return out


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_mask_matches_brute_force_with_ties(m):
    rng = np.random.default_rng(m)
    for _ in range(150):
        # Small integer grids give many ties and duplicates, the hard cases for sweeps.
        F = rng.integers(0, 5, size=(int(rng.integers(1, 50)), m)).astype(float)
        np.testing.assert_array_equal(nondominated_mask(F), brute_mask(F))


def test_mask_large_random_and_all_nondominated():
    rng = np.random.default_rng(0)
    for m in (2, 3):
        F = rng.random((3000, m))
        np.testing.assert_array_equal(nondominated_mask(F), brute_mask(F))
        S = np.abs(rng.normal(size=(20000, m)))
        S /= np.linalg.norm(S, axis=1, keepdims=True)  # a sphere: every point non-dominated
        assert nondominated_mask(S).all()


def test_mask_edge_cases():
    assert nondominated_mask(np.zeros((0, 2))).shape == (0,)
    assert nondominated_mask([[1.0, 2.0]]).tolist() == [True]
    assert nondominated_mask([[1, 1], [1, 1]]).tolist() == [True, True]
    with pytest.raises(ValueError, match="NaN"):
        nondominated_mask([[np.nan, 1.0]])
    with pytest.raises(ValueError, match="n_points, n_objectives"):
        nondominated_mask(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_pymoo(m):
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(10 + m)
    for _ in range(40):
        F = rng.random((int(rng.integers(1, 40)), m))
        ref = np.full(m, 1.05)
        expected = HV(ref_point=ref)(F[brute_mask(F)])
        assert hypervolume(F, ref) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_large_fronts_with_ties_match_brute_force_and_pymoo(m):
    """Thousands of integer points near a simplex: large fronts full of ties and duplicates, mixed directions.

    The small-grid test above never takes the 3-D divide and conquer past six levels with ties, nor the
    4-objective filter past its first chunk of 1024 rows; this one does both.
    """
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(20 + m)
    k = 12 if m == 4 else 30
    P = rng.integers(0, k + 1, size=(6000, m))
    P = P[P.sum(axis=1) >= k][:2500].astype(float)  # points on or above the plane sum = k: many non-dominated
    P = np.vstack([P, P[:150], P[150:300] + 1])  # exact duplicates and dominated near-copies
    P = P[rng.permutation(len(P))]
    maximised = k - P[:, 0]  # the first objective as a score to maximise ...
    P[:, 0] = -maximised  # ... enters in minimisation form, negated
    expected = brute_mask(P)
    assert 100 < expected.sum() < len(P)  # a large front, and dominated points too
    np.testing.assert_array_equal(nondominated_mask(P), expected)
    by_pymoo = np.zeros(len(P), dtype=bool)
    by_pymoo[NonDominatedSorting().do(P, only_non_dominated_front=True)] = True
    np.testing.assert_array_equal(nondominated_mask(P), by_pymoo)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_pymoo_with_ties_and_points_on_or_outside_the_box(m):
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(30 + m)
    for _ in range(40):
        # Integer grids: ties in every objective, duplicates, and points on the reference boundary or beyond it.
        F = rng.integers(-1, 6, size=(int(rng.integers(1, 60)), m)).astype(float)
        ref = rng.integers(2, 6, size=m).astype(float)
        inside = F[(ref > F).all(axis=1)]
        expected = HV(ref_point=ref)(inside) if len(inside) else 0.0
        assert hypervolume(F, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hypervolume_known_values_and_reference_handling():
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[1, 1, 1]], [2, 3, 4]) == pytest.approx(6.0)
    # Points outside the reference box add nothing; duplicates do not double count.
    assert hypervolume([[5, 0], [0, 5], [1, 1], [1, 1]], [2, 2]) == pytest.approx(1.0)
    assert hypervolume(np.zeros((0, 3)), [1, 1, 1]) == 0.0
    with pytest.raises(ValueError, match="ref has 3 entries"):
        hypervolume([[1, 1]], [2, 2, 2])


def test_hypervolume_3d_grid_monte_carlo():
    rng = np.random.default_rng(3)
    F = rng.random((300, 3))
    ref = np.array([1.0, 1.0, 1.0])
    # Exact on a staircase made of unit cubes: compare with a fine voxel count of the dominated region.
    Fg = np.floor(F * 10) / 10
    grid = (np.stack(np.meshgrid(*[np.arange(10) / 10] * 3, indexing="ij"), -1).reshape(-1, 3)) + 0.05
    covered = np.zeros(len(grid), dtype=bool)
    for p in Fg:
        covered |= (grid >= p).all(axis=1)
    assert hypervolume(Fg, ref) == pytest.approx(covered.sum() / 1000)


def test_pareto_front_sorted_distinct():
    front = pareto_front([[2, 1], [1, 2], [1, 2], [3, 3]])
    np.testing.assert_array_equal(front, [[1, 2], [2, 1]])


def test_backend_selection_without_gpu(monkeypatch):
    assert pareto.array_module("numpy") is np
    assert pareto.array_module("auto", n=10) is np  # small inputs never pay for a transfer
    with pytest.raises(ValueError, match="backend must be"):
        pareto.array_module("torch")
    try:
        import cupy

        gpu = bool(cupy.cuda.is_available())
    except Exception:
        gpu = False
    if not gpu:
        assert pareto.array_module("auto", n=10**6) is np
        with pytest.raises(RuntimeError, match="cupy"):
            pareto.array_module("cupy")


def _cupy_gpu() -> bool:
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


@pytest.mark.skipif(not _cupy_gpu(), reason="needs cupy and a CUDA GPU")
@pytest.mark.parametrize("m", [1, 2, 3])
def test_cupy_backend_gives_the_numpy_answer(m):
    """On a GPU the cupy path (sorting, dense ranks, divide and conquer) must give numpy's mask bit for bit,
    ties and duplicate rows included, and ``auto`` must take it above the transfer threshold."""
    rng = np.random.default_rng(m)
    n = pareto._GPU_MIN_POINTS + 1234
    F = rng.integers(0, 50, size=(n, m)).astype(np.float64)  # few values: many ties and duplicates
    F[-100:] = F[:100]
    expected = nondominated_mask(F, backend="numpy")
    np.testing.assert_array_equal(nondominated_mask(F, backend="cupy"), expected)
    assert pareto.array_module("auto", n=n).__name__ == "cupy"
    np.testing.assert_array_equal(nondominated_mask(F, backend="auto"), expected)
    if m >= 2:
        ref = F.max(axis=0) + 1
        assert hypervolume(F, ref, backend="cupy") == pytest.approx(hypervolume(F, ref, backend="numpy"))


@pytest.mark.parametrize("failure", ["no device", "driver error"])
def test_auto_backend_uses_numpy_when_cupy_imports_but_has_no_device(monkeypatch, failure):
    """cupy imports on machines without a GPU and fails only when used: ``auto`` must ask the driver and fall
    back to numpy, ``cupy`` must say why it cannot run."""
    import sys
    import types

    def is_available():
        if failure == "driver error":
            raise RuntimeError("cudaErrorInsufficientDriver")
        return False

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=is_available)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert pareto.array_module("auto", n=10**6) is np
    with pytest.raises(RuntimeError, match="backend='cupy' requested"):
        pareto.array_module("cupy")
    F = np.random.default_rng(0).random((pareto._GPU_MIN_POINTS + 1, 3))  # big enough to consider the GPU
    np.testing.assert_array_equal(nondominated_mask(F), nondominated_mask(F, backend="numpy"))


def test_cummin_fallback_matches_numpy():
    class NoAccumulate:  # an array module whose ufuncs lack .accumulate, like older cupy
        minimum = object()

        @staticmethod
        def asarray(x):
            return np.asarray(x)

    v = np.array([3, 1, 2, 0, 5])
    np.testing.assert_array_equal(pareto._cummin(NoAccumulate, v), [3, 1, 1, 0, 0])


def test_auto_backend_falls_back_to_numpy_when_the_gpu_fails_at_run_time(monkeypatch, caplog):
    """A device that answers the driver query and then fails (old cupy, a kernel that does not compile, no
    memory) must not end a search under ``auto``; ``cupy`` asked for explicitly still fails loudly."""
    import logging

    class BrokenGpu:  # stands in for cupy: arrays fail on first use
        @staticmethod
        def asarray(x):
            raise RuntimeError("nvrtc: error: kernel failed to compile")

    monkeypatch.setattr(
        pareto, "array_module", lambda backend="auto", n=None: np if backend == "numpy" else BrokenGpu
    )
    F = np.random.default_rng(1).random((50, 3))
    with caplog.at_level(logging.WARNING, logger="nas.pareto"):
        got = nondominated_mask(F)
    np.testing.assert_array_equal(got, nondominated_mask(F, backend="numpy"))
    assert "kernel failed to compile" in caplog.text and "using numpy" in caplog.text
    with pytest.raises(RuntimeError, match="kernel failed to compile"):
        nondominated_mask(F, backend="cupy")
