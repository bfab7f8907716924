"""benchmarks/weight_sharing.py --random: between counts, mean gap and rank correlation from stored results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.train.strategies import STRATEGIES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
N_TEST = 1000


@pytest.fixture(scope="module")
def ws():
    before = dict(STRATEGIES)  # the script registers a private strategy on import
    sys.path.insert(0, str(BENCHMARKS))  # it imports _common as `python benchmarks/...` would
    spec = importlib.util.spec_from_file_location("_weight_sharing", BENCHMARKS / "weight_sharing.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        STRATEGIES.clear()
        STRATEGIES.update(before)


def _correct(n_right: int) -> np.ndarray:
    """Right on the first ``n_right`` test images: nested sets, so the order of accuracies is unambiguous."""
    return np.arange(N_TEST) < n_right


def _measured(ws, n_right: int) -> dict:
    return {"accuracy": n_right / N_TEST * 100, "correct": ws._packed(torch.from_numpy(_correct(n_right)))}


def _result(ws, alone: dict[str, int], inherited: dict[str, int]) -> dict:
    row = {"seconds": 1.0, "reused_run": None}
    for name, n_right in inherited.items():
        m = _measured(ws, n_right)
        row[name], row[f"{name}_correct"] = m["accuracy"], m["correct"]
    return {
        "archs": {name: {} for name in alone},
        "alone": {name: {**_measured(ws, n), "seconds": 1.0} for name, n in alone.items()},
        "strategies": {"sandwich": row},
    }


def test_counts_gap_and_rank_correlation(ws) -> None:
    alone = {"max": 990, "mid": 980, "min": 950, "random0": 960, "random1": 970, "random2": 985}
    # inherited: every architecture 10 images lower, except random0, which falls below the min subnet
    inherited = {"max": 980, "mid": 970, "min": 940, "random0": 930, "random1": 960, "random2": 975}
    lines = ws._random_summary(_result(ws, alone, inherited), ["random0", "random1", "random2"], N_TEST)
    assert len(lines) == 2
    assert lines[0].startswith("alone") and " 3/3 random between min and max, 0 below, 0 above" in lines[0]
    assert "redrawn test set: 100.0%" in lines[0]  # nested sets: every redraw keeps the order
    assert lines[1].startswith("sandwich") and " 2/3 random between min and max, 1 below, 0 above" in lines[1]
    assert "redrawn test set: 0.0%" in lines[1]
    assert "mean gap over them -1.67" in lines[1]  # (-3 - 1 - 1) / 3 points
    # one discordant pair (random0, min) of 15: tau = (14 - 1) / 15
    assert f"Kendall tau vs alone (6) {13 / 15:.2f}" in lines[1]


def test_strategy_measured_before_random_was_given_is_left_out(ws) -> None:
    alone = {"max": 990, "mid": 980, "min": 950, "random0": 960}
    inherited = {
        "max": 980,
        "mid": 970,
        "min": 940,
    }  # no random0: evaluated by an earlier run without --random
    lines = ws._random_summary(_result(ws, alone, inherited), ["random0"], N_TEST)
    assert len(lines) == 2 and lines[0].startswith("alone")
    assert lines[1].startswith("sandwich") and "random subnets not measured" in lines[1]


def test_kendall_tau_orders(ws) -> None:
    assert ws._kendall_tau([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert ws._kendall_tau([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == pytest.approx(-1.0)


def test_a_random_architecture_above_the_max_counts_as_above(ws) -> None:
    alone = {
        "max": 970,
        "mid": 960,
        "min": 950,
        "random0": 990,
    }  # trained alone, it beats the max architecture
    lines = ws._random_summary(_result(ws, alone, {}), ["random0"], N_TEST)
    assert " 0/1 random between min and max, 0 below, 1 above" in lines[0]


def test_preset_is_recorded_and_a_reused_run_of_another_preset_is_refused(ws, tmp_path) -> None:
    import argparse
    import json

    def args(preset: str) -> argparse.Namespace:
        return argparse.Namespace(
            preset=preset, epochs=12, batch_size=64, lr=0.004, optimizer="adamw", weight_decay=3e-5,
            augment=True, n_random=4, seed=0, calib_batches=ws.CALIB_BATCHES,
            attentive=None, low_res_bias=None, min_weight=1.0,
        )  # fmt: skip

    # small: the recipe as stored before presets existed, so earlier results still match
    assert "preset" not in ws._recipe(args("small"))
    assert ws._recipe(args("narrow"))["preset"] == "narrow"
    stored = {k: v for k, v in ws._train_options(args("narrow")).items() if k != "progress"}
    stored |= {"strategy": "sandwich", "n_random": 4, "strategy_options": {}}
    (tmp_path / "train.json").write_text(json.dumps({"settings": stored, "seconds": 1.0}))
    (tmp_path / "eval.json").write_text(json.dumps({"args": {"preset": "small"}}))
    with pytest.raises(SystemExit, match=r"trained the 'small' preset, here --preset narrow"):
        ws._check_reused(tmp_path, "sandwich", args("narrow"))
    (tmp_path / "eval.json").write_text(json.dumps({"args": {"preset": "narrow"}}))
    assert ws._check_reused(tmp_path, "sandwich", args("narrow"))["seconds"] == 1.0
