"""How fast ``nas.metrics.evaluate`` scores one subnet of a supernet, the inner loop of an accuracy search.

One evaluation = batch-norm recalibration (8 batches of 256 training images by default; none for a network
without batch norm, a ViT) + top-1 accuracy on ``--val`` held-out images. The benchmark times random subnets
of a supernet (``--space``: mobilenetv3, resnet or vit) with the conv weights switched to
channels-last memory for the call (what ``evaluate_subnet`` does on CPU) and without that switch (NCHW, as
before), alternating the two so that load from other processes hits both alike, and checks that both give the
same accuracies.

Usage:
    .venv/bin/python benchmarks/evaluation_speed.py [--supernet runs/sn | --space resnet] [--subnets 4]
        [--rounds 2] [--threads 2]

Without ``--supernet`` an untrained ``small`` supernet of ``--space`` (default mobilenetv3) is timed (the
speed does not depend on the weights). Writes benchmarks/results/evaluation_speed.json
(``evaluation_speed-SPACE.json`` for another space).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
from _common import describe, machine, write_json

import nas.evaluation as evaluation
import search_spaces
from nas import data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", help="a `nas train` run directory (default: an untrained small supernet)")
    p.add_argument("--space", default="mobilenetv3", choices=("mobilenetv3", "resnet", "vit"))
    p.add_argument("--subnets", type=int, default=4, help="random subnets timed per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per layout")
    p.add_argument("--val", type=int, default=2000, help="held-out MNIST test images scored per evaluation")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON file (default: benchmarks/results/evaluation_speed[-SPACE].json)")
    args = p.parse_args()
    if args.out is None:
        suffix = "" if args.space == "mobilenetv3" or args.supernet else f"-{args.space}"
        # beside this file, not under the working directory: `make bench` and a run from elsewhere agree
        args.out = str(Path(__file__).resolve().parent / "results" / f"evaluation_speed{suffix}.json")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    if args.supernet:
        net = search_spaces.load_trained(args.supernet)
    else:
        torch.manual_seed(0)
        net = search_spaces.get(args.space).supernet("small", num_classes=10, in_channels=1)
    train, test = data.mnist("train"), data.mnist("test")
    val = (test.tensors[0][: args.val], test.tensors[1][: args.val])
    cfgs = list(net.space.samples(args.subnets, seed=1, unique=True))
    switch = evaluation.channels_last_on_cpu

    def run(channels_last: bool) -> tuple[float, list[float]]:
        evaluation.channels_last_on_cpu = switch if channels_last else (lambda net: contextlib.nullcontext())
        try:
            start = time.perf_counter()
            accs = [evaluation.evaluate_subnet(net, c, val, calib_data=train) for c in cfgs]
            return (time.perf_counter() - start) / len(cfgs), accs
        finally:
            evaluation.channels_last_on_cpu = switch

    seconds: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    accuracies: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in ("nchw", "channels_last"):
            s, accs = run(name == "channels_last")
            seconds[name].append(s)
            accuracies[name] = accs
    same = accuracies["nchw"] == accuracies["channels_last"]

    print(
        f"{net.space.name}: {args.subnets} random subnets x {args.rounds} rounds, {args.val} images scored, "
        f"{args.threads} threads"
    )
    print(f"{'layout':<14} {'s / subnet':>10} {'subnets / min':>14}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<14} {median:>10.2f} {60 / median:>14.1f}")
    speedup = statistics.median(seconds["nchw"]) / statistics.median(seconds["channels_last"])
    print(f"speed-up {speedup:.2f}x; identical accuracies: {same}")
    elapsed = time.perf_counter() - began
    host = machine()
    print(f"ran {elapsed:.1f} s on {describe(host)}")

    record = {
        "benchmark": "evaluation_speed",
        "args": vars(args),
        "seconds_per_subnet": seconds,
        "accuracies": accuracies,
        "identical_accuracies": same,
        "speedup": speedup,
        "machine": host,
        "seconds": elapsed,
        "torch": torch.__version__,
    }
    print(f"wrote {write_json(args.out, record)}")


if __name__ == "__main__":
    main()
