"""The whole pipeline on bundled data, on this CPU, in a few minutes (`make demo`).

1. NAS-Bench-201: a LINAS search for accuracy vs latency on a Raspberry Pi 4 and a Pixel 3 (real HW-NAS-Bench
   measurements), compared with the true Pareto fronts.
2. MobileNetV3 on MNIST: train a weight-sharing supernet briefly, profile subnets on this CPU, fit a latency
   predictor, search accuracy vs predicted latency, write an HTML report and export the chosen subnet to ONNX
   (verified in onnxruntime, reloaded without the supernet).

The same from the shell (see README.md; each command in full: docs/cli.md):

    nas train   --space mobilenetv3 --data mnist --epochs 1 --out runs/demo/supernet
    nas profile --supernet runs/demo/supernet --samples 60 --out runs/demo/this-cpu.csv
    nas fit     runs/demo/this-cpu.csv --out runs/demo/this-cpu.json
    nas search  --space mobilenetv3 --supernet runs/demo/supernet --target runs/demo/this-cpu.json \\
                --budget 30 --store runs/demo/search.db
    nas report  runs/demo/search.db --out runs/demo/report
    nas export  runs/demo/search.db --max-latency 2ms --format onnx --out runs/demo/model

The supernet trained here is deliberately short (one epoch); `examples/train_mnist.py` trains the real one.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

import nas
import predictors
from nas import metrics, search
from nas.data import mnist, train_val_split
from nas.hw.measure import profile
from nas.report import write_report
from nas.train import train_supernet
from search_spaces import mobilenetv3


def step(title: str) -> float:
    print(f"\n=== {title}")
    return time.perf_counter()


def nb201_part(out: Path, budget: int) -> None:
    import nb201_search  # the example next to this file

    nb201_search.main(["--budget", str(budget), "--algorithm", "linas", "--out", str(out / "nb201")])


def mobilenet_part(out: Path, epochs: int, samples: int, budget: int) -> None:
    torch.manual_seed(0)
    train, val = train_val_split(mnist("train"), 0.1, seed=0)
    test = mnist("test")

    t = step(f"train a MobileNetV3 supernet on {len(train)} MNIST images ({epochs} epoch(s), sandwich rule)")
    net = mobilenetv3.supernet(preset="small", num_classes=10, in_channels=1)
    train_supernet(
        net,
        train,
        val,
        strategy="sandwich",
        epochs=epochs,
        batch_size=64,
        optimizer="adamw",
        lr=3e-3,
        out_dir=out / "supernet",
        overwrite=True,  # a demo starts afresh each time
        seed=0,
    )
    net.eval()
    for name, cfg in (("max", net.space.max()), ("min", net.space.min())):
        acc = metrics.evaluate(net, cfg, test, calib_data=train)
        print(f"  {name} subnet: {acc:.2f}% on the 10,000 test images")
    print(f"  {time.perf_counter() - t:.0f} s")

    t = step(f"profile {samples} random subnets on this CPU (torch, batch 1, 1 thread, interleaved)")
    configs = net.space.samples(samples, seed=1, unique=True)
    prof = profile(net, configs, backend="torch", threads=1, repeats=10, rounds=2, warmup=2)
    prof.save(out / "this-cpu.csv")
    cv = float(np.nanmedian(prof.latency_cv))
    print(
        f"  median latency {np.median(prof.latencies):.3f} ms, median CV {cv:.3f}; {time.perf_counter() - t:.0f} s"
    )

    step("fit a latency predictor (held-out quarter)")
    X, y = prof.to_arrays(net.space)
    cut = len(y) * 3 // 4
    held_out = predictors.fit(X[:cut], y[:cut], kind="auto", seed=0, space=net.space.name)
    scores = predictors.evaluate(held_out, X[cut:], y[cut:])
    print(f"  held out: within 10% {scores['within_10pct']:.2f}, MAPE {scores['mape']:.1f}%")
    pred = predictors.fit(X, y, kind=held_out.kind, seed=0, space=net.space.name)
    pred.save(out / "this-cpu.json")

    t = step(f"LINAS search: accuracy (500 held-out images) vs predicted latency, {budget} evaluations")
    objectives = [
        search.accuracy(net, val, max_examples=500),
        search.latency("this-cpu", pred, space=net.space),
    ]
    store = out / "search.db"
    store.unlink(missing_ok=True)
    result = search.run(net.space, objectives, algorithm="linas", budget=budget, store=f"sqlite:///{store}")
    front = result.pareto()
    print(front[["accuracy", "latency@this-cpu", "key"]].to_string(index=False))
    print(f"  {time.perf_counter() - t:.0f} s; report: {write_report(result, out / 'report')}")

    step("export the most accurate subnet under the median latency")
    bound = float(np.median(front["latency@this-cpu"]))
    chosen = front[front["latency@this-cpu"] <= bound].sort_values("accuracy").iloc[-1]
    cfg = nas.Config.from_json(chosen["config"])
    model_dir = nas.export(net, cfg, out / "model", formats=("safetensors", "onnx"))
    static = nas.load_exported(model_dir)
    x = torch.randn(4, *net.input_shape(cfg)[1:])
    with torch.no_grad():
        net.activate(cfg)
        diff = (static(x) - net(x)).abs().max().item()
    print(f"  {cfg.key}: accuracy {chosen['accuracy']:.2f}%, {chosen['latency@this-cpu']:.3f} ms predicted")
    print(f"  files: {sorted(p.name for p in model_dir.iterdir())}; reloaded model differs by {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--samples", type=int, default=60, help="subnets to profile")
    parser.add_argument("--budget", type=int, default=30, help="evaluations of the MobileNetV3 search")
    parser.add_argument("--nb201-budget", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step("NAS-Bench-201: hardware-aware search with known true fronts")
    nb201_part(out, args.nb201_budget)
    mobilenet_part(out, args.epochs, args.samples, args.budget)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s; everything is in {out}/")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    main()
