"""Weight sharing vs training alone: max / mid / min subnets of a MobileNetV3 supernet on bundled MNIST.

For each strategy, trains the supernet for ``--epochs`` epochs, then evaluates the max, a mid and the min
subnet (BN recalibrated, 10,000 test images). Each of the three architectures is also trained alone from
scratch (plain cross-entropy, no teacher; same epochs, batch size, optimizer, schedule and augmentation);
the gap is (supernet-inherited accuracy) - (standalone accuracy), +- its standard error over redrawn test sets
(both measured on the same test images: ``nas.significance.paired_difference``). Also prints the wall time per
strategy.

Every finished part (one standalone architecture, one strategy) is stored in the output JSON as soon as it
is done, and a rerun with the same recipe reuses it: an interrupted run resumes, and the parts can be run
in separate processes (e.g. ``--parts alone`` on one core while the supernet trains on the other).
``--random N`` also trains N random architectures alone (the 20 of ``examples/train_mnist.py``'s evaluation
for N = 20: sampled with seed 123) and reports, for the standalone runs and for each strategy, how many land
between the min and max subnet (and how often all would on a redrawn test set), the mean gap over them, and
the Kendall rank correlation of inherited vs standalone accuracy over all the architectures: whether the
space itself orders its architectures as the sandwich rule assumes, and whether weight sharing keeps that order.
``--preset`` picks the MobileNetV3 preset (``small`` by default; ``narrow``, half as wide, is the README recipe's).
``--reuse sandwich=RUN_DIR`` evaluates an already trained supernet (``train_supernet``'s ``out_dir``, e.g. of
``examples/train_mnist.py``) instead of training it again; its recorded settings must match the recipe given
here (a mismatch is refused, naming the settings). ``--attentive``, ``--low-res-bias`` and ``--min-weight`` go
to the strategies as in ``nas train``; the standalone runs do not use them (a rerun that changes only
those reuses the standalone results).

The README recipe's supernet, reused:

    .venv/bin/python benchmarks/weight_sharing.py --preset narrow --epochs 16 --augment shift --weight-decay 3e-5 \\
        --n-random 4 --attentive 2 --low-res-bias 1 --min-weight 0.5 --strategies sandwich \\
        --reuse sandwich=runs/mnist-sandwich

    .venv/bin/python benchmarks/weight_sharing.py --epochs 15 --strategies sandwich,progressive,delayed,uniform

Writes benchmarks/results/weight_sharing.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import describe, machine, write_json

from nas import data
from nas.cli import add_sampling_arguments, sampling_options
from nas.evaluation import CALIB_BATCHES, subnet_correct
from nas.significance import bootstrap_between, paired_difference
from nas.train import load_weights, train_supernet
from nas.train.strategies import STRATEGIES, Strategy, SubnetTask, register_strategy
from search_spaces import mobilenetv3

RANDOM_SEED = 123  # the random architectures examples/train_mnist.py evaluates
NAMED = ("max", "mid", "min")
RECIPE_KEYS = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "augment", "n_random", "seed")


def _mid(space):
    """The config whose every dimension takes its middle value."""
    return space.canonical({d.name: d.values[len(d.values) // 2] for d in space.dims})


def _recipe(args) -> dict:
    recipe = {k: getattr(args, k) for k in RECIPE_KEYS}
    if args.preset != "small":  # recorded only when set, so results measured before still match
        recipe["preset"] = args.preset
    if args.calib_batches != CALIB_BATCHES:  # recorded only when set, so results measured before still match
        recipe["calib_batches"] = args.calib_batches
    options = sampling_options(args)
    return {**recipe, "strategy_options": options} if options else recipe  # as before when none are set


def _base_recipe(recipe: dict) -> dict:
    """What the standalone runs depend on: the recipe without the strategies' sampling options."""
    return {k: v for k, v in recipe.items() if k != "strategy_options"}


def _check_reused(run: Path, strategy: str, args) -> dict:
    """The reused run's ``train.json``; refused when its settings are not this recipe's."""
    settings = json.loads((run / "train.json").read_text())
    stored = settings["settings"]
    evaluated = run / "eval.json"  # examples/train_mnist.py's: it names the preset it trained
    if evaluated.is_file():
        preset = json.loads(evaluated.read_text()).get("args", {}).get("preset") or "small"
        if preset != args.preset:
            raise SystemExit(
                f"--reuse {strategy}={run}: the run trained the {preset!r} preset, here --preset {args.preset}"
            )
    wanted = {"strategy": strategy, "n_random": args.n_random, "strategy_options": sampling_options(args)}
    wanted.update((k, v) for k, v in _train_options(args).items() if k != "progress")
    differ = [f"{k}: run {stored.get(k)!r}, here {v!r}" for k, v in wanted.items() if stored.get(k, {}) != v]
    if differ:
        raise SystemExit(f"--reuse {strategy}={run}: the run was trained otherwise ({'; '.join(differ)})")
    return settings


def _train_options(args) -> dict:
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "weight_decay": args.weight_decay,
        "augment": args.augment,
        "seed": args.seed,
        "progress": False,
    }


