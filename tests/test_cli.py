"""The `nas` command on the tabular NAS-Bench-201 space (no training needed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from nas.cli import CliError, main, parse_constraint, parse_duration_ms, target_label
from nas.search import SearchResult


def test_parsers():
    assert parse_duration_ms("4ms") == 4.0
    assert parse_duration_ms("0.5s") == 500.0
    assert parse_constraint("latency@raspi4<=5ms") == ("latency@raspi4", "<=", 5.0)
    assert parse_constraint("accuracy >= 90") == ("accuracy", ">=", 90.0)
    assert target_label("runs/my-cpu.json") == "my-cpu"
    with pytest.raises(CliError, match="4ms"):
        parse_duration_ms("fast")
    with pytest.raises(CliError, match="latency@raspi4<=5ms"):
        parse_constraint("latency < 5")


def test_search_report_and_resume_on_nb201(tmp_path, capsys):
    db = tmp_path / "search.db"
    args = ["search", "--space", "nb201", "--target", "raspi4", "--target", "nb201-pixel3"]
    args += ["--algorithm", "random", "--store", str(db), "--quiet", "--constraint", "latency@raspi4<=60ms"]
    assert main([*args, "--budget", "25"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front for raspi4" in out and "Pareto front for nb201-pixel3" in out
    recipe = json.loads((tmp_path / "search.db.nas.json").read_text())
    assert recipe["space"] == "nb201" and set(recipe["targets"]) == {"raspi4", "nb201-pixel3"}

    # Resuming with a larger budget extends the finished run; a budget below what it holds is refused.
    assert main([*args, "--budget", "30", "--resume"]) == 0
    assert len(SearchResult.load(str(db)).history) == 30
    assert main([*args, "--budget", "20", "--resume"]) == 2
    assert "already holds 30 evaluations" in capsys.readouterr().err
    # without --resume: the flag to add is named (the library's resume=True alone meant nothing in a shell)
    assert main([*args, "--budget", "30"]) == 2
    assert "(nas search --resume) to continue it" in capsys.readouterr().err
    # ... and a refused resume with other targets leaves the run's recipe as it was
    other = ["search", "--space", "nb201", "--target", "fpga", "--algorithm", "random", "--store", str(db)]
    assert main([*other, "--quiet", "--budget", "25", "--resume"]) == 2
    assert json.loads((tmp_path / "search.db.nas.json").read_text()) == recipe
    assert main([*args, "--budget", "30", "--resume"]) == 0  # a finished run: nothing more to evaluate
    result = SearchResult.load(f"sqlite:///{db}")
    assert len(result) == 30 and result.history["key"].is_unique
    assert (result.history.loc[result.history["feasible"], "latency@raspi4"] <= 60).all()

    assert main(["report", str(db), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "index.html").is_file()
    assert (tmp_path / "rep" / "front_raspi4.png").is_file()


def test_nb201_search_says_a_given_device_has_no_effect(capsys):
    """An nb201 search reads accuracies from the table: a --device given was accepted silently (now said on
    stderr, not refused, and a device this machine lacks is not checked); without --device nothing is said."""
    args = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "random", "--quiet"]
    args += ["--budget", "3"]
    assert main([*args, "--device", "cuda:7"]) == 0
    err = capsys.readouterr().err
    assert "--device cuda:7 has no effect on an nb201 search" in err and len(err.strip().splitlines()) == 1
    assert main(args) == 0
    assert "--device" not in capsys.readouterr().err


def test_clear_errors(tmp_path, capsys):
    assert main(["search", "--space", "nb201", "--target", "no-such-device", "--budget", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no-such-device" in err and "built-in profiles" in err
    assert main(["search", "--space", "nope", "--target", "raspi4"]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
    assert main(["search", "--space", "nb201", "--budget", "5", "--quiet"]) == 2
    assert "--target" in capsys.readouterr().err
    # a misspelt dataset is refused before the search, not met by every evaluation failing
    store = tmp_path / "s.db"
    args = ["search", "--space", "nb201", "--target", "raspi4", "--dataset", "cifar1000", "--budget", "5"]
    assert main([*args, "--store", str(store), "--quiet"]) == 2
    assert (
        "unknown nb201 dataset 'cifar1000'; choose cifar10, cifar100, imagenet16" in capsys.readouterr().err
    )
    assert not store.exists()
    # two targets with one label (a built-in profile and its file) would be one objective name twice
    profile = "hw_profiles/nb201-raspi4.csv.gz"
    args = ["search", "--space", "nb201", "--target", "nb201-raspi4", "--target", profile, "--budget", "5"]
    assert main([*args, "--store", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--target {profile} and --target nb201-raspi4 both name the target 'nb201-raspi4'" in err
    assert "rename one of the files" in err and not store.exists()


def test_refused_commands_leave_no_files_behind(tmp_path, capsys):
    """A command that fails on its input must not create a store, a recipe or a run directory."""
    missing = tmp_path / "missing.db"
    assert main(["report", str(missing), "--out", str(tmp_path / "rep")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["export", str(missing), "--out", str(tmp_path / "model")]) == 2
    store = tmp_path / "s.db"
    search = ["search", "--space", "nb201", "--target", "raspi4", "--store", str(store), "--quiet"]
    assert main([*search, "--budget", "0"]) == 2
    assert "budget must be a positive integer" in capsys.readouterr().err
    run_dir = tmp_path / "run"
    assert (
        main(["train", "--space", "mobilenetv3", "--data", "digits", "--epochs", "0", "--out", str(run_dir)])
        == 2
    )
    assert "epochs=0" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_out_of_the_wrong_kind_gets_a_one_line_error(tmp_path, capsys):
    """--out naming a file where a folder is written (or a folder where a file is): one line, nothing written."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    train = ["train", "--space", "mobilenetv3", "--data", "digits", "--epochs", "1"]
    assert main([*train, "--out", str(notes)]) == 2
    assert "File exists" in capsys.readouterr().err
    assert main([*train, "--out", str(notes / "run")]) == 2
    assert "Not a directory" in capsys.readouterr().err
    db = tmp_path / "s.db"
    assert (
        main(
            [
                "search",
                "--space",
                "nb201",
                "--target",
                "raspi4",
                "--budget",
                "3",
                "--store",
                str(db),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["report", str(db), "--out", str(notes)]) == 2
    assert "is a file; a report is a folder" in capsys.readouterr().err
    # a folder where the profile / predictor file belongs is refused before any measuring or fitting
    folder = tmp_path / "runs"
    folder.mkdir()
    assert main(["fit", "nb201-raspi4.csv", "--out", str(folder)]) == 2
    assert f"--out {folder} is a folder; give the file to write" in capsys.readouterr().err
    assert main(["profile", "--samples", "2", "--out", str(folder)]) == 2
    assert f"--out {folder} is a folder; give the file to write" in capsys.readouterr().err
    assert notes.read_text() == "keep me" and not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "runs", "s.db", "s.db.nas.json"]


def test_train_refuses_a_device_this_machine_lacks_before_writing(tmp_path, capsys):
    import torch

    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--epochs", "1", "--device", missing, "--out", str(run)]) == 2
    assert "--device: device=" in capsys.readouterr().err
    assert not run.exists()


def test_train_protects_an_existing_run(tmp_path, capsys):
    """A run directory's spec says what its weights are: never rewritten, never trained over by a fresh start."""
    run = tmp_path / "run"
    run.mkdir()
    spec = {
        "space": "mobilenetv3",
        "kwargs": {"preset": "small", "num_classes": 10, "in_channels": 1, "quant": False, "sparsity": False},
        "data": "digits",
        "data_root": None,
    }
    (run / "supernet.json").write_text(json.dumps(spec))
    (run / "checkpoint.safetensors").write_bytes(b"weights of a run")
    train = ["train", "--space", "mobilenetv3", "--epochs", "1", "--out", str(run)]
    assert main([*train, "--data", "mnist", "--resume"]) == 2
    assert "other settings (data 'digits' -> 'mnist')" in capsys.readouterr().err
    assert main([*train, "--data", "digits"]) == 2
    assert "already holds a training run; add --resume" in capsys.readouterr().err
    assert json.loads((run / "supernet.json").read_text()) == spec
    assert (run / "checkpoint.safetensors").read_bytes() == b"weights of a run"


def test_searcher_options_and_batch_size_reach_the_searcher(tmp_path, capsys):
    db = tmp_path / "opts.db"
    args = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "nsga2", "--quiet"]
    args += ["--searcher-option", "pop_size=6", "--batch-size", "3", "--budget", "12", "--store", str(db)]
    assert main(args) == 0
    from nas.search import SearchResult

    result = SearchResult.load(f"sqlite:///{db}")
    assert len(result) == 12
    assert result.meta["searcher_options"] == {"pop_size": 6}  # stored: a resume must use the same
    capsys.readouterr()

    bad = ["search", "--space", "nb201", "--target", "raspi4", "--budget", "5", "--quiet"]
    assert main([*bad, "--searcher-option", "explor=0.3"]) == 2
    err = capsys.readouterr().err
    assert "no option 'explor'" in err and "explore" in err  # names the valid options
    assert main([*bad, "--searcher-option", "explore"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_version(capsys):
    import nas

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"nas {nas.__version__}"


def test_help_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "nas.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("train", "profile", "fit", "search", "report", "export"):
        assert command in out


def test_fit_takes_a_builtin_profile_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a name is a file first: make sure no file of that name is around
    assert main(["fit", "fpga", "--kind", "ridge", "--out", "fpga.json"]) == 0
    saved = json.loads((tmp_path / "fpga.json").read_text())
    assert saved["space"] == "nb201"
    captured = capsys.readouterr()
    assert "saved predictor to fpga.json" in captured.out
    # the 341 disconnected cells (latency of an empty network) are left out, and the file says what it learnt
    assert "left out 341 of 15,625 configs the space calls degenerate: disconnected (341)" in captured.out
    assert "fitted ridge on 11463 configs" in captured.out
    assert "fitted on: latency_ms of fpga, space nb201, device fpga (Xilinx ZC706" in captured.out
    assert saved["provenance"]["profile_name"] == "fpga" and saved["provenance"]["left_out"] == {
        "disconnected": 341
    }
    assert "nas fit: fitting ridge on 11,463 samples" in captured.err  # progress goes to stderr
    # a name that is neither a file nor a built-in profile still ends in one line naming it
    assert main(["fit", "no-such-profile", "--out", "x.json"]) == 2
    assert "no-such-profile" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_constraint_on_no_objective_names_the_ones_there_are(tmp_path, capsys):
    db = tmp_path / "s.db"
    args = ["search", "--space", "nb201", "--target", "raspi4", "--budget", "3"]
    args += ["--quiet", "--store", str(db)]
    assert main([*args, "--constraint", "latency<=5ms"]) == 2
    err = capsys.readouterr().err
    assert "--constraint latency<=5 names no objective" in err and "latency@raspi4" in err
    assert "fn=" not in err  # Python advice has no place in the shell
    assert not db.exists()


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("train", "rerun with --resume"),
        ("search", "rerun with --resume"),
        ("profile", "rerun the same command"),  # nas profile has no --resume: it extends its --out file
        ("fit", None),
    ],
)
def test_ctrl_c_names_a_way_to_continue_that_the_command_has(command, hint, monkeypatch, capsys):
    import nas.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(nas.cli, f"cmd_{command}", interrupted)
    argv = {
        "train": ["train", "--out", "runs/x"],
        "search": ["search", "--space", "nb201"],
        "profile": ["profile", "--out", "p.csv"],
        "fit": ["fit", "p.csv", "--out", "p.json"],
    }[command]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nas {command}: interrupted")
    if hint is None:
        assert err == f"nas {command}: interrupted"
    else:
        assert hint in err
        if command == "profile":
            assert "--resume" not in err


