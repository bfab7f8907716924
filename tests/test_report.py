"""The HTML/PNG report of a search run."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from nas.cli import main
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


def test_hypervolume_curve_matches_pymoo_recomputed_after_every_evaluation():
    """Each point of the curve is the hypervolume of the feasible successful evaluations made so far, over the
    target's own objectives only (the other target's latency, infeasible and failed rows ignored)."""
    from pymoo.indicators.hv import HV

    result = make_result(n=60, seed=4)
    h = result.history
    rng = np.random.default_rng(4)
    infeasible = rng.random(len(h)) < 0.2
    h.loc[infeasible, ["violation", "feasible"]] = [1.0, False]
    failed = rng.random(len(h)) < 0.1
    h.loc[failed, ["accuracy", "latency@cpu", "latency@phone"]] = np.nan
    h.loc[failed, ["violation", "feasible", "status"]] = [np.inf, False, "failed"]
    names = result.front_objectives("cpu")
    usable = h[h["feasible"] & (h["status"] == "ok")]
    beyond_some = {"accuracy": 75.0, "latency@cpu": 9.0}  # some evaluations lie outside this box
    for ref in (default_reference(result, names), beyond_some):
        steps, hv = hypervolume_curve(result, names, ref, points=60)
        assert steps.tolist() == list(range(1, 61))
        ref_min = np.array([-ref["accuracy"], ref["latency@cpu"]])
        for n, value in zip(steps, hv):
            seen = usable[usable["order"] < n]
            F = np.column_stack([-seen["accuracy"], seen["latency@cpu"]])
            inside = F[(ref_min > F).all(axis=1)]
            assert value == pytest.approx(HV(ref_point=ref_min)(inside) if len(inside) else 0.0, abs=1e-12)


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


def _store(path, values: list[dict[str, float]], error: str | None = None) -> str:
    """A store (built through the store API, as a search writes it) of one evaluation per entry of ``values``;
    with ``error`` every evaluation failed with it."""
    from nas.search.store import open_store

    url = f"sqlite:///{path}"
    store = open_store(url)
    names = list(values[0])
    objectives = [{"name": n, "direction": "max" if n == "accuracy" else "min"} for n in names]
    store.write_meta(
        {"space": "toy", "algorithm": "random", "seed": 0, "budget": len(values), "objectives": objectives}
    )
    for i, v in enumerate(values):
        failed = error is not None
        store.add(
            {
                "key": f"k{i}",
                "config": json.dumps({"i": i}),
                "values": {n: math.nan for n in v} if failed else v,
                "violation": math.inf if failed else 0.0,
                "status": "failed" if failed else "ok",
                "error": error,
                "wall_time_s": 0.1,
                "worker": "local",
            }
        )
    store.close()
    return url


def test_a_target_without_finite_values_is_left_out_saying_why(tmp_path, caplog):
    """Every evaluation on the phone failed to give a latency: the cpu front is still reported."""
    values = [{"accuracy": 80.0 + i, "latency@cpu": 1.0 + i, "latency@phone": math.inf} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="nas.report"):
        text = write_report(_store(tmp_path / "s.db", values), tmp_path / "rep").read_text()
    why = "latency@phone has no finite value in any of the 4 successful feasible evaluations"
    assert any("phone" in r.getMessage() and why in r.getMessage() for r in caplog.records)
    phone = text.split("<h2>phone</h2>", 1)[1]
    assert phone.startswith(f"<p class='skipped'>No Pareto front: {why}.</p>")
    assert "<h2>cpu</h2>" in text and '<img src="front_cpu.png" alt="Pareto front for cpu">' in text
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == [
        "front_cpu.csv",
        "front_cpu.png",
        "hv_cpu.png",
        "index.html",
        "report_files.json",
        "summary.json",
    ]
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert list(summary["fronts"]) == ["cpu"] and summary["skipped"] == {"phone": why}
    assert summary["fronts"]["cpu"]["front_size"] == 4


def test_a_run_where_no_target_has_a_front_is_a_clear_error(tmp_path, capsys):
    values = [{"accuracy": 0.0, "latency@cpu": 0.0, "latency@phone": 0.0}] * 3
    db = tmp_path / "s.db"
    _store(db, values, error="RuntimeError: no such checkpoint")
    with pytest.raises(ValueError, match="no target has a Pareto front: none of the 3 evaluations succeeded"):
        write_report(f"sqlite:///{db}", tmp_path / "rep")
    assert main(["report", str(db), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "first error: RuntimeError: no such checkpoint" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "rep").exists()


def test_a_new_report_removes_its_own_stale_files_only(tmp_path):
    """Regenerated for a run without the phone target, the phone plots go; files the report never wrote stay."""
    out = tmp_path / "rep"
    write_report(make_result(n=8), out)
    assert (out / "front_phone.png").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "front_mine.png").write_bytes(b"mine too")  # named like a report's, but this report never wrote it
    h = make_result(n=8).history.drop(columns=["latency@phone"])
    write_report(SearchResult(h, [("accuracy", "max"), ("latency@cpu", "min")]), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "front_cpu.csv",
        "front_cpu.png",
        "front_mine.png",
        "hv_cpu.png",
        "index.html",
        "notes.txt",
        "report_files.json",
        "summary.json",
    ]
    # A list of files edited by hand cannot make the report delete other files, inside --out or beside it.
    (tmp_path / "front_outside.png").write_bytes(b"x")
    listed = ["notes.txt", "../front_outside.png", "index.html", "front_cpu.png"]
    (out / "report_files.json").write_text(json.dumps({"files": listed}))
    write_report(SearchResult(h, [("accuracy", "max"), ("latency@cpu", "min")]), out)
    assert (out / "notes.txt").read_text() == "mine" and (tmp_path / "front_outside.png").is_file()
    assert (out / "front_cpu.png").is_file() and (out / "index.html").is_file()


@pytest.mark.parametrize("name", ["index.html", "summary.json", "front_cpu.csv"])
def test_a_folder_with_files_no_report_wrote_is_refused_before_anything_is_written(tmp_path, capsys, name):
    """`--out` pointed at a folder of the user's (a website, a results folder) must not overwrite their files."""
    out = tmp_path / "site"
    out.mkdir()
    (out / name).write_text("the user's own")
    with pytest.raises(FileExistsError, match=name):
        write_report(make_result(n=8), out)
    assert sorted(p.name for p in out.iterdir()) == [name] and (out / name).read_text() == "the user's own"
    store = tmp_path / "run.db"
    _store(store, [{"accuracy": 90.0 + i, "latency@cpu": 1.0 + i} for i in range(3)])
    assert main(["report", str(store), "--out", str(out)]) == 2
    assert "choose an empty or new --out folder" in capsys.readouterr().err
    (out / "notes.txt").write_text("x")  # other files never stop a report
    (out / name).unlink()
    write_report(make_result(n=8), out)
    assert (out / "notes.txt").read_text() == "x" and (out / "index.html").is_file()