class _Fixed(Strategy):
    """One fixed architecture every step: plain training of that subnet inside a fresh supernet."""

    name = "_fixed"

    def __init__(self, net, total_steps, num_random=0, config=None, **options):
        super().__init__(net, total_steps, num_random, **options)
        self.config = self.space.canonical(config)

    def tasks(self, step, rng):
        return [SubnetTask(self.config)]


if "_fixed" not in STRATEGIES:
    register_strategy(_Fixed)


def _packed(correct: torch.Tensor) -> str:
    """Per-test-image correctness as hex (1,250 bytes for MNIST's 10,000), kept for paired comparisons."""
    return np.packbits(correct.numpy()).tobytes().hex()


def _unpacked(packed: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(packed), np.uint8))[:n].astype(bool)


def _measure(net, cfg, test, train, calib_batches: int) -> dict:
    correct = subnet_correct(net, cfg, test, calib_data=train, calib_batches=calib_batches)
    return {"accuracy": 100.0 * float(correct.float().mean()), "correct": _packed(correct)}


def _gap(inherited: dict, alone: dict, n: int) -> str:
    """``inherited - alone`` in points, with its standard error over redrawn test sets when both kept images."""
    gap = f"{inherited['accuracy'] - alone['accuracy']:+.2f}"
    if "correct" in inherited and "correct" in alone:
        d = paired_difference(_unpacked(inherited["correct"], n), _unpacked(alone["correct"], n))
        gap += f"+-{d.sd:.2f}"
    return gap


def _train_alone(cfg, train, test, args, out: Path) -> tuple[dict, float]:
    net = mobilenetv3.supernet(args.preset, num_classes=10, in_channels=1)
    t0 = time.perf_counter()
    train_supernet(
        net,
        train,
        strategy="_fixed",
        distill=False,
        out_dir=out,
        strategy_options={"config": dict(cfg)},
        **_train_options(args),
    )
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)  # its checkpoints (~18 MB): the weights are in `net`
    return _measure(net, cfg, test, train, args.calib_batches), seconds


def _train_strategy(strategy, train, args, out: Path, reuse: dict[str, str]):
    net = mobilenetv3.supernet(args.preset, num_classes=10, in_channels=1)
    if strategy in reuse:
        run = Path(reuse[strategy])
        settings = _check_reused(run, strategy, args)
        load_weights(net, run)
        return net, float(settings["seconds"]), str(run)
    t0 = time.perf_counter()
    train_supernet(
        net,
        train,
        strategy=strategy,
        n_random=args.n_random,
        out_dir=out,
        strategy_options=sampling_options(args),
        **_train_options(args),
    )
    return net, time.perf_counter() - t0, None


