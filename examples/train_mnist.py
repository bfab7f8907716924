"""Train a small supernet (OFA-MobileNetV3 by default) on the bundled 5,000 MNIST images, then evaluate its subnets.

``--preset narrow`` (the README recipe) trains MobileNetV3's ``small`` preset at half width: on these 5,000 images
the ``small`` preset's subnets all reach about the same accuracy, so which of them lands lowest is noise; the
narrow one's differ by their size.

Sandwich rule + in-place distillation. Prints the test accuracy (10,000 official test images, BN statistics
recalibrated on training images) of the max subnet, the min subnet and ``--random`` random subnets, each random
subnet's difference from the min subnet on the same images (with its standard error and McNemar p-value), and how
often all of them would land between the min and max subnets on a redrawn test set (paired bootstrap,
:mod:`nas.significance`).

    .venv/bin/python examples/train_mnist.py --preset narrow --epochs 16 --out runs/mnist-sandwich  # README: the full recipe

The run is resumable: add ``--resume`` after an interruption. Results go to ``OUT/eval.json``;
``examples/compare_runs.py`` compares several runs (seeds, recipe variants) side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

import search_spaces
from nas import data
from nas.cli import add_sampling_arguments, sampling_options
from nas.evaluation import subnet_correct
from nas.significance import bootstrap_between, paired_difference
from nas.train import recipe_for, train_supernet
from nas.train.checkpoint import atomic_write_text
from search_spaces import mobilenetv3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--space",
        default="mobilenetv3",
        choices=("mobilenetv3", "resnet", "vit"),
        help="built-in space to train (default mobilenetv3)",
    )
    p.add_argument(
        "--preset",
        help="the space's preset (default small; mobilenetv3 also has narrow, small at half width, whose "
        "subnets' accuracies spread wider on these 5,000 images)",
    )
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="default 0.05, or the space's training recipe (vit: 2e-3)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="default sgd, or the space's recipe")
    p.add_argument("--weight-decay", type=float, help="default 3e-5, or the space's recipe (vit: 0.05)")
    p.add_argument("--augment", default="shift", choices=("shift", "affine", "none"))
    p.add_argument("--strategy", default="sandwich")
    p.add_argument("--n-random", type=int, default=2)
    add_sampling_arguments(p)
    p.add_argument(
        "--kernel-transform",
        action="store_true",
        help="Once-for-All kernel transformation matrices for the smaller depthwise kernels",
    )
    p.add_argument("--random", type=int, default=20, help="random subnets to evaluate after training")
    p.add_argument(
        "--calib-batches",
        type=int,
        default=20,
        help="BN recalibration batches of 256 training images per evaluated subnet (20 = all 5,000)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--workers", type=int, default=1, help="> 1: data-parallel on a local Ray instance")
    p.add_argument(
        "--device", default="auto", help="auto (default: the GPU when CUDA is available), cpu, cuda or cuda:N"
    )
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the initial weights, data order and subnet sampling (default 0); the evaluated random "
        "subnets stay the same",
    )
    p.add_argument("--out", default="runs/mnist-sandwich")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # Seeded always: unseeded, the supernet's initial weights differed with PYTHONHASHSEED (torch's start-up
    # state is not what the supernet is built from), so runs of one command began from different weights.
    torch.manual_seed(0 if args.seed is None else args.seed)

    train, test = data.mnist("train"), data.mnist("test")
    module = search_spaces.get(args.space)
    args.preset = args.preset or "small"
    if args.preset not in module.PRESETS:
        p.error(f"--preset {args.preset}: {args.space} has the presets {', '.join(module.PRESETS)}")
    if args.space == "mobilenetv3":
        net = mobilenetv3.supernet(
            args.preset, num_classes=10, in_channels=1, kernel_transform=args.kernel_transform
        )
    elif args.kernel_transform:
        p.error(f"--kernel-transform is for mobilenetv3's depthwise kernels, not {args.space}")
    else:
        net = module.supernet(args.preset, num_classes=10, in_channels=1)
    # Options given here, else the space's own training recipe (the ViT's), else this script's defaults.
    given = {k: v for k in ("lr", "optimizer", "weight_decay") if (v := getattr(args, k)) is not None}
    settings = {"lr": 0.05, "optimizer": "sgd", "weight_decay": 3e-5, **recipe_for(net, **given)}
    t0 = time.perf_counter()
    result = train_supernet(
        net,
        train,
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        n_random=args.n_random,
        strategy_options=sampling_options(args),
        **settings,
        augment={"shift": True, "none": False}.get(args.augment, args.augment),
        out_dir=args.out,
        resume=args.resume,
        num_workers=args.workers,
        seed=0 if args.seed is None else args.seed,
        device=args.device,
    )
    train_s = time.perf_counter() - t0
    print(f"trained {result.steps} steps in {train_s:.0f} s")

    t0 = time.perf_counter()
    space = net.space

    def correct(cfg):  # per test image, so that subnets can be compared on the same images
        return subnet_correct(net, cfg, test, calib_data=train, calib_batches=args.calib_batches)

    def percent(ok):
        return 100.0 * float(ok.float().mean())

    right = {"max": correct(space.max())}
    rows = {"max": percent(right["max"])}
    print(f"max  {rows['max']:.2f}%", flush=True)
    right["min"] = correct(space.min())
    rows["min"] = percent(right["min"])
    print(f"min  {rows['min']:.2f}%", flush=True)
    randoms, random_right = [], []
    for i, cfg in enumerate(space.samples(args.random, seed=123, unique=True)):
        ok = correct(cfg)
        vs_min = paired_difference(ok, right["min"])
        randoms.append(
            {
                "config": json.loads(cfg.to_json()),
                "accuracy": percent(ok),
                "vs_min": {"points": vs_min.difference, "sd": vs_min.sd, "p_value": vs_min.p_value},
            }
        )
        random_right.append(ok)
        print(
            f"random {i:2d} {percent(ok):.2f}%  ({cfg['resolution']} px; vs min {vs_min.difference:+.2f} "
            f"+- {vs_min.sd:.2f}, McNemar p {vs_min.p_value:.2f})",
            flush=True,
        )
    accs = [r["accuracy"] for r in randoms]
    between = None
    if accs:
        between = bootstrap_between(right["min"], right["max"], random_right)
        print(
            f"random: min {min(accs):.2f} median {sorted(accs)[len(accs) // 2]:.2f} max {max(accs):.2f}; "
            f"{between.observed}/{len(accs)} between min and max; on {between.rounds} redrawn test sets of "
            f"{len(right['min']):,} images, all between in {100 * between.all_between:.1f}% "
            f"(count median {between.count_median:.0f}, 5-95% {between.count_low:.0f}-{between.count_high:.0f})"
        )
    summary = {
        **rows,
        "random": randoms,
        "between_bootstrap": dataclasses.asdict(between) if between else None,
        "train_seconds": train_s,
        "eval_seconds": time.perf_counter() - t0,
        "device": torch.cuda.get_device_name() if next(net.parameters()).is_cuda else "cpu",
        "args": vars(args),
    }
    atomic_write_text(Path(args.out) / "eval.json", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
