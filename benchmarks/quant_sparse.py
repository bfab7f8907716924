"""onnxruntime CPU latency of fp32 vs int8 (QDQ) exports of the same MobileNetV3 subnets.

For the max subnet and a few random architectures of the ``small`` preset, exports the float policy
(32-bit weights, ``model.onnx``) and the int8 policy (8-bit weights everywhere, ``model.int8.onnx`` in QDQ
form) and times both in onnxruntime on this CPU at batch 1 and 32 (interleaved, median; with one thread the
calling thread's CPU time, see ``ort_latency``). ``--profile`` adds the time by op kind of the max subnet,
which shows where int8 loses: see benchmarks/RESULTS.md. Also reports model
bytes (``nas.metrics.model_bytes``) and how closely the int8 ONNX model follows the fake-quant torch model
(logit cosine similarity, top-1 agreement) on the evaluation inputs.

Without ``--supernet RUN_DIR`` (a trained run from ``nas train``) the supernet is untrained and the inputs
are random, so the agreement figures only show that the pipeline is consistent; accuracy-level agreement on
MNIST needs a trained supernet and real images (``--mnist``: the bundled MNIST test set of ``nas.data``).

Usage:
    .venv/bin/python benchmarks/quant_sparse.py [--configs 3] [--threads 1] [--supernet runs/sn] [--mnist] [--profile]
    .venv/bin/python benchmarks/quant_sparse.py --preset imagenet --configs 0 --samples 64

Writes benchmarks/results/quant_sparse.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import describe, machine, write_json

from nas import metrics
from nas.evaluation import recalibrate_bn
from nas.export import export
from nas.supernet import resize_to
from search_spaces import mobilenetv3


def load_inputs(net, args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, str]:
    """Calibration and (disjoint) evaluation images, evaluation labels (MNIST only), and their source."""
    n = args.samples
    m = args.eval_samples if args.eval_samples is not None else (2000 if args.mnist else n)
    if args.mnist:
        from nas import data

        images, labels = data.mnist("test").tensors  # normalised (N, 1, 28, 28) images
        calib, held_out = images[:n].float(), images[n : n + m].float()
        return (
            calib,
            held_out,
            labels[n : n + m],
            f"MNIST test images ({len(calib)} calibrate, other {len(held_out)} evaluate)",
        )
    shape = net.input_shape(net.space.max(), batch_size=n + m)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return x[:n], x[n:], None, f"random N(0,1) inputs ({n} calibrate, other {m} evaluate)"


def ort_latency(
    paths: dict[str, Path], x: np.ndarray, threads: int, repeats: int, clock: str = "wall"
) -> dict[str, float]:
    """Median seconds per run of each ONNX model on ``x``, measured alternately.

    ``clock="cpu"`` times the calling thread's CPU time. With one intra-op thread onnxruntime computes on
    the calling thread, so this is the compute time without the waits that other jobs on a shared machine
    add to wall time (which made single wall-clock ratios swing by +-15% here).
    """
    import onnxruntime as ort

    if clock == "cpu" and threads != 1:
        raise ValueError("clock='cpu' measures the calling thread only; use it with threads=1")
    now = time.thread_time if clock == "cpu" else time.perf_counter

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
    start = now()
    next(iter(sessions.values())).run(None, next(iter(feeds.values())))
    inner = max(1, int(0.05 / max(now() - start, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            start = now()
            for _ in range(inner):
                s.run(None, feeds[k])
            times[k].append((now() - start) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def op_profile(path: Path, x: np.ndarray, runs: int = 12) -> dict[str, float]:
    """Milliseconds per run by op kind (convs split into depthwise / squeeze-excite / other), one thread.

    Each node's time is its fastest of ``runs`` profiled runs (robust to other jobs' load), summed by kind.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as work:
        options.profile_file_prefix = str(Path(work) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    kind: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault(e["name"], []).append(e["dur"])
            op = e["args"]["op_name"]
            if op in ("Conv", "QLinearConv", "FusedConv"):
                op += (
                    ":depthwise" if "depthwise" in e["name"] else (":se" if "/se/" in e["name"] else ":other")
                )
            kind[e["name"]] = op
    totals: dict[str, float] = {}
    for name, durations in per_node.items():
        totals[kind[name]] = totals.get(kind[name], 0.0) + min(durations[1:] or durations) / 1e3
    return dict(sorted(totals.items(), key=lambda t: -t[1]))


def top1(out_int8: Path, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy (%) on ``x`` of an int8 export and of the fake-quant model it was exported from."""
    import onnxruntime as ort

    from nas.export import load_exported

    session = ort.InferenceSession(str(out_int8 / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    model = load_exported(out_int8)
    with torch.no_grad():
        expected = torch.cat([model(part) for part in x.split(256)]).argmax(1).numpy()
    y = labels.numpy()
    return {
        "acc_fake_quant": 100.0 * float((expected == y).mean()),
        "acc_int8": 100.0 * float((got == y).mean()),
    }


def _accuracy_cell(row: dict, key: str, width: int) -> str:
    """An accuracy column: the value, or ``-`` where none was measured (random inputs have no labels)."""
    return f"{row[key]:>{width}.2f}" if key in row else f"{'-':>{width}}"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small", choices=sorted(mobilenetv3.PRESETS))
    parser.add_argument("--configs", type=int, default=3, help="random architectures besides the max subnet")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samples", type=int, default=256, help="calibration inputs")
    parser.add_argument(
        "--eval-samples",
        type=int,
        help="held-out inputs that measure int8 agreement (default 2000 with --mnist, else --samples)",
    )
    parser.add_argument(
        "--supernet", help="a trained run directory (nas train --out DIR) built with quant=True"
    )
    parser.add_argument("--mnist", action="store_true", help="use the bundled MNIST test images (nas.data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calib-batches",
        type=int,
        default=4,
        help="BN/observer recalibration batches of 256 (trained supernet)",
    )
    parser.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="auto: thread CPU time with --threads 1 (robust on a shared machine), wall time otherwise",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print onnxruntime time by op kind for the max subnet"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).resolve().parent / "results" / "quant_sparse.json")
    )
    args = parser.parse_args()
    clock = args.clock if args.clock != "auto" else ("cpu" if args.threads == 1 else "wall")
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
    inputs, held_out, labels, source = load_inputs(net, args)
    quant_dims = net.elastic_groups()["quant"]
    architectures = [net.space.max(), *net.space.samples(args.configs, seed=args.seed)]

    if args.supernet and args.mnist:
        from nas import data

        bn_images = data.mnist("train").tensors[0].float()  # calibration stays off the test set
    else:
        bn_images = inputs

    def calibrate(cfg) -> None:
        """BN statistics (shared weights: the stored ones fit no single subnet) and, for 8-bit, the activation
        observers of subnet ``cfg``, re-estimated in train-mode passes right before it is exported."""
        active = net.activate(cfg)
        with torch.no_grad():
            _recalibrate(active)

    def _recalibrate(active) -> None:
        if args.supernet:
            recalibrate_bn(net, bn_images, active, batches=args.calib_batches)
        else:  # untrained: a few small batches are enough for a consistent pipeline
            recalibrate_bn(net, bn_images, active, batches=4, batch_size=16)

    rows = []
    profiles: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as work:
        for i, arch in enumerate(architectures):
            fp32 = net.space.canonical({**arch, **{d: 32 for d in quant_dims}})
            int8 = net.space.canonical({**arch, **{d: 8 for d in quant_dims}})
            x = resize_to(inputs, int8)
            x_eval = resize_to(held_out, int8)
            calibrate(fp32)
            out_fp32 = export(net, fp32, Path(work) / f"fp32_{i}", formats=("safetensors", "onnx"))
            calibrate(int8)
            out_int8 = export(
                net,
                int8,
                Path(work) / f"int8_{i}",
                formats=("safetensors", "onnx-int8"),
                calib_data=x,
                eval_data=x_eval,
            )
            verification = json.loads((out_int8 / "manifest.json").read_text())["verification"]
            accuracy = {} if labels is None else top1(out_int8, x_eval, labels)
            for batch in args.batches:
                xb = x[:batch].numpy()
                t = ort_latency(
                    {"fp32": out_fp32 / "model.onnx", "int8": out_int8 / "model.int8.onnx"},
                    xb,
                    args.threads,
                    args.repeats,
                    clock,
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
                        "agreement_samples": verification["int8_samples"],
                        **accuracy,
                    }
                )
            if args.profile and i == 0:
                xb = x[: max(args.batches)].numpy()
                profiles = {
                    "fp32": op_profile(out_fp32 / "model.onnx", xb),
                    "int8": op_profile(out_int8 / "model.int8.onnx", xb),
                }
    elapsed = time.perf_counter() - began

    print(
        f"quant/sparse export: {net.space.name}, onnxruntime {_ort_version()} CPU, {args.threads} thread(s), "
        f"{clock} time, inputs: {source}"
    )
    header = (
        f"{'subnet':>8} | {'res':>3} | {'batch':>5} | {'fp32 ms':>8} | {'int8 ms':>8} | {'speedup':>7} | "
        f"{'MMACs':>6} | {'KB fp32':>7} | {'KB int8':>7} | {'cosine':>6} | {'top1 agr':>8} | "
        f"{'acc fq':>6} | {'acc int8':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['subnet']:>8} | {r['resolution']:>3} | {r['batch']:>5} | {r['fp32_ms']:>8.3f} | {r['int8_ms']:>8.3f} | "
            f"{r['speedup']:>7.2f} | {r['macs'] / 1e6:>6.2f} | {r['bytes_fp32'] / 1024:>7.1f} | "
            f"{r['bytes_int8'] / 1024:>7.1f} | {r['cosine']:>6.4f} | {r['top1_agreement']:>8.4f} | "
            f"{_accuracy_cell(r, 'acc_fake_quant', 6)} | {_accuracy_cell(r, 'acc_int8', 8)}"
        )
    if labels is not None:
        print("acc fq / acc int8: top-1 accuracy (%) of the fake-quant torch model / the int8 ONNX model")
    for name, totals in profiles.items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in totals.items() if v >= 0.01)
        print(f"max subnet {name} at batch {max(args.batches)}, ms by op kind: {parts}")
    host = machine()
    print(f"ran {elapsed:.1f} s on {describe(host)}")
    payload = {
        "benchmark": "quant_sparse",
        "space": net.space.name,
        "inputs": source,
        "trained": bool(args.supernet),
        "threads": args.threads,
        "clock": clock,
        "onnxruntime": _ort_version(),
        "machine": host,
        "seconds": elapsed,
        "rows": rows,
        "op_profile_max_subnet_ms": profiles,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