def test_a_predictor_of_another_space_is_refused_before_the_search(tmp_path):
    """It would fail every evaluation (each after its accuracy was paid for) and then stop the search."""
    import numpy as np

    import predictors
    from nas.cli import _latency_function
    from search_spaces import mobilenetv3, nb201

    rng = np.random.default_rng(0)
    configs = [nb201.space.sample(rng) for _ in range(8)]
    X = nb201.space.features_matrix(configs)
    pred = predictors.fit(X, rng.uniform(1, 2, len(X)), kind="ridge", space="nb201")
    pred.save(tmp_path / "nb201-cpu.json")
    space = mobilenetv3.space()
    with pytest.raises(
        CliError, match=r"nb201-cpu.json: this predictor was fitted on features of space 'nb201'"
    ):
        _latency_function(space, space.name, str(tmp_path / "nb201-cpu.json"))


def test_search_names_what_a_predictor_target_was_fitted_on(tmp_path, capsys):
    import numpy as np

    import predictors
    from nas.cli import _latency_function
    from search_spaces import nb201

    rng = np.random.default_rng(0)
    X = nb201.space.features_matrix([nb201.space.sample(rng) for _ in range(8)])
    pred = predictors.fit(X, rng.uniform(1, 2, len(X)), kind="ridge", space="nb201")
    pred.save(tmp_path / "old.json")  # no provenance: saved as before nas recorded it
    _latency_function(nb201.space, "nb201", str(tmp_path / "old.json"))
    assert "old.json: a predictor that does not record what it was fitted on" in capsys.readouterr().err
    pred.provenance = {"metric": "latency_p10_ms", "profile": "runs/pi.csv", "space": "nb201"}
    pred.provenance["device"] = {"device": "lab-pi", "cpu": "Cortex-A72", "backend": "torch"}
    pred.save(tmp_path / "pi.json")
    _latency_function(nb201.space, "nb201", str(tmp_path / "pi.json"))
    err = capsys.readouterr().err
    assert "target " + str(tmp_path / "pi.json") + ": predicts latency_p10_ms of runs/pi.csv" in err
    assert "device lab-pi (Cortex-A72, torch)" in err


