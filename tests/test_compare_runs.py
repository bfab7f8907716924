"""examples/compare_runs.py: per-run rows from train_mnist.py's eval.json, the averages, and clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "compare_runs.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("_compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is being run
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def _run(tmp_path: Path, name: str, seed: int, min_weight: float, randoms: list[tuple[float, float, float]]):
    """A run directory whose eval.json holds max 99, min 98 and random (accuracy, points vs min, p)."""
    d = tmp_path / name
    d.mkdir()
    record = {
        "max": 99.0,
        "min": 98.0,
        "random": [
            {"accuracy": a, "vs_min": {"points": pts, "sd": 0.1, "p_value": p}} for a, pts, p in randoms
        ],
        "between_bootstrap": {"all_between": 0.25},
        "train_seconds": 700.0 + seed,
        "args": {"seed": seed, "min_weight": min_weight, "epochs": 12, "out": str(d), "resume": False},
    }
    (d / "eval.json").write_text(json.dumps(record))
    return d


def test_counts_between_and_significant_differences(compare, tmp_path):
    d = _run(
        tmp_path, "a", 0, 0.5, [(98.5, 0.5, 0.001), (97.9, -0.1, 0.5), (97.5, -0.5, 0.01), (99.2, 1.2, 0.0)]
    )
    s = compare.load_run(d)
    assert (s.between, s.randoms) == (1, 4)  # 97.9 and 97.5 below the min, 99.2 above the max
    assert (s.below, s.above) == (1, 2)  # -0.1 at p 0.5 counts as neither
    assert (s.random_low, s.random_high, s.redrawn_all_between) == (97.5, 99.2, 0.25)
    assert "out" not in s.options and s.options["seed"] == 0
    assert compare.load_run(d, alpha=0.6).below == 2


def test_table_shows_only_the_options_that_differ_and_averages(compare, tmp_path, capsys):
    a = _run(tmp_path, "a-s0", 0, 0.5, [(98.5, 0.5, 0.001)] * 20)
    b = _run(tmp_path, "b-s1", 1, 0.25, [(98.5, 0.5, 0.001)] * 19 + [(97.9, -0.1, 0.5)])
    assert compare.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["run", "seed", "min_weight"] and "epochs" not in header
    assert "20/20" in out and "19/20" in out
    assert "between 19.5 on average, all between in 1 of 2" in out
    assert "training 700-701 s" in out


def test_json_output_round_trips(compare, tmp_path, capsys):
    a = _run(tmp_path, "a", 3, 1.0, [(98.5, 0.5, 0.001)])
    assert compare.main([str(a), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["between"] == 1 and row["options"]["seed"] == 3


def test_a_run_without_eval_json_is_refused_with_the_fix(compare, tmp_path, capsys):
    (tmp_path / "unfinished").mkdir()
    assert compare.main([str(tmp_path / "unfinished")]) == 2
    err = capsys.readouterr().err
    assert "eval.json does not exist" in err and "--resume" in err


def test_old_runs_without_per_subnet_statistics_show_dashes(compare, tmp_path, capsys):
    d = tmp_path / "old"
    d.mkdir()
    (d / "eval.json").write_text(json.dumps({"max": 99.0, "min": 98.0, "random": [{"accuracy": 98.4}]}))
    assert compare.main([str(d)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[-3:] == ["-", "-", "-"] and "1/1" in row


def test_runs_with_the_same_directory_name_are_told_apart(compare, tmp_path, capsys):
    (tmp_path / "mw05").mkdir()
    (tmp_path / "plain").mkdir()
    a = _run(tmp_path / "mw05", "seed4", 4, 0.5, [(98.5, 0.5, 0.001)])
    b = _run(tmp_path / "plain", "seed4", 4, 1.0, [(98.5, 0.5, 0.001)])
    assert compare.main([str(a), str(b)]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows == ["mw05/seed4", "plain/seed4"]


def test_run_labels_keep_names_short_when_unique(compare):
    assert compare.run_labels(["/r/a", "/r/b"]) == ["a", "b"]
    assert compare.run_labels(["/r/a", "/r/a"]) == ["/r/a", "/r/a"]  # the same run twice: the whole path
