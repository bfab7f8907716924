"""Weight sharing vs training alone: max / mid / min subnets of the small MobileNetV3 on bundled MNIST.

For each strategy, trains the supernet for ``--epochs`` epochs, then evaluates the max, a mid and the min
subnet (BN recalibrated, 10,000 test images). Each of the three architectures is also extracted from an
*untrained* supernet and trained alone (plain cross-entropy, same epochs, batch size, optimizer and schedule);
the gap is (supernet-inherited accuracy) - (standalone accuracy). Also prints the wall time per strategy.

    .venv/bin/python benchmarks/weight_sharing.py --epochs 12 --strategies sandwich,progressive,delayed,uniform

Writes benchmarks/results/weight_sharing.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from nas import data
from nas.evaluation import evaluate_subnet
from nas.train import train_supernet
from nas.train.checkpoint import atomic_write_text
from search_spaces import mobilenetv3


def _mid(space):
    """The config whose every dimension takes its middle value."""
    return space.canonical({d.name: d.values[len(d.values) // 2] for d in space.dims})


def _train_alone(cfg, train, test, args, out: Path) -> tuple[float, float]:
    """Train one fixed architecture (a supernet with only that subnet trained) with the same recipe."""
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    # uniform over a one-config space == plain training of that architecture: restrict by activating it only
    from nas.train.strategies import Strategy, SubnetTask, register_strategy

    @register_strategy
    class Fixed(Strategy):
        name = "_fixed"

        def tasks(self, step, rng):
            return [SubnetTask(cfg)]

    t0 = time.perf_counter()
    train_supernet(
        net,
        train,
        strategy="_fixed",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        distill=False,
        out_dir=out,
        progress=False,
    )
    return evaluate_subnet(net, cfg, test, calib_data=train), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--strategies", default="sandwich,progressive,delayed,uniform")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/weight_sharing.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train, test = data.mnist("train"), data.mnist("test")
    space = mobilenetv3.supernet("small", num_classes=10, in_channels=1).space
    archs = {"max": space.max(), "mid": _mid(space), "min": space.min()}
    tmp = Path(tempfile.mkdtemp(prefix="weight_sharing_"))

    alone = {}
    for name, cfg in archs.items():
        acc, secs = _train_alone(cfg, train, test, args, tmp / f"alone_{name}")
        alone[name] = {"accuracy": acc, "seconds": secs}
        print(f"alone {name}: {acc:.2f}% ({secs:.0f} s)", flush=True)

    rows = []
    for strategy in args.strategies.split(","):
        net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
        t0 = time.perf_counter()
        train_supernet(
            net,
            train,
            strategy=strategy,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            out_dir=tmp / strategy,
            progress=False,
        )
        secs = time.perf_counter() - t0
        row = {"strategy": strategy, "seconds": secs}
        for name, cfg in archs.items():
            acc = evaluate_subnet(net, cfg, test, calib_data=train)
            row[name] = acc
            row[f"gap_{name}"] = acc - alone[name]["accuracy"]
        rows.append(row)
        print(f"{strategy}: done in {secs:.0f} s", flush=True)

    print(f"\n{'strategy':12s} {'wall s':>7s} " + " ".join(f"{n:>7s} {'gap':>6s}" for n in archs))
    print(
        f"{'alone':12s} {sum(a['seconds'] for a in alone.values()):7.0f} "
        + " ".join(f"{alone[n]['accuracy']:7.2f} {'':>6s}" for n in archs)
    )
    for r in rows:
        print(
            f"{r['strategy']:12s} {r['seconds']:7.0f} "
            + " ".join(f"{r[n]:7.2f} {r[f'gap_{n}']:+6.2f}" for n in archs)
        )
    total = time.perf_counter() - started
    print(
        f"\nran {total:.0f} s; epochs={args.epochs}, threads={args.threads}, {platform.processor() or 'cpu'}"
    )
    result = {
        "args": vars(args),
        "alone": alone,
        "strategies": rows,
        "seconds": total,
        "archs": {n: json.loads(c.to_json()) for n, c in archs.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