def test_profile_help_says_repeats_are_rounded_up_to_a_multiple_of_rounds():
    out = subprocess.run(
        [sys.executable, "-m", "nas.cli", "profile", "--help"], capture_output=True, text=True, check=True
    ).stdout
    text = " ".join(out.split())
    assert "rounded up to a multiple of --rounds (10 with 3 rounds measures 12" in text


def test_a_search_whose_evaluations_all_fail_ends_with_one_line(tmp_path, monkeypatch, capsys):
    from search_spaces import nb201

    def broken(cfg, dataset="cifar10"):
        raise OSError("benchmark table unreadable")

    monkeypatch.setattr(nb201, "accuracy", broken)
    db = tmp_path / "s.db"
    argv = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "random", "--budget", "20"]
    assert main([*argv, "--store", str(db), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas search: error: the first 5 evaluations all failed")
    assert "benchmark table unreadable" in err and "\n" not in err
    assert (tmp_path / "s.db.nas.json").is_file()  # the failed evaluations are kept with their recipe


def test_an_empty_profile_target_is_named(tmp_path, capsys):
    from nas.hw.profiles import Profile

    empty = tmp_path / "empty.csv"
    Profile("nb201", [], []).save(empty)
    db = tmp_path / "s.db"
    argv = [
        "search",
        "--space",
        "nb201",
        "--target",
        str(empty),
        "--budget",
        "3",
        "--store",
        str(db),
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"target {empty}: the profile has 0 usable rows; a predictor needs at least 4" in err
    assert not db.exists()


def test_fit_of_a_profile_without_its_space_says_which_flag_to_pass(tmp_path, capsys):
    from nas.hw.profiles import Profile

    prof = tmp_path / "mine.csv"
    Profile("my-space", [{"w": w} for w in range(6)], [1.0 + w for w in range(6)]).save(prof)
    assert main(["fit", str(prof), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nas fit: error: profile of space 'my-space' does not record its dimensions")
    assert "`nas fit --space MODULE`" in err


def test_a_missing_target_file_is_named_as_missing(tmp_path, capsys):
    # it used to be called "neither a predictor (.json) nor a profile file (.csv)", which it plainly is by name
    for name in ("runs/my-cpu.json", "my-cpu.csv", "my-cpu.csv.gz"):
        argv = ["search", "--space", "nb201", "--target", str(tmp_path / name), "--budget", "2"]
        assert main([*argv, "--store", str(tmp_path / "s.db"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"target {tmp_path / name}: no such file" in err and "neither" not in err
    assert not (tmp_path / "s.db").exists()


def test_fit_refuses_a_predictor_file_that_search_would_not_read(tmp_path, capsys):
    out = tmp_path / "raspi4.pred"
    assert main(["fit", "raspi4", "--kind", "ridge", "--out", str(out)]) == 2
    assert "must end in .json" in capsys.readouterr().err and not out.exists()


def _nb201_profile(path, n_connected: int = 40, n_disconnected: int = 10):
    """An nb201 profile: raspi4 latencies of connected cells, and disconnected cells at an absurd 10 s."""
    from nas.hw.profiles import Profile
    from search_spaces import nb201

    connected = [c for c in nb201.all_configs() if nb201.is_connected(c)][:n_connected]
    disconnected = [c for c in nb201.all_configs() if not nb201.is_connected(c)][:n_disconnected]
    latencies = [nb201.latency(c, "raspi4") for c in connected] + [10_000.0] * len(disconnected)
    Profile("nb201", connected + disconnected, latencies, metadata={"device": "lab-pi"}).save(path)
    return connected, disconnected


@pytest.fixture
def fits(monkeypatch):
    """Every predictors.fit call's (y, kwargs), fitted as ridge (auto compares every kind: slow, not the point)."""
    import predictors

    calls: list[tuple] = []
    real_fit = predictors.fit

    def ridge(X, y, **kwargs):
        calls.append((np.asarray(y), kwargs))
        return real_fit(X, y, **{**kwargs, "kind": "ridge"})

    monkeypatch.setattr(predictors, "fit", ridge)
    return calls


def test_a_profile_target_is_fitted_as_nas_fit_does_leaving_out_degenerate_cells(tmp_path, fits, capsys):
    """nb201's 341 disconnected cells cost what an empty network costs; `nas fit` leaves them out, and so does
    the predictor a profile target fits (it used to fit them, so their latencies skewed every prediction)."""
    from nas.cli import _latency_function
    from nas.hw.cli_hooks import run_fit
    from search_spaces import nb201

    path = tmp_path / "pi.csv"
    connected, _ = _nb201_profile(path)
    latency = _latency_function(nb201.space, "nb201", str(path))
    assert fits == []  # nothing asked for a latency yet: nothing fitted
    unmeasured = [c for c in nb201.all_configs() if nb201.is_connected(c)][100:110]
    predicted = [latency(c) for c in unmeasured]
    assert len(fits) == 1
    y, kwargs = fits[0]
    assert len(y) == 30 and y.max() < 1_000  # 40 connected cells, 10 held out; no disconnected one
    assert kwargs["kind"] == "auto" and kwargs["seed"] == 0  # nas fit's defaults
    assert max(predicted) < 1_000  # an absurd latency in the fit would drag these up
    assert latency(connected[0]) == nb201.latency(connected[0], "raspi4")  # measured: the measurement
    err = capsys.readouterr().err
    assert (
        f"target {path}: fitted ridge on 30 of its 50 configs (10 degenerate left out: disconnected), " in err
    )
    assert "held-out within 10%: " in err
    # the very rows and split of `nas fit`
    run_fit(path, tmp_path / "pi.json", space=nb201.space, verbose=False)
    assert np.array_equal(fits[1][0], y)


def test_a_profile_target_is_not_fitted_when_the_search_is_refused_before_it_starts(tmp_path, fits, capsys):
    path = tmp_path / "pi.csv"
    _nb201_profile(path)
    db = tmp_path / "s.db"
    search = [
        "search",
        "--space",
        "nb201",
        "--target",
        str(path),
        "--budget",
        "3",
        "--quiet",
        "--store",
        str(db),
    ]
    assert main([*search, "--objective", "flops"]) == 2
    assert main([*search, "--constraint", "latency@nowhere<=5ms"]) == 2
    assert fits == []
    assert main([*search, "--algorithm", "random"]) == 0
    assert len(fits) == 1
    assert main([*search, "--algorithm", "nsga2", "--resume"]) == 2  # another run's settings: refused
    assert "cannot resume" in capsys.readouterr().err
    assert len(fits) == 1


def test_a_profile_target_ships_its_fitted_predictor_to_ray_workers(tmp_path, fits):
    """Ray pickles objectives once per search: the fit happens once, here, not once per worker."""
    cloudpickle = pytest.importorskip("cloudpickle")
    from nas.cli import _latency_function
    from search_spaces import nb201

    path = tmp_path / "pi.csv"
    _nb201_profile(path)
    latency = _latency_function(nb201.space, "nb201", str(path))
    shipped = cloudpickle.loads(cloudpickle.dumps(latency))
    assert len(fits) == 1
    cfg = [c for c in nb201.all_configs() if nb201.is_connected(c)][200]
    assert shipped(cfg) == latency(cfg) and len(fits) == 1


def _cifar_supernet_dir(path, data_root: str):
    """A run directory whose supernet.json says it was trained on CIFAR-10 under ``data_root`` (no weights)."""
    path.mkdir()
    spec = {"space": "mobilenetv3", "kwargs": {"preset": "small", "in_channels": 3}, "data": "cifar10"}
    (path / "supernet.json").write_text(json.dumps({**spec, "data_root": data_root}))
    return path


def test_search_records_the_data_it_ranks_subnets_on(tmp_path, monkeypatch):
    import nas.cli
    import search_spaces
    from nas.cli import _objectives, build_parser

    monkeypatch.chdir(tmp_path)
    sn = _cifar_supernet_dir(tmp_path / "sn", str(tmp_path / "train-cifar"))
    loaders = []
    monkeypatch.setattr(nas.cli, "_DataLoader", lambda *args: loaders.append(args) or (lambda: None))
    space = search_spaces.make_space("mobilenetv3")
    argv = ["search", "--space", "mobilenetv3", "--supernet", str(sn), "--objective", "macs"]
    _, recipe = _objectives(build_parser().parse_args([*argv, "--data-root", "search-cifar"]), space)
    held_out = {"fraction": 0.1, "seed": 0}
    assert recipe["dataset"] == "cifar10" and recipe["held_out"] == held_out
    assert recipe["data_root"] == str(tmp_path / "search-cifar")  # absolute: export may run elsewhere
    assert loaders[-1] == ("cifar10", str(tmp_path / "search-cifar"), held_out)
    # without --data-root the search reads the supernet's CIFAR-10 (it used to fail every evaluation)
    _, recipe = _objectives(build_parser().parse_args(argv), space)
    assert recipe["data_root"] == str(tmp_path / "train-cifar") == loaders[-1][1]


def test_export_re_estimates_batch_norm_on_the_data_the_search_recorded(tmp_path, monkeypatch):
    import torch
    from torch.utils.data import TensorDataset

    import nas.export
    import search_spaces
    from nas import data as nas_data
    from nas.cli import _int8_calibration
    from search_spaces import nb201

    db = tmp_path / "s.db"
    search = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "random", "--budget", "3"]
    assert main([*search, "--store", str(db), "--quiet"]) == 0
    sn = _cifar_supernet_dir(tmp_path / "sn", "/train/cifar")
    sidecar = tmp_path / "s.db.nas.json"
    recipe = {**json.loads(sidecar.read_text()), "supernet": str(sn), "dataset": "cifar10"}
    roots: list[str] = []

    def cifar10(root, split="train"):  # 8 images per class
        roots.append(str(root))
        return TensorDataset(
            torch.randn(80, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(80) % 10
        )

    calibrated_on = []

    def export(net, cfg, out, formats, bn_calib_data=None, **kwargs):
        calibrated_on.append(bn_calib_data)
        return out

    monkeypatch.setattr(nas_data, "cifar10", cifar10)
    # a stand-in with the searched space (nb201's), which export checks the supernet against
    monkeypatch.setattr(search_spaces, "load_trained", lambda run_dir: SimpleNamespace(space=nb201.space))
    monkeypatch.setattr(nas.export, "export", export)
    # the stand-in writes no files: nothing for the summary lines to read
    monkeypatch.setattr(nas.export, "read_manifest", lambda out: {"verification": {}})
    argv = ["export", str(db), "--format", "safetensors", "--out", str(tmp_path / "m")]
    # a store from before searches recorded their data: the supernet's root, the default split
    sidecar.write_text(json.dumps(recipe))
    assert main(argv) == 0 and roots == ["/train/cifar"] and len(calibrated_on[-1]) == 10
    # the root and split the search recorded (it used to take the supernet's root regardless)
    sidecar.write_text(
        json.dumps({**recipe, "data_root": "/search/cifar", "held_out": {"fraction": 0.25, "seed": 1}})
    )
    assert main(argv) == 0 and roots[-1] == "/search/cifar" and len(calibrated_on[-1]) == 20
    # --data-root overrides both, for the batch-norm images and the int8 calibration alike
    assert main([*argv, "--data-root", "/moved/cifar"]) == 0 and roots[-1] == "/moved/cifar"
    roots.clear()
    _int8_calibration(str(sn), {}, "/moved/cifar")
    assert roots == ["/moved/cifar", "/moved/cifar"]


def test_export_of_a_tabular_run_or_with_another_spaces_supernet_says_so(tmp_path, monkeypatch, capsys):
    import search_spaces
    from search_spaces import mobilenetv3

    db, out = tmp_path / "s.db", tmp_path / "m"
    search = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "random", "--budget", "2"]
    assert main([*search, "--store", str(db), "--quiet"]) == 0
    capsys.readouterr()
    # nb201 has no weights: said so, rather than asking for a --supernet that cannot help
    assert main(["export", str(db), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "this run searched nb201, a tabular space" in err and "pass --supernet" not in err, err
    # a supernet of another space: named, not a KeyError about the config's dimensions deep in the export
    net = mobilenetv3.supernet("small", in_channels=1)
    monkeypatch.setattr(search_spaces, "load_trained", lambda run_dir: net)
    assert main(["export", str(db), "--supernet", "sn", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "the supernet in sn is one of space 'mobilenetv3-small', not the space this run searched ('nb201')"
        in err
    )
    assert not out.exists()


def test_nas_train_takes_the_spaces_recipe_for_the_options_not_given(tmp_path, monkeypatch, capsys):
    import nas.train
    from nas.cli import TRAIN_DEFAULTS
    from search_spaces.vit import VisionTransformerSupernet

    seen: dict = {}
    monkeypatch.setattr(nas.train, "train_supernet", lambda net, data, **kw: seen.update(kw))
    recipe = dict(VisionTransformerSupernet.training_recipe)
    assert recipe and set(recipe) <= set(TRAIN_DEFAULTS)
    base = ["train", "--data", "digits", "--epochs", "1"]
    assert main([*base, "--space", "vit", "--out", str(tmp_path / "v")]) == 0
    assert {k: seen[k] for k in TRAIN_DEFAULTS} == {**TRAIN_DEFAULTS, **recipe}
    assert "training recipe of VisionTransformerSupernet: " in capsys.readouterr().out
    assert main([*base, "--space", "vit", "--lr", "0.02", "--out", str(tmp_path / "v2")]) == 0
    assert seen["lr"] == 0.02 and seen["weight_decay"] == recipe["weight_decay"]
    assert "lr=" not in capsys.readouterr().out  # given, so not the recipe's
    seen.clear()
    assert main([*base, "--space", "mobilenetv3", "--out", str(tmp_path / "m")]) == 0
    assert {k: seen[k] for k in TRAIN_DEFAULTS} == TRAIN_DEFAULTS  # no recipe of its own
    assert "training recipe" not in capsys.readouterr().out


def test_nas_train_help_states_the_defaults_and_the_vit_recipe():
    """The help texts write the defaults out; they must say what the code does."""
    from nas.cli import TRAIN_DEFAULTS, build_parser
    from search_spaces.vit import VisionTransformerSupernet

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train._actions}
    for name, value in TRAIN_DEFAULTS.items():
        found = re.search(r"default ([0-9.e-]+|\w+)", helps[name])
        assert found, name
        assert found.group(1) == str(value) or float(found.group(1)) == value, (name, helps[name])
    for name, value in VisionTransformerSupernet.training_recipe.items():
        if isinstance(value, str):  # the optimizer: adamw, the default
            assert value == TRAIN_DEFAULTS[name]
            continue
        found = re.search(r"vit(?:'s recipe)?: ([0-9.e-]+)", helps[name])
        assert found and float(found.group(1)) == value, (name, helps[name])


def test_nas_train_records_the_data_root_absolute(tmp_path, monkeypatch):
    """nas search and nas export rebuild the data from supernet.json wherever they run: a relative --data-root
    would point elsewhere. A run recorded with a relative root before still resumes from where it started."""
    import torch
    from torch.utils.data import TensorDataset

    import nas.train
    from nas import data as nas_data

    def cifar10(root, split="train"):
        return TensorDataset(
            torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(40) % 10
        )

    monkeypatch.setattr(nas_data, "cifar10", cifar10)
    monkeypatch.setattr(nas.train, "train_supernet", lambda net, data, **kw: None)
    monkeypatch.chdir(tmp_path)
    train = ["train", "--space", "mobilenetv3", "--data", "cifar10", "--data-root", "cifar", "--epochs", "1"]
    assert main([*train, "--out", "run"]) == 0
    spec_file = tmp_path / "run" / "supernet.json"
    assert json.loads(spec_file.read_text())["data_root"] == str(tmp_path / "cifar")
    spec_file.write_text(
        json.dumps({**json.loads(spec_file.read_text()), "data_root": "cifar"})
    )  # an old run
    assert main([*train, "--out", "run", "--resume"]) == 0
    assert json.loads(spec_file.read_text())["data_root"] == str(tmp_path / "cifar")


def test_output_cut_short_by_a_pipe_is_not_reported_as_an_error(monkeypatch, capsys):
    import nas.cli

    class ClosedPipe:  # what `nas profiles | head -1` leaves print() writing to
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    def lost_connection(args):
        raise BrokenPipeError(32, "Broken pipe")

    # a broken connection of the command's own, with stdout fine, is still an error
    monkeypatch.setattr(nas.cli, "cmd_profiles", lost_connection)
    assert main(["profiles"]) == 2
    assert capsys.readouterr().err == "nas profiles: error: [Errno 32] Broken pipe\n"
    monkeypatch.undo()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["profiles"]) == 141  # 128 + SIGPIPE, as a shell reports it
    assert "Broken pipe" not in capsys.readouterr().err  # it used to print "error: [Errno 32] Broken pipe"
    monkeypatch.undo()

    # a real pipe whose reader is gone before the command writes (`nas profiles | head -0`)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "profiles"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # long before the command has imported what it needs and prints
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err


def test_search_says_why_a_front_is_empty(capsys):
    args = ["search", "--space", "nb201", "--target", "raspi4", "--algorithm", "random", "--budget", "3"]
    assert main([*args, "--constraint", "latency@raspi4<=0.001ms", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front for raspi4: 0 of 3 evaluations" in out and "Empty DataFrame" not in out, out
    assert (
        "no evaluation is on it: of 3, 0 failed, 3 broke a constraint and 0 lack a value of accuracy" in out
    )


def test_every_command_and_option_explains_itself_in_help():
    import argparse

    from nas.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert command.description, f"nas {name} --help says nothing about what the command does"
        silent = [a.option_strings or [a.dest] for a in command._actions if not a.help]
        assert not silent, f"nas {name} --help leaves these options unexplained: {silent}"


def test_profile_settings_that_do_not_go_together_name_the_flags(tmp_path, capsys):
    base = ["profile", "--samples", "1", "--out", str(tmp_path / "p.csv")]
    assert (
        main([*base, "--clock", "thread_cpu"]) == 2
    )  # no --threads: "threads=None" alone told a shell user little
    assert (
        "(nas profile --clock thread_cpu --threads 1); got backend='torch', threads=None"
        in capsys.readouterr().err
    )
    assert main([*base, "--precision", "int8"]) == 2
    assert (
        "nas profile --backend onnxruntime --precision int8); got backend='torch'" in capsys.readouterr().err
    )
    assert not (tmp_path / "p.csv").exists()


def test_fit_refuses_an_unknown_kind_before_it_starts(capsys):
    assert main(["fit", "raspi4", "--kind", "gdbt", "--out", "never.json"]) == 2
    err = capsys.readouterr().err
    assert err == "nas fit: error: unknown predictor kind 'gdbt'; use one of " + (
        "['auto', 'ridge', 'gbdt', 'mlp', 'lut', 'ensemble']\n"
    ), err  # no progress bar, no "left out 341 degenerate configs" line before it


def test_export_says_whether_2to4_paid_off():
    from nas.cli import semi_structured_summary

    gpu = {"eligible": ["a"], "cuda": True, "device": "NVIDIA H200"}
    slower = semi_structured_summary({**gpu, "cuda_graph_latency_ms": {"dense": 0.641, "2:4": 1.166}})
    assert slower.startswith("1 layer follows 2:4 sparsity; on NVIDIA H200 as CUDA graphs, 2:4 1.166 ms")
    assert "(0.55x, slower: keep the dense model here)" in slower
    # a capture that failed leaves the eager timings
    eager = {**gpu, "latency_ms": {"dense": 2.0, "2:4": 1.0}, "cuda_graph_latency_ms": "capture failed: x"}
    assert "eagerly, 2:4 1.000 ms vs dense 2.000 ms (2.00x, faster)" in semi_structured_summary(eager)
    assert "stay dense" in semi_structured_summary({"eligible": ["a", "b"], "cuda": False})


def test_train_seeds_the_initial_weights(tmp_path, monkeypatch):
    """Two `nas train --seed 3` runs start from the same weights, whatever drew from torch's generator before
    (unseeded, the initial weights varied with PYTHONHASHSEED)."""
    import torch

    import nas.cli

    started: list[list[torch.Tensor]] = []

    def record(args, net, train, val, out):
        started.append([v.clone() for v in net.state_dict().values()])

    monkeypatch.setattr(nas.cli, "_train", record)
    for i, draws in enumerate((1, 1000)):
        torch.rand(draws)
        args = [
            "train",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--out",
            str(tmp_path / f"run{i}"),
        ]
        assert main(args) == 0
    assert len(started) == 2 and all(torch.equal(a, b) for a, b in zip(*started, strict=True))
