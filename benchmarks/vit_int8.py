"""onnxruntime CPU latency and fidelity of int8 ViT exports: what ``export_onnx_int8`` quantizes in attention graphs.

For the max, the min and a few random subnets of the ``vit`` space, exports the float ONNX model and the int8
QDQ model once per ``quantize`` choice of :func:`nas.export.export_onnx_int8` (``all``: every op type
onnxruntime's quantizer knows, as for the conv spaces; ``weights``: only Conv / Gemm / MatMul with a weight,
MatMul / Gemm outputs float, which ``auto`` picks for graphs with attention) and times each at every batch
size with one intra-op thread, as the calling thread's CPU time (``clock="thread_cpu"`` of ``nas profile``,
so other jobs on a shared machine stay out of the numbers), all models interleaved in a new random order per
round. Fidelity: top-1 agreement and mean logit cosine of each ONNX model with the float torch model on
``--samples`` held-out images (``small``: the bundled MNIST test set, calibrated on MNIST training images as
``nas export`` does; ``tiny``: random 224 px inputs), and MNIST accuracy for the ``small`` preset.

Without ``--supernet RUN_DIR`` (``nas train --space vit --data mnist --out RUN_DIR``) the supernet is
untrained: its logits are nearly flat, so top-1 agreement understates what a trained model keeps.

Usage:
    .venv/bin/python benchmarks/vit_int8.py [--supernet runs/vit] [--configs 3] [--batches 1,32]
    .venv/bin/python benchmarks/vit_int8.py --preset tiny --configs 0 --no-min --batches 1 --samples 16

Writes benchmarks/results/vit_int8.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from _common import describe, machine, write_json

import search_spaces
from nas import export as nas_export
from nas.data import mnist
from nas.hw.measure import _OrtRunner, latency_stats
from nas.supernet import resize_to
from search_spaces import vit

RESULTS = Path(__file__).parent / "results" / "vit_int8.json"


def session(path: Path) -> Any:
    """A one-thread onnxruntime CPU session with ``nas profile``'s settings."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path.read_bytes(), opts, providers=["CPUExecutionProvider"])


def fidelity(expected: np.ndarray, got: np.ndarray, labels: torch.Tensor | None) -> dict[str, float]:
    """Top-1 agreement and mean logit cosine of ``got`` with ``expected`` (and accuracy, given labels)."""
    cosine = (expected * got).sum(1) / (
        np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1) + 1e-12
    )
    out = {
        "top1_agreement": float((expected.argmax(1) == got.argmax(1)).mean()),
        "cosine": float(cosine.mean()),
    }
    if labels is not None:
        out["accuracy"] = float((got.argmax(1) == labels.numpy()).mean())
    return out


