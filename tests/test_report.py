"""The HTML/PNG report of a search run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nas.report import default_reference, hypervolume_curve, write_report
from nas.search.result import SearchResult


def make_result(n: int = 40, seed: int = 0) -> SearchResult:
    rng = np.random.default_rng(seed)
    acc = rng.uniform(60, 95, n)
    h = pd.DataFrame(
        {
            "order": np.arange(n),
            "key": [f"k{i}" for i in range(n)],
            "config": [json.dumps({"i": i}) for i in range(n)],
            "accuracy": acc,
            "latency@cpu": acc / 10 + rng.uniform(0, 3, n),
            "latency@phone": acc / 5 + rng.uniform(0, 6, n),
            "violation": 0.0,
            "feasible": True,
            "status": "ok",
            "wall_time_s": 0.0,
        }
    )
    objectives = [("accuracy", "max"), ("latency@cpu", "min"), ("latency@phone", "min")]
    return SearchResult(h, objectives, {"algorithm": "random", "space": "toy", "seed": 0, "budget": n})


def test_report_has_one_section_per_target(tmp_path):
    result = make_result()
    index = write_report(result, tmp_path / "rep")
    text = index.read_text()
    assert "<h2>cpu</h2>" in text and "<h2>phone</h2>" in text
    for name in ("front_cpu.png", "hv_cpu.png", "front_phone.csv", "summary.json"):
        assert (tmp_path / "rep" / name).stat().st_size > 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    front = result.pareto(target="cpu")
    assert summary["fronts"]["cpu"]["front_keys"] == front["key"].tolist()
    csv = pd.read_csv(tmp_path / "rep" / "front_cpu.csv")
    assert csv["key"].tolist() == front["key"].tolist()
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.endswith(".tmp")]


def test_hypervolume_curve_never_decreases_and_ends_at_total():
    result = make_result()
    names = result.front_objectives("cpu")
    ref = default_reference(result, names)
    steps, hv = hypervolume_curve(result, names, ref, points=10)
    assert steps[-1] == len(result) and np.all(np.diff(hv) >= -1e-12)
    assert hv[-1] == pytest.approx(result.hypervolume(ref, target="cpu"))
    # The reference lies beyond every observed value, so every front point adds volume.
    assert ref["accuracy"] < result.history["accuracy"].min()
    assert ref["latency@cpu"] > result.history["latency@cpu"].max()


def test_empty_run_is_refused(tmp_path):
    result = make_result().history.iloc[:0]
    empty = SearchResult(result, [("accuracy", "max"), ("latency@cpu", "min")])
    with pytest.raises(ValueError, match="no evaluations"):
        write_report(empty, tmp_path)


def test_targets_whose_file_names_would_clash_get_their_own_files(tmp_path):
    h = make_result().history.rename(
        columns={"latency@cpu": "latency@my cpu", "latency@phone": "latency@my_cpu"}
    )
    result = SearchResult(h, [("accuracy", "max"), ("latency@my cpu", "min"), ("latency@my_cpu", "min")])
    text = write_report(result, tmp_path / "rep").read_text()
    for label in ("my cpu", "my_cpu"):
        # each section shows its own front: the second target's files used to overwrite the first's
        section = text.split(f"<h2>{label}</h2>", 1)[1].split("<h2>", 1)[0]
        png = section.split('<img src="', 1)[1].split('"', 1)[0]
        csv = pd.read_csv(tmp_path / "rep" / png.replace(".png", ".csv"))
        assert csv["key"].tolist() == result.pareto(target=label)["key"].tolist()
    assert len(list((tmp_path / "rep").glob("front_*.png"))) == 2
