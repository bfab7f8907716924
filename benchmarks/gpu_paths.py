"""The GPU paths against their CPU counterparts: the non-dominated filter, 2:4 sparse layers, and profiling.

Three measurements, each skipped with a line saying why when this machine cannot run it:

1. ``nas.pareto.nondominated_mask`` with ``backend="cupy"`` vs ``"numpy"`` on random integer objectives (many
   ties) for 2 and 3 objectives and 10^4 to 10^6 points: median wall time of 3 runs (the cupy time includes the
   transfer both ways and one warm-up call first), and whether both masks are identical.
2. ``nas.semi_structured.to_semi_structured`` on the max subnet of the ``vit`` ``tiny`` preset (AutoFormer-T,
   224 px) whose ``nn.Linear`` weights were pruned to 2:4 by magnitude: latency of the dense float16 model and of
   the 2:4 one per batch size, run eagerly and replayed as CUDA graphs (``nas.semi_structured.latency_ms``:
   CUDA events, median of 20 after 5 warm-ups), and the largest logit difference.
3. ``nas.hw.profile(backend="cuda")`` on 8 random ``mobilenetv3`` ``small`` subnets: median latency, CV, and
   the same configs with the torch CPU backend for scale.

Usage:
    python benchmarks/gpu_paths.py [--sizes 10000 100000 1000000] [--batches 1 64 256 1024] [--skip-profile]

Writes benchmarks/results/gpu_paths.json (machine, GPU, versions, every number printed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import describe, machine, write_json

from nas import pareto, semi_structured
from nas.ops.sparse import sparsity_mask


def _cupy_usable() -> str | None:
    """``None`` when cupy runs here, else why not."""
    try:
        import cupy

        if not cupy.cuda.is_available():
            return "cupy imports but finds no CUDA device"
    except Exception as exc:
        return f"cupy unusable: {type(exc).__name__}: {exc}"
    return None


def _median_time(fn: Any, runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_pareto(sizes: list[int]) -> list[dict[str, Any]]:
    why = _cupy_usable()
    rows = []
    rng = np.random.default_rng(0)
    for m in (2, 3):
        for n in sizes:
            F = rng.integers(0, 1000, size=(n, m)).astype(np.float64)
            t_np, mask_np = _median_time(lambda F=F: pareto.nondominated_mask(F, backend="numpy"), 3)
            row: dict[str, Any] = {"objectives": m, "points": n, "numpy_s": t_np, "front": int(mask_np.sum())}
            if why is None:
                pareto.nondominated_mask(F, backend="cupy")  # warm-up: kernel compilation, memory pool
                t_cp, mask_cp = _median_time(lambda F=F: pareto.nondominated_mask(F, backend="cupy"), 3)
                row.update(cupy_s=t_cp, identical=bool(np.array_equal(mask_np, mask_cp)))
            rows.append(row)
            cupy = f"cupy {row['cupy_s'] * 1e3:9.1f} ms  identical {row['identical']}" if why is None else why
            print(f"  m={m} n={n:>9,}  numpy {t_np * 1e3:9.1f} ms  {cupy}  front {row['front']}", flush=True)
    return rows


def bench_2to4(batches: list[int]) -> dict[str, Any]:
    if not semi_structured.cuda_supports_2to4():
        print("  skipped: needs an NVIDIA GPU of compute capability 8.0+")
        return {"skipped": "no GPU with sparse tensor cores"}
    from search_spaces import vit

    net = vit.supernet("tiny", num_classes=1000)
    cfg = net.space.max()
    model = net.extract(cfg).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.weight.shape[1] % 4 == 0:
                module.weight.mul_(sparsity_mask(module.weight, "2:4"))
    fast, report = semi_structured.to_semi_structured(model)
    dense = model.to(device="cuda", dtype=torch.float16).eval()
    converted = sum(how == "2:4" for how in report.values())
    print(f"  vit tiny max subnet: {converted} of {len(report)} 2:4 linear layers converted")
    rows = []
    for b in batches:
        x = torch.randn(b, *net.input_shape(cfg)[1:], device="cuda", dtype=torch.float16)
        with torch.no_grad():
            diff = float((fast(x).float() - dense(x).float()).abs().max())
            scale = float(dense(x).float().abs().max())
        t_dense, t_sparse = semi_structured.latency_ms(dense, x), semi_structured.latency_ms(fast, x)
        row = {
            "batch": b,
            "dense_ms": t_dense,
            "sparse_ms": t_sparse,
            "max_abs_diff": diff,
            "logit_scale": scale,
        }
        try:
            g_dense, g_sparse = semi_structured.CudaGraph(dense, x), semi_structured.CudaGraph(fast, x)
            row["graph_dense_ms"] = semi_structured.latency_ms(g_dense, x)
            row["graph_sparse_ms"] = semi_structured.latency_ms(g_sparse, x)
            graphed = (
                f"  | CUDA graphs: dense {row['graph_dense_ms']:8.3f} ms  2:4 {row['graph_sparse_ms']:8.3f} ms  "
                f"x{row['graph_dense_ms'] / row['graph_sparse_ms']:5.2f}"
            )
            del g_dense, g_sparse
        except RuntimeError as exc:
            row["graph_error"] = str(exc)
            graphed = f"  | CUDA graph capture failed: {str(exc)[:120]}"
        rows.append(row)
        print(
            f"  batch {b:>4}: eager dense fp16 {t_dense:8.3f} ms  2:4 {t_sparse:8.3f} ms  "
            f"x{t_dense / t_sparse:5.2f}{graphed}  max |diff| {diff:.4f} (logits up to {scale:.2f})",
            flush=True,
        )
    return {"model": "vit tiny max", "converted": converted, "eligible": len(report), "rows": rows}


def bench_profile(n: int) -> dict[str, Any]:
    if not torch.cuda.is_available():
        print("  skipped: no CUDA GPU")
        return {"skipped": "no CUDA GPU"}
    from nas.hw import profile
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small")
    configs = [net.space.max(), *net.space.samples(n - 1, seed=0, unique=True)]
    out = {}
    for backend in ("cuda", "torch"):
        start = time.perf_counter()
        p = profile(net, configs, backend=backend, repeats=20, rounds=2, threads=1, progress=False)
        wall = time.perf_counter() - start
        out[backend] = {
            "median_ms": [float(v) for v in p.latency_ms],
            "cv": [float(v) for v in p.latency_cv],
            "wall_s": wall,
        }
        print(
            f"  {backend:>5}: latency {min(p.latency_ms):.3f}-{max(p.latency_ms):.3f} ms, "
            f"median CV {float(np.median(p.latency_cv)):.3f}, {wall:.1f} s for {n} configs",
            flush=True,
        )
    out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256, 1024])
    parser.add_argument("--configs", type=int, default=8, help="mobilenetv3 subnets to profile")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_paths.json"))
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    print(f"GPU: {gpu or 'none'}; torch {torch.__version__}")
    print("non-dominated filter, numpy vs cupy:")
    result: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__, "pareto": bench_pareto(args.sizes)}
    print("2:4 semi-structured sparse vs dense float16:")
    result["semi_structured_2to4"] = bench_2to4(args.batches)
    if not args.skip_profile:
        print("nas.hw.profile, cuda vs torch (CPU, 1 thread) backends:")
        result["profile"] = bench_profile(args.configs)
    result["machine"] = machine()
    path = write_json(args.out, result)
    print(f"{describe(result['machine'])}; wrote {path}")


if __name__ == "__main__":
    main()
