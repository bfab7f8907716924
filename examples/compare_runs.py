"""Compare finished runs of ``examples/train_mnist.py``: one row per run, then the averages over them.

Reads each run directory's ``eval.json`` and prints, per run, the options that differ between the runs (seed,
``--min-weight``, ...), the training time, the max and min subnets' test accuracy, the range of the random
subnets, how many of them landed between the min and max subnets, how many sit significantly below the min
subnet or significantly above it (McNemar p < ``--alpha`` on the same test images), and how often all of them
would land between on a redrawn test set (the paired bootstrap of ``nas.significance``). The last lines
average the runs and count those with every random subnet between.

Why: the issue's acceptance ("20 random subnets all land between them") is a property of one run, and one
seed says little about a recipe; comparing recipes means running several seeds of each and reading them side
by side.

    .venv/bin/python examples/compare_runs.py runs/mnist-s*                 # one recipe over seeds
    .venv/bin/python examples/compare_runs.py runs/a-s* runs/b-s* --json    # two recipes, as JSON

Runs evaluated before the per-subnet statistics existed (no ``vs_min`` in their ``eval.json``) show ``-`` in
those columns; rerun ``train_mnist.py`` with the same options and ``--resume`` to evaluate them again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Options that say nothing about the recipe: where the run went and how it was started.
_NOT_RECIPE = frozenset({"out", "resume", "device"})


@dataclass(frozen=True)
class RunSummary:
    """One run's numbers, from its ``eval.json``."""

    run: str
    options: dict[str, Any]
    train_seconds: float | None
    max: float
    min: float
    random_low: float | None
    random_high: float | None
    between: int
    randoms: int
    below: int | None  # significantly below the min subnet
    above: int | None  # significantly above the min subnet
    redrawn_all_between: float | None  # fraction of redrawn test sets with every random subnet between


def load_run(run_dir: Path, alpha: float = 0.05) -> RunSummary:
    """Summarise ``run_dir/eval.json``; a missing or unreadable file is an error that names the fix.

    Example:
        >>> import json, tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "eval.json").write_text(json.dumps({"max": 99.0, "min": 97.0, "random": [
        ...     {"accuracy": 98.0, "vs_min": {"points": 1.0, "sd": 0.1, "p_value": 0.001}}]}))
        >>> s = load_run(d)
        >>> (s.between, s.randoms, s.above, s.below)
        (1, 1, 1, 0)
    """
    path = run_dir / "eval.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{path} does not exist: {run_dir} is not a finished train_mnist.py run (it writes eval.json after "
            f"evaluating; an interrupted one finishes with the same options and --resume)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); evaluate the run again with --resume") from None
    try:
        top, bottom, randoms = float(record["max"]), float(record["min"]), record["random"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} lacks the max, min and random entries train_mnist.py writes") from None
    accuracies = [float(r["accuracy"]) for r in randoms]
    stats = [r.get("vs_min") for r in randoms]
    known = bool(stats) and all(isinstance(s, dict) for s in stats)
    bootstrap = record.get("between_bootstrap")
    return RunSummary(
        run=str(run_dir),
        options={k: v for k, v in (record.get("args") or {}).items() if k not in _NOT_RECIPE},
        train_seconds=record.get("train_seconds"),
        max=top,
        min=bottom,
        random_low=min(accuracies, default=None),
        random_high=max(accuracies, default=None),
        between=sum(bottom <= a <= top for a in accuracies),
        randoms=len(accuracies),
        below=sum(s["p_value"] < alpha and s["points"] < 0 for s in stats) if known else None,
        above=sum(s["p_value"] < alpha and s["points"] > 0 for s in stats) if known else None,
        redrawn_all_between=bootstrap.get("all_between") if isinstance(bootstrap, dict) else None,
    )


def differing_options(runs: list[RunSummary]) -> list[str]:
    """The option names whose values are not the same in every run (in first-seen order)."""
    names: dict[str, None] = {}
    for r in runs:
        names.update(dict.fromkeys(r.options))
    return [n for n in names if len({json.dumps(r.options.get(n)) for r in runs}) > 1]


def run_labels(paths: list[str]) -> list[str]:
    """Each run's shortest trailing path that no other run shares (``a/seed1`` and ``b/seed1``, not two ``seed1``).

    Example:
        >>> run_labels(["x/a/seed1", "x/b/seed1", "x/b/seed2"])
        ['a/seed1', 'b/seed1', 'seed2']
    """
    parts = [Path(p).parts or (p,) for p in paths]

    def label(i: int, n: int) -> str:
        return str(Path(*parts[i][-n:]))

    labels = []
    for i, own in enumerate(parts):
        n = 1
        while n < len(own) and any(label(j, n) == label(i, n) for j in range(len(parts)) if j != i):
            n += 1
        labels.append(label(i, n))
    return labels


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def table(runs: list[RunSummary]) -> str:
    """The per-run rows and the averages, as fixed-width text."""
    shown = differing_options(runs)
    head = ["run", *shown, "train s", "max", "min", "random", "between", "below", "above", "redrawn"]
    rows = []
    for r, label in zip(runs, run_labels([r.run for r in runs]), strict=True):
        spread = (
            "-" if r.random_low is None else f"{r.random_low:.2f}-{r.random_high:.2f}"
        )  # a run with no random subnets
        rows.append(
            [
                label,
                *(_cell(r.options.get(n)) for n in shown),
                _cell(r.train_seconds, "{:.0f}"),
                f"{r.max:.2f}",
                f"{r.min:.2f}",
                spread,
                f"{r.between}/{r.randoms}",
                _cell(r.below),
                _cell(r.above),
                _cell(None if r.redrawn_all_between is None else 100 * r.redrawn_all_between, "{:.1f}%"),
            ]
        )
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)) for line in [head, *rows]]
    complete = sum(r.between == r.randoms for r in runs)
    lines.append("")
    lines.append(
        f"{len(runs)} runs: between {statistics.mean(r.between for r in runs):.1f} on average, all between in "
        f"{complete} of {len(runs)}; max {statistics.mean(r.max for r in runs):.2f} (lowest "
        f"{min(r.max for r in runs):.2f}), min {statistics.mean(r.min for r in runs):.2f} (lowest "
        f"{min(r.min for r in runs):.2f})"
    )
    seconds = [r.train_seconds for r in runs if r.train_seconds is not None]
    if seconds:
        lines.append(f"training {min(seconds):.0f}-{max(seconds):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "runs", nargs="+", type=Path, help="run directories of train_mnist.py (each with eval.json)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.05, help="McNemar p-value below which a difference counts"
    )
    p.add_argument("--json", action="store_true", help="print the summaries as JSON instead of a table")
    args = p.parse_args(argv)
    if not 0 < args.alpha < 1:
        p.error(f"--alpha {args.alpha}: use a level between 0 and 1, e.g. 0.05")
    try:
        runs = [load_run(d, args.alpha) for d in args.runs]
    except ValueError as exc:
        print(f"compare_runs.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps([asdict(r) for r in runs], indent=2) if args.json else table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
