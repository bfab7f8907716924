"""Overhead of running a subnet inside the supernet versus as its extracted static model.

For random configs of a weight-sharing supernet (``--space``: mobilenetv3, resnet or vit), times ``net(x)`` with the config active and
``extract(cfg)(x)`` on the same input (eval mode, no grad), interleaving the two so that load from other
processes hits both alike, and prints the median ratio per batch size. Goal: <= 1.10 at batch 64.

Usage:
    .venv/bin/python benchmarks/elastic_overhead.py [--space mobilenetv3] [--preset small] [--configs 20]
        [--batches 1 64]

Writes benchmarks/results/elastic_overhead.json (``elastic_overhead-SPACE-PRESET.json`` for another space or
preset).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _common import describe, machine, write_json

import search_spaces
from nas.supernet import resize_to

SPACES = ("mobilenetv3", "resnet", "vit")


def time_pair(a, b, x: torch.Tensor, repeats: int, min_seconds: float) -> tuple[float, float]:
    """Median seconds per call of ``a(x)`` and ``b(x)``, measured alternately."""
    with torch.no_grad():
        for _ in range(3):  # warm-up: caches, allocator, oneDNN primitives
            a(x), b(x)
        # Calls per measurement so that one measurement lasts long enough to time reliably.
        start = time.perf_counter()
        a(x)
        once = max(time.perf_counter() - start, 1e-6)
        inner = max(1, int(min_seconds / once))
        ta, tb = [], []
        for _ in range(repeats):
            for fn, out in ((a, ta), (b, tb)):
                start = time.perf_counter()
                for _ in range(inner):
                    fn(x)
                out.append((time.perf_counter() - start) / inner)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space", default="mobilenetv3", choices=SPACES)
    parser.add_argument("--preset", help="a preset of the space (default: the space's default preset)")
    parser.add_argument("--configs", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.02, help="minimum duration of one measurement")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (the CI box has 2 shared cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", help="JSON file to write (default: benchmarks/results/elastic_overhead*.json)"
    )
    args = parser.parse_args()
    presets = search_spaces.presets(args.space)
    args.preset = args.preset or presets[0]
    if args.preset not in presets:
        parser.error(f"--preset {args.preset!r}: {args.space} has presets {', '.join(presets)}")
    if args.out is None:
        default = args.space == "mobilenetv3" and args.preset == "small"
        name = "elastic_overhead" + ("" if default else f"-{args.space}-{args.preset}")
        args.out = str(Path(__file__).resolve().parent / "results" / f"{name}.json")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    net = search_spaces.get(args.space).supernet(args.preset).eval()
    configs = net.space.samples(args.configs, seed=args.seed)
    rows = []
    for batch in args.batches:
        ratios = []
        for cfg in configs:
            cfg = net.activate(cfg)
            static_model = net.extract(cfg).eval()
            x = resize_to(torch.randn(batch, *net.input_shape(cfg)[1:]), cfg)
            t_super, t_static = time_pair(net, static_model, x, args.repeats, args.min_seconds)
            ratios.append(t_super / t_static)
            rows.append({"batch": batch, "key": cfg.key, "supernet_s": t_super, "static_s": t_static})
        rows.append(
            {
                "batch": batch,
                "summary": True,
                "median_ratio": statistics.median(ratios),
                "min_ratio": min(ratios),
                "max_ratio": max(ratios),
            }
        )
    elapsed = time.perf_counter() - began

    print(
        f"elastic overhead: {args.space}-{args.preset}, {args.configs} random configs, {args.threads} thread(s)"
    )
    print(
        f"{'batch':>5} | {'median supernet ms':>18} | {'median static ms':>16} | {'median ratio':>12} | {'min':>5} | {'max':>5}"
    )
    for batch in args.batches:
        per = [r for r in rows if r["batch"] == batch and not r.get("summary")]
        summary = next(r for r in rows if r["batch"] == batch and r.get("summary"))
        print(
            f"{batch:>5} | {statistics.median(r['supernet_s'] for r in per) * 1e3:>18.3f} | "
            f"{statistics.median(r['static_s'] for r in per) * 1e3:>16.3f} | {summary['median_ratio']:>12.3f} | "
            f"{summary['min_ratio']:>5.2f} | {summary['max_ratio']:>5.2f}"
        )
    host = machine()
    print(f"ran {elapsed:.1f} s on {describe(host)}")
    payload = {
        "benchmark": "elastic_overhead",
        "space": args.space,
        "preset": args.preset,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": host,
        "seconds": elapsed,
        "rows": rows,
    }
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