def test_a_report_folder_is_rewritten_even_one_written_before_reports_listed_their_files(tmp_path):
    out = tmp_path / "rep"
    write_report(make_result(n=8), out)
    write_report(make_result(n=9), out)  # its own report_files.json
    assert json.loads((out / "summary.json").read_text())["evaluations"] == 9
    (out / "report_files.json").unlink()  # as a report of an earlier version left its folder
    write_report(make_result(n=10), out)
    assert json.loads((out / "summary.json").read_text())["evaluations"] == 10
    (out / "report_files.json").unlink()
    page = (out / "index.html").read_text().replace("<meta name='generator' content='nas report'>", "")
    (out / "index.html").write_text(page)  # the page of an earlier version had no generator tag
    write_report(make_result(n=11), out)
    assert json.loads((out / "summary.json").read_text())["evaluations"] == 11


def test_loading_a_run_closes_the_store_it_opened(tmp_path, monkeypatch):
    """SearchResult.load left its SQLite connection to garbage collection: the -wal/-shm files (and the lock)
    stayed beside the database for a while (a CI folder listing caught them). A store passed in stays open."""
    from nas.search.store import Store, open_store

    url = _store(tmp_path / "s.db", [{"accuracy": 90.0, "latency@cpu": 1.0}])
    closed = []
    monkeypatch.setattr(Store, "close", lambda self, _close=Store.close: closed.append(self) or _close(self))
    SearchResult.load(url)
    assert len(closed) == 1
    store = open_store(url, create=False)
    assert len(SearchResult.load(store)) == 1 and len(closed) == 1  # the caller's store: still open
    assert len(store.records()) == 1
    store.close()


def test_a_target_label_with_dollar_signs_is_plotted_as_written(tmp_path):
    # A target is named after its file (cost$_$.json -> "cost$_$"): matplotlib read the text between the $ signs
    # as mathtext, and a malformed one ("$_$") failed the whole report with an empty ValueError.
    h = make_result().history.rename(columns={"latency@phone": "latency@cost$_$"})
    result = SearchResult(h, [("accuracy", "max"), ("latency@cpu", "min"), ("latency@cost$_$", "min")])
    text = write_report(result, tmp_path / "rep").read_text()
    assert "<h2>cost$_$</h2>" in text
    assert (tmp_path / "rep" / "front_cost___.png").stat().st_size > 0


def test_a_report_that_fails_part_way_writes_nothing(tmp_path, monkeypatch):
    import nas.report

    calls = []

    def failing_hv_plot(*args):
        calls.append(args)
        if len(calls) == 2:  # the second target's plot: the first target's files would already be written
            raise RuntimeError("plot failed")
        return b"png"

    monkeypatch.setattr(nas.report, "_plot_hv", failing_hv_plot)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(make_result(), tmp_path / "rep")
    assert not (tmp_path / "rep").exists()  # not a folder of one target's plots, a file list and no page
