"""onnxruntime CPU latency of fp32 vs int8 (QDQ) exports of the same MobileNetV3 subnets.

For the max subnet and a few random architectures of the ``small`` preset, exports the float policy
(32-bit weights, ``model.onnx``) and the int8 policy (8-bit weights everywhere, ``model.int8.onnx`` in QDQ
form) and times both in onnxruntime on this CPU at batch 1 and 32 (interleaved, median). Also reports model
bytes (``nas.metrics.model_bytes``) and how closely the int8 ONNX model follows the fake-quant torch model
(logit cosine similarity, top-1 agreement) on the evaluation inputs.

Without ``--supernet RUN_DIR`` (a trained run from ``nas train``) the supernet is untrained and the inputs
are random, so the agreement figures only show that the pipeline is consistent; accuracy-level agreement on
MNIST needs a trained supernet and real images (``--mnist``: the bundled MNIST test set of ``nas.data``).

Usage:
    .venv/bin/python benchmarks/quant_sparse.py [--configs 3] [--threads 1] [--supernet runs/sn] [--mnist]
    .venv/bin/python benchmarks/quant_sparse.py --preset imagenet --configs 0 --samples 64

Writes benchmarks/results/quant_sparse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nas import metrics
from nas.export import export
from nas.supernet import resize_to
from search_spaces import mobilenetv3


def load_inputs(net, args) -> tuple[torch.Tensor, str]:
    """Evaluation/calibration images at the max resolution, and a description of where they came from."""
    if args.mnist:
        from nas import data

        images = data.mnist("test").tensors[0][: args.samples]  # normalised (N, 1, 28, 28) floats
        return images.float(), f"MNIST test images ({len(images)})"
    shape = net.input_shape(net.space.max(), batch_size=args.samples)
    return torch.randn(
        *shape, generator=torch.Generator().manual_seed(0)
    ), f"random N(0,1) inputs ({args.samples})"


def ort_latency(paths: dict[str, Path], x: np.ndarray, threads: int, repeats: int) -> dict[str, float]:
    """Median seconds per run of each ONNX model on ``x``, measured alternately."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {
        k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in paths.items()
    }
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(3):
            s.run(None, feeds[k])
    start = time.perf_counter()
    next(iter(sessions.values())).run(None, next(iter(feeds.values())))
    inner = max(1, int(0.05 / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            start = time.perf_counter()
            for _ in range(inner):
                s.run(None, feeds[k])
            times[k].append((time.perf_counter() - start) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small", choices=sorted(mobilenetv3.PRESETS))
    parser.add_argument("--configs", type=int, default=3, help="random architectures besides the max subnet")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samples", type=int, default=256, help="calibration / agreement inputs")
    parser.add_argument(
        "--supernet", help="a trained run directory (nas train --out DIR) built with quant=True"
    )
    parser.add_argument("--mnist", action="store_true", help="use the bundled MNIST test images (nas.data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "quant_sparse.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    began = time.perf_counter()

    if args.supernet:
        import search_spaces

        net = search_spaces.load_trained(args.supernet)
    else:
        net = mobilenetv3.supernet(args.preset, in_channels=1 if args.mnist else 3, quant=True, sparsity=True)
    if "quant" not in net.elastic_groups():
        raise SystemExit("the supernet has no quantization dimensions; build it with quant=True")
    inputs, source = load_inputs(net, args)
    quant_dims = net.elastic_groups()["quant"]
    architectures = [net.space.max(), *net.space.samples(args.configs, seed=args.seed)]

    if not args.supernet:
        # Untrained: calibrate BN statistics and 8-bit activation observers on the inputs (train-mode passes).
        net.train()
        with torch.no_grad():
            for cfg in architectures:
                for bits in (8, 32):
                    c = net.activate({**cfg, **{d: bits for d in quant_dims}})
                    for start in range(0, min(len(inputs), 64), 16):
                        net(resize_to(inputs[start : start + 16], c))
    net.eval()

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for i, arch in enumerate(architectures):
            fp32 = net.space.canonical({**arch, **{d: 32 for d in quant_dims}})
            int8 = net.space.canonical({**arch, **{d: 8 for d in quant_dims}})
            x = resize_to(inputs, int8)
            out_fp32 = export(net, fp32, Path(work) / f"fp32_{i}", formats=("safetensors", "onnx"))
            out_int8 = export(
                net, int8, Path(work) / f"int8_{i}", formats=("safetensors", "onnx-int8"), calib_data=x
            )
            verification = json.loads((out_int8 / "manifest.json").read_text())["verification"]
            for batch in args.batches:
                xb = x[:batch].numpy()
                t = ort_latency(
                    {"fp32": out_fp32 / "model.onnx", "int8": out_int8 / "model.int8.onnx"},
                    xb,
                    args.threads,
                    args.repeats,
                )
                rows.append(
                    {
                        "subnet": "max" if i == 0 else f"random{i}",
                        "key_int8": int8.key,
                        "resolution": int8["resolution"],
                        "batch": batch,
                        "fp32_ms": t["fp32"] * 1e3,
                        "int8_ms": t["int8"] * 1e3,
                        "speedup": t["fp32"] / t["int8"],
                        "macs": metrics.macs(net, fp32),
                        "bytes_fp32": metrics.model_bytes(net, fp32),
                        "bytes_int8": metrics.model_bytes(net, int8),
                        "onnx_int8_file_bytes": (out_int8 / "model.int8.onnx").stat().st_size,
                        "cosine": verification["int8_cosine_similarity"],
                        "top1_agreement": verification["int8_top1_agreement"],
                    }
                )
    elapsed = time.perf_counter() - began

    print(
        f"quant/sparse export: {net.space.name}, onnxruntime CPU, {args.threads} thread(s), inputs: {source}"
    )
    header = (
        f"{'subnet':>8} | {'res':>3} | {'batch':>5} | {'fp32 ms':>8} | {'int8 ms':>8} | {'speedup':>7} | "
        f"{'MMACs':>6} | {'KB fp32':>7} | {'KB int8':>7} | {'cosine':>6} | {'top1 agr':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['subnet']:>8} | {r['resolution']:>3} | {r['batch']:>5} | {r['fp32_ms']:>8.3f} | {r['int8_ms']:>8.3f} | "
            f"{r['speedup']:>7.2f} | {r['macs'] / 1e6:>6.2f} | {r['bytes_fp32'] / 1024:>7.1f} | "
            f"{r['bytes_int8'] / 1024:>7.1f} | {r['cosine']:>6.4f} | {r['top1_agreement']:>8.3f}"
        )
    print(f"ran {elapsed:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    payload = {
        "benchmark": "quant_sparse",
        "space": net.space.name,
        "inputs": source,
        "trained": bool(args.supernet),
        "threads": args.threads,
        "seconds": elapsed,
        "rows": rows,
    }
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