def _kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two accuracy lists (ties allowed): +1 when both order the architectures alike."""
    from scipy.stats import kendalltau  # scipy comes with scikit-learn

    return float(kendalltau(a, b).statistic)


def _random_summary(result: dict, randoms: list[str], n_test: int) -> list[str]:
    """Lines on the random architectures: between min and max, mean gap, rank correlation with training alone."""
    alone = result["alone"]

    def between(label: str, correct: dict[str, np.ndarray]) -> str:
        b = bootstrap_between(correct["min"], correct["max"], [correct[n] for n in randoms])
        accuracy = {n: c.mean() for n, c in correct.items()}
        below = sum(accuracy[n] < accuracy["min"] for n in randoms)
        above = sum(accuracy[n] > accuracy["max"] for n in randoms)
        return (
            f"{label:12s} {b.observed:2d}/{b.total} random between min and max, {below} below, {above} above "
            f"(all between on a redrawn test set: {100 * b.all_between:.1f}%; count 5-95%: "
            f"{b.count_low:.0f}-{b.count_high:.0f})"
        )

    lines = []
    if all(n in alone for n in ("min", "max", *randoms)):
        lines.append(between("alone", {n: _unpacked(alone[n]["correct"], n_test) for n in alone}))
    for strategy, row in result["strategies"].items():
        measured = [n for n in result["archs"] if f"{n}_correct" in row]
        if not {"min", "max", *randoms} <= set(measured):  # measured before --random was given
            lines.append(
                f"{strategy:12s} random subnets not measured: evaluate it again (--reuse) or train it anew"
            )
            continue
        line = between(strategy, {n: _unpacked(row[f"{n}_correct"], n_test) for n in measured})
        if all(n in alone for n in measured):
            gaps = [row[n] - alone[n]["accuracy"] for n in randoms]
            tau = _kendall_tau([row[n] for n in measured], [alone[n]["accuracy"] for n in measured])
            line += (
                f"; mean gap over them {np.mean(gaps):+.2f}; Kendall tau vs alone ({len(measured)}) {tau:.2f}"
            )
        lines.append(line)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--preset",
        default="small",
        choices=tuple(mobilenetv3.PRESETS),
        help="MobileNetV3 preset (default small; narrow: half as wide)",
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--augment", default="affine", help="'affine', 'shift' or 'none'")
    p.add_argument("--n-random", type=int, default=1, help="random subnets per step (sandwich-like)")
    p.add_argument("--seed", type=int, default=0)
    add_sampling_arguments(p)
    p.add_argument(
        "--random",
        type=int,
        default=0,
        help="also train this many random architectures alone (seed 123: train_mnist.py's 20 for 20) and "
        "count how many land between min and max, alone and inherited",
    )
    p.add_argument(
        "--calib-batches",
        type=int,
        default=CALIB_BATCHES,
        help=f"BN recalibration batches of 256 training images per measured subnet (default {CALIB_BATCHES}; "
        "20 = all 5,000, as examples/train_mnist.py does; another value measures, and trains alone, anew)",
    )
    p.add_argument("--strategies", default="sandwich,progressive,delayed,uniform")
    p.add_argument("--parts", default="alone,strategies", help="which parts to run: alone, strategies")
    p.add_argument("--reuse", action="append", default=[], help="STRATEGY=RUN_DIR: evaluate a trained run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "weight_sharing.json"))
    args = p.parse_args()
    args.augment = {"none": False, "shift": True}.get(args.augment, args.augment)
    torch.set_num_threads(args.threads)
    reuse = dict(item.split("=", 1) for item in args.reuse)
    parts = set(args.parts.split(","))
    out = Path(args.out)
    cached = json.loads(out.read_text()) if out.is_file() else {}
    if _base_recipe(cached.get("recipe", {})) != _base_recipe(_recipe(args)):
        cached = {}  # another recipe: nothing to reuse
    elif cached["recipe"] != _recipe(args):  # other strategy options only: the standalone runs still hold
        cached = {"alone": cached.get("alone", {})}
    result = {
        "recipe": _recipe(args),
        "alone": cached.get("alone", {}),
        "strategies": cached.get("strategies", {}),
    }

    def save() -> None:
        write_json(out, result)

    started = time.perf_counter()
    train, test = data.mnist("train"), data.mnist("test")
    space = mobilenetv3.supernet(args.preset, num_classes=10, in_channels=1).space
    archs = {"max": space.max(), "mid": _mid(space), "min": space.min()}
    if args.calib_batches < 1:
        raise SystemExit(f"--calib-batches {args.calib_batches}: give at least 1 batch")
    if args.random < 0:
        raise SystemExit(f"--random {args.random}: give a number of random architectures (0 for none)")
    randoms = [f"random{i}" for i in range(args.random)]
    archs.update(zip(randoms, space.samples(args.random, seed=RANDOM_SEED, unique=True), strict=True))
    result["archs"] = {n: json.loads(c.to_json()) for n, c in archs.items()}
    # The training runs' checkpoints are only needed until the subnets are measured: removed on exit.
    scratch = tempfile.TemporaryDirectory(prefix="weight_sharing_")
    tmp = Path(scratch.name)

    for name, cfg in archs.items() if "alone" in parts else ():
        if name not in result["alone"]:
            measured, secs = _train_alone(cfg, train, test, args, tmp / f"alone_{name}")
            result["alone"][name] = {**measured, "seconds": secs}
            save()
        print(f"alone {name}: {result['alone'][name]['accuracy']:.2f}% ({cfg['resolution']} px)", flush=True)

    for strategy in args.strategies.split(",") if "strategies" in parts else ():
        if strategy in result["strategies"] and strategy not in reuse:
            continue
        net, secs, run = _train_strategy(strategy, train, args, tmp / strategy, reuse)
        row = {"seconds": secs, "reused_run": run}
        for name, cfg in archs.items():
            measured = _measure(net, cfg, test, train, args.calib_batches)
            row[name] = measured["accuracy"]
            row[f"{name}_correct"] = measured["correct"]
        result["strategies"][strategy] = row
        save()
        print(f"{strategy}: trained in {secs:.0f} s", flush=True)

    alone = result["alone"]
    n_test = len(test)
    print(f"\n{'strategy':12s} {'train s':>7s} " + " ".join(f"{n:>7s} {'gap':>11s}" for n in NAMED))
    if alone:
        print(
            f"{'alone':12s} {sum(alone[n]['seconds'] for n in NAMED if n in alone):7.0f} "
            + " ".join(
                f"{alone[n]['accuracy']:7.2f} {'':>11s}" if n in alone else f"{'-':>7s} {'':>11s}"
                for n in NAMED
            )
        )
    for strategy, r in result["strategies"].items():
        cells = []
        for n in NAMED:
            inherited = {"accuracy": r[n], **({"correct": r[f"{n}_correct"]} if f"{n}_correct" in r else {})}
            gap = _gap(inherited, alone[n], n_test) if n in alone else ""
            cells.append(f"{r[n]:7.2f} {gap:>11s}")
        print(f"{strategy:12s} {r['seconds']:7.0f} " + " ".join(cells))
    if randoms:
        print("\n" + "\n".join(_random_summary(result, randoms, n_test)))
    elapsed = time.perf_counter() - started
    host = machine()
    print(f"\nran {elapsed:.0f} s on {describe(host)}; recipe {result['recipe']}, threads={args.threads}")
    # this session's time and machine; the parts' own "seconds" may come from earlier sessions (resumed)
    result.update(machine=host, session_seconds=elapsed)
    save()


if __name__ == "__main__":
    main()
