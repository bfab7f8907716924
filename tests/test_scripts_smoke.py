"""Smoke tests of the scripts in ``benchmarks/`` and ``examples/``, which CI does not otherwise run.

Cheap guards against rot after API changes: every script imports and its ``--help`` exits 0 (in this process,
as ``python SCRIPT --help`` would run it), every benchmark takes ``--out`` and writes its JSON through the
atomic helper with the machine and run time, the edgetpu table gaps are skipped, and two benchmarks run for
real at their smallest settings (a few seconds each, in a subprocess so their thread settings stay there).
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from nas.train import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


def _load(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a script as a module under a private name (``benchmarks/predictors.py`` would shadow the
    ``predictors`` package), with its folder on ``sys.path`` as when it runs as a script."""
    monkeypatch.syspath_prepend(str(path.parent))  # restored after the test, with what the script inserts
    spec = importlib.util.spec_from_file_location(f"_smoke_{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_MODE": "disabled",
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=tmp_path,  # a script that wrote beside the working directory would write here, not into the tree
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture
def keep_strategies():
    """``weight_sharing.py`` registers a private training strategy on import; keep the registry as it was."""
    before = dict(STRATEGIES)
    yield
    STRATEGIES.clear()
    STRATEGIES.update(before)


def test_scripts_found() -> None:
    # a moved folder would otherwise leave the parametrized tests below with nothing to check
    assert len(BENCHMARKS) >= 10 and len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", BENCHMARKS + EXAMPLES, ids=_ids(BENCHMARKS + EXAMPLES))
def test_help_exits_zero(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_strategies: None
) -> None:
    monkeypatch.syspath_prepend(str(path.parent))  # what `python path` puts first on sys.path
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(path), run_name="__main__")
    assert exc.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:500]
    if path.parent.name == "benchmarks":
        # every benchmark can be pointed away from benchmarks/results/ (a trial run must not clobber results)
        assert "--out" in out or "--results" in out


@pytest.mark.parametrize("path", BENCHMARKS, ids=_ids(BENCHMARKS))
def test_benchmark_writes_json_atomically_with_machine(path: Path) -> None:
    source = path.read_text()
    # a plain write (or a fixed temp name beside the file) can leave half a file, or race another run
    assert not re.search(r"\.write_text\(|\.write_bytes\(|os\.replace\(|\.replace\(out|json\.dump\(", source)
    assert "write_json(" in source, "write the result JSON with benchmarks/_common.py's write_json"
    assert "machine()" in source and "describe(" in source, "record and print the machine it ran on"


def test_benchmark_doctests(monkeypatch: pytest.MonkeyPatch, keep_strategies: None) -> None:
    # pytest's --doctest-modules does not collect benchmarks/, so their examples run here
    paths = [p for p in (ROOT / "benchmarks").glob("*.py") if ">>>" in p.read_text()]
    assert paths
    for path in paths:
        result = doctest.testmod(_load(path, monkeypatch))
        assert result.attempted > 0 and result.failed == 0, f"{path.name}: {result} (see the output above)"


def test_edgetpu_gaps_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    # HW-NAS-Bench left 4,699 edgetpu cells unmeasured (NaN in nb201.table()): both benchmarks crashed on
    # them (a fit on NaN, nb201.latency raising), though both accept edgetpu as a device
    import pandas as pd

    table = pd.DataFrame(
        {
            "latency_edgetpu": [1.0, np.nan, 2.0, 3.0, np.nan],
            "latency_raspi4": [1.0, 2.0, 3.0, 4.0, 5.0],
            "connected": [True, True, False, True, False],
        }
    )
    predictors_bench = _load(ROOT / "benchmarks" / "predictors.py", monkeypatch)
    noise_bench = _load(ROOT / "benchmarks" / "nb201_latency_noise.py", monkeypatch)
    assert predictors_bench.measured_cells(table, "edgetpu").tolist() == [0, 3]
    assert predictors_bench.measured_cells(table, "raspi4").tolist() == [0, 1, 3]
    keep, latency = noise_bench.measured_latencies(table, "edgetpu")
    assert keep.tolist() == [0, 3] and latency.tolist() == [1.0, 3.0]


def test_quant_sparse_prints_no_nan_for_missing_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    quant = _load(ROOT / "benchmarks" / "quant_sparse.py", monkeypatch)
    assert quant._accuracy_cell({}, "acc_int8", 8) == "       -"
    assert quant._accuracy_cell({"acc_int8": 97.5}, "acc_int8", 8) == "   97.50"


def test_search_nb201_short_budget(tmp_path: Path) -> None:
    # a budget below the first checkpoint (50) used to print and store no hypervolume at all
    out = tmp_path / "search_nb201.json"
    proc = _run(
        "benchmarks/search_nb201.py",
        *("--targets", "fpga", "--algorithms", "random", "--seeds", "1", "--budget", "20", "--out", str(out)),
        tmp_path=tmp_path,
    )
    assert "HV@20" in proc.stdout and " on " in proc.stdout.splitlines()[-2]
    result = json.loads(out.read_text())
    (row,) = result["summary"]
    assert 0.0 < row["hv20"]["median"] <= 1.0
    assert result["machine"]["cpus"] >= 1 and result["elapsed_s"] > 0
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file behind


def test_search_overhead_small_budget(tmp_path: Path) -> None:
    # TPE ran 300 evaluations whatever --budget said
    out = tmp_path / "search_overhead.json"
    _run("benchmarks/search_overhead.py", "--no-ray", "--budget", "5", "--out", str(out), tmp_path=tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["algorithm"], r["store"]) for r in rows] == [
        ("random", "memory"),
        ("random", "sqlite"),
        ("nsga2", "memory"),
        ("nsga2", "sqlite"),
        ("tpe", "memory"),
    ]
    assert all(r["evaluations"] == 5 and np.isfinite(r["evals_per_s"]) for r in rows)
