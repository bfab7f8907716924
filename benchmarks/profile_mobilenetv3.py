"""Profile random MobileNetV3 (small preset) subnets on this CPU and fit latency predictors on them.

Steps (each stage's output is kept under ``--results`` (benchmarks/results/), so a rerun resumes instead of
re-measuring):

1. ``run_profile``: ``--samples`` random subnets, torch eager backend, batch 1, fixed ``--threads``, interleaved
   rounds (every round visits all configs in a fresh random order), ``--repeats`` timed calls per config.
2. The noise floor: median CV and median IQR/median of the repeats, and a *re-measurement* of ``--recheck`` test
   configs in a second interleaved run: how often a second measurement of the same subnet lands within 10% of
   the first is the best within_10pct any predictor can be scored at.
3. Predictors from ``predictors.fit`` on ``space.features`` (and with the lookup-table features appended),
   fitted on ``--train`` configs and tested on the rest, for the median latency and the 10th-percentile latency.
4. The OFA-style lookup table: every layer shape of the sampled subnets timed once as a standalone module,
   calibrated (scale + overhead) on ``--calib`` training subnets, tested on the same held-out configs.

Run:  .venv/bin/python benchmarks/profile_mobilenetv3.py            (about 10-20 min on a shared 2-core machine)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import describe, machine, write_json  # noqa: E402

import predictors  # noqa: E402
from nas.hw.cli_hooks import run_profile  # noqa: E402
from nas.hw.lut import LUT_FEATURE_NAMES, LatencyLUT, lut_feature  # noqa: E402
from nas.hw.measure import profile  # noqa: E402
from nas.hw.profiles import Profile  # noqa: E402
from search_spaces import mobilenetv3  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METRICS = ("within_10pct", "within_5pct", "mape", "kendall_tau")


def _row(name: str, m: dict[str, float]) -> str:
    # widths match the header in main(): within10 8, within5 7, MAPE 7, tau 6
    return (
        f"| {name:<34} | {m['within_10pct']:>8.1%} | {m['within_5pct']:>7.1%} | {m['mape']:>6.2f}% "
        f"| {m['kendall_tau']:>6.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=45)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--recheck", type=int, default=50, help="test configs measured a second time (noise floor)"
    )
    ap.add_argument("--calib", type=int, default=20, help="whole networks calibrating the lookup table")
    ap.add_argument("--kinds", default="ridge,gbdt,lut,ensemble,auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--clock",
        choices=("wall", "thread_cpu"),
        default="wall",
        help="wall time, or the timed thread's CPU time (robust to other jobs on a shared machine)",
    )
    ap.add_argument("--tag", default=None, help="file name stem of the stage files and the JSON")
    ap.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="folder of the stage files (resumed from) and of the JSON profile_TAG.json (default: %(default)s)",
    )
    args = ap.parse_args(argv)
    if args.tag is None:
        args.tag = "mobilenetv3-small-torch-b1" + ("-cpuclock" if args.clock == "thread_cpu" else "")
    t0 = time.time()
    args.results.mkdir(parents=True, exist_ok=True)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    space = net.space

    # 1. profile (resumable)
    prof_path = args.results / f"{args.tag}.csv"
    prof = run_profile(
        net,
        "torch",
        args.samples,
        prof_path,
        batch_size=1,
        threads=args.threads,
        seed=args.seed,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        chunk=args.samples,
        max_cached=args.samples,
        clock=args.clock,
    )
    configs = prof.configs
    n = len(configs)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(n)
    train, test = perm[: args.train], perm[args.train :]
    print(f"profile: {n} configs, train {len(train)}, test {len(test)} ({time.time() - t0:.0f}s so far)")

    # 2. noise floor
    rel_iqr = prof.latency_iqr_ms / prof.latency_ms
    noise = {
        "median_cv": float(np.median(prof.latency_cv)),
        "median_iqr_rel": float(np.median(rel_iqr)),
        "p90_cv": float(np.percentile(prof.latency_cv, 90)),
    }
    recheck_path = args.results / f"{args.tag}-recheck.csv"
    recheck_cfgs = [configs[i] for i in test[: args.recheck]]
    if recheck_path.exists() and len(Profile.load(recheck_path)) == len(recheck_cfgs):
        again = Profile.load(recheck_path)
    else:
        again = profile(
            net,
            recheck_cfgs,
            threads=args.threads,
            warmup=args.warmup,
            repeats=args.repeats,
            rounds=args.rounds,
            seed=args.seed + 1,
            max_cached=len(recheck_cfgs),
            clock=args.clock,
        )
        again.save(recheck_path)
    first = {c.key: i for i, c in enumerate(configs)}
    idx = [first[c.key] for c in again.configs]
    repeat_metrics = {}
    for metric in ("latency_ms", "latency_p10_ms"):
        # Scored like a predictor: the second measurement "predicts" the first.
        repeat_metrics[metric] = predictors.metrics(prof.metric(metric)[idx], again.metric(metric))

    # 4 (before 3: its features feed the learned predictors). lookup table over the layers of all subnets
    lut_path = args.results / f"{args.tag}-lut.json"
    lut = LatencyLUT.load(lut_path) if lut_path.exists() else LatencyLUT({})
    added = lut.extend(
        net,
        configs,
        threads=args.threads,
        warmup=args.warmup,
        repeats=args.repeats,
        rounds=args.rounds,
        seed=args.seed,
        clock=args.clock,
    )
    lut_features = np.stack([lut_feature(net, c, lut) for c in configs])
    results: dict[str, dict] = {"noise": noise, "remeasure": repeat_metrics, "predictors": {}, "lut": {}}
    lut_rows = {}
    for metric in ("latency_ms", "latency_p10_ms"):
        y = prof.metric(metric)
        calib = train[: args.calib]
        fit = lut.calibrate(net, [configs[i] for i in calib], y[calib])
        pred = lut.predict(net, [configs[i] for i in test])
        m = predictors.metrics(y[test], pred)
        lut_rows[metric] = m
        results["lut"][metric] = {"calibration": fit, "test": m}
    lut.calibrate(net, [configs[i] for i in train[: args.calib]], prof.latencies[train[: args.calib]])
    lut.save(lut_path)
    print(f"lookup table: {len(lut)} layer shapes ({added} measured this run)")

    # 3. learned predictors
    X_space = space.features_matrix(configs)
    X_lut = np.hstack([X_space, lut_features])
    names_space = list(space.feature_names)
    feature_sets = {
        "space": (X_space, names_space),
        "space+lut": (X_lut, names_space + list(LUT_FEATURE_NAMES)),
    }
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for metric in ("latency_ms", "latency_p10_ms"):
        y = prof.metric(metric)
        rows[metric] = {}
        for fs, (X, names) in feature_sets.items():
            for kind in args.kinds.split(","):
                t = time.time()
                p = predictors.fit(X[train], y[train], kind=kind, seed=args.seed, feature_names=names)
                m = predictors.evaluate(p, X[test], y[test])
                m["fit_s"] = time.time() - t
                label = f"{kind}{' (' + p.kind + ')' if kind == 'auto' else ''} on {fs}"
                rows[metric][label] = m
    results["predictors"] = rows

    # table
    meta = prof.metadata
    print()
    print(
        f"MobileNetV3 small, torch eager, batch 1, {meta.get('threads')} thread(s), CPU {meta.get('cpu')} "
        f"({meta.get('cpu_count')} cores, shared with other jobs); clock {meta.get('clock', 'wall')}; {n} subnets, {prof.repeats[0]} timed repeats "
        f"each over {meta.get('rounds')} interleaved rounds"
    )
    print(
        f"load average at start/end of profiling: {meta.get('load_average_start')} / {meta.get('load_average_end')}"
    )
    print(
        f"noise: median CV {noise['median_cv']:.1%}, median IQR/median {noise['median_iqr_rel']:.1%}, "
        f"90th pct CV {noise['p90_cv']:.1%}; latency range {prof.latencies.min():.2f}-{prof.latencies.max():.2f} ms"
    )
    for metric in ("latency_ms", "latency_p10_ms"):
        print()
        print(
            f"target: {metric} ({'median' if metric == 'latency_ms' else '10th percentile'} of the repeats)"
        )
        print(
            f"| {'predictor (test ' + str(len(test)) + ' configs)':<34} | within10 | within5 | MAPE    | tau    |"
        )
        print(f"|{'-' * 36}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|")
        print(_row(f"re-measurement ({len(idx)} cfgs)", repeat_metrics[metric]))
        print(_row(f"lookup table (calib {args.calib})", lut_rows[metric]))
        for label, m in rows[metric].items():
            print(_row(label, m))
    elapsed = time.time() - t0
    host = machine()
    print(
        f"\nbenchmark ran {elapsed:.0f}s on {describe(host)} (profiling itself: {meta.get('duration_s')}s in the "
        "run that measured it)"
    )
    results.update(
        {
            "conditions": {
                k: meta.get(k)
                for k in (
                    "cpu",
                    "cpu_count",
                    "threads",
                    "backend",
                    "batch_size",
                    "clock",
                    "repeats",
                    "rounds",
                    "warmup",
                    "load_average_start",
                    "load_average_end",
                    "versions",
                    "measured_at",
                    "duration_s",
                )
            },
            "samples": n,
            "train": len(train),
            "test": len(test),
            "lut_layers": len(lut),
            "elapsed_s": elapsed,
            "host": platform.node(),
            "machine": host,
            "pid": os.getpid(),
        }
    )
    print(f"wrote {write_json(args.results / f'profile_{args.tag}.json', results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