def data(preset: str, samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Calibration images, evaluation images and their labels (None for random inputs)."""
    if preset == "small":
        calib = mnist("train").tensors[0][:256]
        x, y = mnist("test").tensors
        return calib, x[:samples], y[:samples]
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, 224, 224, generator=gen), torch.randn(samples, 3, 224, 224, generator=gen), None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small", choices=sorted(vit.PRESETS))
    p.add_argument("--supernet", help="a trained vit run directory (nas train --space vit --data mnist)")
    p.add_argument("--configs", type=int, default=3, help="random subnets besides the max and min ones")
    p.add_argument("--no-min", action="store_true", help="leave out the min subnet")
    p.add_argument("--quantize", default="all,weights", help="export_onnx_int8 quantize choices to compare")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--rounds", type=int, default=20, help="interleaved passes over all models")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per model per round")
    p.add_argument("--samples", type=int, default=256, help="held-out images for the fidelity figures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS), help="JSON file to write (default: %(default)s)")
    args = p.parse_args()
    began = time.perf_counter()
    torch.set_num_threads(1)
    ort.set_default_logger_severity(3)  # the quantizer's per-tensor notes
    if args.supernet:
        net = search_spaces.load_trained(args.supernet).eval()
    else:
        torch.manual_seed(args.seed)
        net = vit.supernet(
            args.preset, **({"num_classes": 10, "in_channels": 1} if args.preset == "small" else {})
        )
        net.eval()
    configs = {"max": net.space.max(), **({} if args.no_min else {"min": net.space.min()})}
    configs.update({f"random{i}": net.space.sample(args.seed + 100 + i) for i in range(args.configs)})
    calib, images, labels = data(args.preset, args.samples)
    variants = ["fp32", *args.quantize.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    runners: dict[tuple[str, str, int], _OrtRunner] = {}
    results: dict[str, Any] = {"subnets": {}}
    with tempfile.TemporaryDirectory() as work:
        for name, cfg in configs.items():
            model = net.extract(cfg).eval()
            cal, ev = resize_to(calib, cfg), resize_to(images, cfg)
            with torch.no_grad():
                expected = torch.cat([model(part) for part in ev.split(64)]).numpy()
            row: dict[str, Any] = {"config": dict(cfg)}
            for v in variants:
                path = Path(work) / f"{name}.{v}.onnx"
                t0 = time.perf_counter()
                if v == "fp32":
                    nas_export._write_onnx(model, cal[:2], path)
                else:
                    row[f"{v}_quantize"] = nas_export.export_onnx_int8(model, path, cal, quantize=v)[
                        "int8_quantize"
                    ]
                row[f"{v}_export_s"] = round(time.perf_counter() - t0, 2)
                sess = session(path)
                got = sess.run(None, {sess.get_inputs()[0].name: ev.numpy()})[0]
                row[v] = fidelity(expected, got, labels)
                for b in batches:
                    x = ev.numpy()[np.arange(b) % len(ev)]
                    runner = _OrtRunner(sess, np.ascontiguousarray(x))
                    runner.clock = time.thread_time_ns
                    runners[(name, v, b)] = runner
            results["subnets"][name] = row
            print(f"[vit_int8] exported {name}", file=sys.stderr, flush=True)
        samples: dict[tuple[str, str, int], list[float]] = {k: [] for k in runners}
        keys, rng = list(runners), np.random.default_rng(args.seed)
        for rnd in range(args.rounds):
            for i in rng.permutation(len(keys)):
                runner = runners[keys[int(i)]]
                runner()
                runner()  # warm-up
                samples[keys[int(i)]].extend(runner.time(args.repeats))
            print(f"[vit_int8] round {rnd + 1}/{args.rounds}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for (name, v, b), times in samples.items():
        stats = latency_stats(times)
        results["subnets"][name][v].update(
            {f"batch{b}_ms": stats["median_ms"], f"batch{b}_p10_ms": stats["p10_ms"]}
        )
    for b in batches:
        print(f"\nbatch {b}: median thread-CPU ms (x fp32), 1 thread")
        # a cell is "{ms:>10.3f} ({ratio:.2f})", 17 characters
        print(f"{'subnet':<11}" + "".join(f"{v:>17}" for v in variants))
        for name, row in results["subnets"].items():
            ms = {v: row[v][f"batch{b}_ms"] for v in variants}
            print(f"{name:<11}" + "".join(f"{ms[v]:>10.3f} ({ms[v] / ms['fp32']:.2f})" for v in variants))
    print(f"\nvs the float torch model on {len(images)} images: top-1 agreement / logit cosine")
    for name, row in results["subnets"].items():
        print(
            f"{name:<11}"
            + "".join(f"  {v}: {row[v]['top1_agreement']:.4f} / {row[v]['cosine']:.5f}" for v in variants)
        )
    elapsed = time.perf_counter() - began
    host = machine()
    print(f"\nran {elapsed:.0f} s on {describe(host)}")
    results.update(
        vars(args),
        load_average_end=os.getloadavg(),
        onnxruntime=ort.__version__,
        machine=host,
        seconds=elapsed,
    )
    print(f"wrote {write_json(args.out, results)}")


if __name__ == "__main__":
    main()
