"""nas.hw.measure.profile and the CLI hooks run_profile / run_fit (few repeats: these test logic, not speed)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from nas import Choice, Config, SearchSpace
from nas.hw import cli_hooks, measure
from nas.hw.profiles import Profile, ProfileFormatError

SPACE = SearchSpace("toy-conv", [Choice("width", (2, 4, 8, 16)), Choice("kernel", (1, 3))])


class Tagged(nn.Module):
    """A conv whose forward appends its tag to a shared log (to see the measuring order)."""

    def __init__(self, cfg: Config, log: list[str] | None):
        super().__init__()
        self.conv = nn.Conv2d(3, cfg["width"], cfg["kernel"])
        self.tag, self.log = cfg.key, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log is not None:
            self.log.append(self.tag)
        return self.conv(x)


class ToyNet:
    """The supernet protocol on plain layers: space, extract(cfg), input_shape(cfg, batch)."""

    space = SPACE

    def __init__(self) -> None:
        self.built: list[str] = []

    def extract(self, cfg: Config) -> nn.Module:
        self.built.append(cfg.key)
        return Tagged(cfg, None)

    def input_shape(self, cfg: Config, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, 8, 8)


def test_profile_rows_and_statistics() -> None:
    configs = list(SPACE.all_configs())[:5]
    p = measure.profile(
        lambda c: Tagged(c, None),
        configs + configs[:2],  # duplicates are measured once
        input_shape=(3, 8, 8),
        space=SPACE,
        warmup=1,
        repeats=6,
        rounds=3,
        threads=1,
        progress=False,
    )
    assert len(p) == 5 and p.space == "toy-conv"
    assert [c.key for c in p.configs] == [SPACE.canonical(c).key for c in configs]
    assert np.all(p.latency_ms > 0) and np.all(p.latency_iqr_ms >= 0) and np.all(p.latency_cv >= 0)
    assert p.repeats.tolist() == [6] * 5
    m = p.metadata
    for key in ("cpu", "cpu_count", "threads", "versions", "backend", "batch_size", "precision", "median_cv"):
        assert key in m, key
    assert m["threads"] == 1 and m["backend"] == "torch" and m["batch_size"] == 1 and m["precision"] == "fp32"
    assert m["versions"]["torch"] == torch.__version__
    assert m["space_dims"][0]["name"] == "width"


def test_latency_stats_matches_numpy() -> None:
    x = np.array([1.0, 1.5, 2.0, 10.0, 1.2])
    s = measure.latency_stats(x)
    assert s["median_ms"] == 1.5 and s["n"] == 5
    assert s["iqr_ms"] == pytest.approx(np.percentile(x, 75) - np.percentile(x, 25))
    assert s["cv"] == pytest.approx(x.std() / x.mean())
    with pytest.raises(ValueError):
        measure.latency_stats([])


def test_measurement_is_interleaved_and_shuffled_per_round() -> None:
    log: list[str] = []
    configs = list(SPACE.all_configs())  # 8 configs
    order: list[int] = []
    measure.profile(
        lambda c: Tagged(c, log),
        configs,
        input_shape=(3, 8, 8),
        space=SPACE,
        warmup=0,
        repeats=3,
        rounds=3,
        seed=1,
        progress=False,
        order_log=order,
    )
    assert len(order) == 24
    rounds = [order[i * 8 : (i + 1) * 8] for i in range(3)]
    for r in rounds:  # every round visits every config exactly once
        assert sorted(r) == list(range(8))
    assert len({tuple(r) for r in rounds}) > 1  # each round has its own order
    # The forward calls follow the same order: one call per config per round (repeats 3 / rounds 3).
    keys = [SPACE.canonical(c).key for c in configs]
    assert log == [keys[i] for i in order]


def test_threads_fixed_and_restored() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x

    p = measure.profile(
        lambda c: Probe(),
        [{"width": 2, "kernel": 1}],
        input_shape=(3, 4, 4),
        space=SPACE,
        threads=1,
        warmup=0,
        repeats=2,
        rounds=1,
        progress=False,
    )
    assert set(seen) == {1} and p.metadata["threads"] == 1
    assert torch.get_num_threads() == before


def test_bounded_cache_rebuilds_models() -> None:
    net = ToyNet()
    configs = list(SPACE.all_configs())[:4]
    measure.profile(net, configs, warmup=0, repeats=2, rounds=2, max_cached=2, progress=False)
    assert 4 < len(net.built) <= 8  # evicted models are rebuilt on their next visit (last ones may be hits)
    net2 = ToyNet()
    measure.profile(net2, configs, warmup=0, repeats=2, rounds=2, max_cached=64, progress=False)
    assert len(net2.built) == 4


@pytest.mark.parametrize(
    "x",
    [[3.0], [2.0, 5.0], [1.0, 2.0, 4.0], [4.0, 1.0, 3.0, 2.0], [0.7] * 6, [1.0, 1.5, 2.0, 10.0, 1.2, 1.1]],
    ids=["one", "two", "odd", "even", "identical", "outlier"],
)
def test_latency_stats_definitions(x) -> None:
    # percentiles by linear interpolation (numpy's default), CV with the population std (ddof=0)
    a = np.asarray(x)
    s = measure.latency_stats(x)
    assert s["median_ms"] == np.median(a) and s["n"] == a.size and s["min_ms"] == a.min()
    assert s["iqr_ms"] == np.percentile(a, 75, method="linear") - np.percentile(a, 25, method="linear")
    assert s["p10_ms"] == np.percentile(a, 10, method="linear")
    assert s["cv"] == pytest.approx(a.std(ddof=0) / a.mean(), abs=1e-15)


class FakeTimed(nn.Module):
    """Advances a fake clock: call ``k`` of config ``w`` (warm-up calls included) takes ``w`` ms + ``k`` us."""

    def __init__(self, w: int, clock: dict[str, int], calls: dict[int, int]):
        super().__init__()
        self.w, self.clock, self.calls = w, clock, calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.calls.get(self.w, 0)
        self.calls[self.w] = k + 1
        self.clock["ns"] += self.w * 1_000_000 + k * 1_000
        return x


def test_profile_statistics_on_a_fake_clock(monkeypatch) -> None:
    clock: dict[str, int] = {"ns": 0}
    calls: dict[int, int] = {}
    monkeypatch.setattr(measure._Runner, "clock", staticmethod(lambda: clock["ns"]))
    widths = [3, 1, 7, 2, 5, 4, 6]
    built: list[int] = []

    def build(cfg: Config) -> nn.Module:
        built.append(cfg["w"])
        return FakeTimed(cfg["w"], clock, calls)

    order: list[int] = []
    p = measure.profile(
        build,
        [{"w": w} for w in widths] + [{"w": 3}],  # the duplicate is measured once
        input_shape=(1, 2, 2),
        space="fake",
        warmup=2,
        repeats=7,  # 3 rounds: 3 timed calls per visit, 9 in all
        rounds=3,
        seed=5,
        max_cached=2,  # far fewer than the configs: evicted runners are rebuilt
        progress=False,
        order_log=order,
    )
    rng = np.random.default_rng(5)
    assert order == [int(i) for _ in range(3) for i in rng.permutation(len(widths))]
    assert len(built) > len(widths)  # rebuilt after eviction
    # Replay the visits by hand: each skips its 2 warm-up calls and times the next 3.
    expected: dict[int, list[float]] = {w: [] for w in widths}
    done = dict.fromkeys(widths, 0)
    for i in order:
        w = widths[i]
        expected[w] += [w + (done[w] + 2 + j) * 1e-3 for j in range(3)]
        done[w] += 5
    assert p.repeats.tolist() == [9] * len(widths) and p.metadata["repeats"] == 9
    for row, w in enumerate(widths):
        s = measure.latency_stats(expected[w])
        assert p.configs[row]["w"] == w
        assert p.latency_ms[row] == pytest.approx(s["median_ms"], rel=1e-12)
        assert p.latency_iqr_ms[row] == pytest.approx(s["iqr_ms"], rel=1e-9)
        assert p.latency_cv[row] == pytest.approx(s["cv"], rel=1e-9)
        assert p.extras["latency_min_ms"][row] == pytest.approx(s["min_ms"], rel=1e-12)
        assert p.extras["latency_p10_ms"][row] == pytest.approx(s["p10_ms"], rel=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_backend_clear_error_without_gpu() -> None:
    with pytest.raises(measure.BackendUnavailableError, match="CUDA GPU"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], backend="cuda", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_measures() -> None:
    p = measure.profile(
        ToyNet(),
        [{"width": 2, "kernel": 1}, {"width": 4, "kernel": 1}],
        backend="cuda",
        repeats=4,
        rounds=2,
        progress=False,
    )
    assert len(p) == 2 and np.all(p.latency_ms > 0) and "gpu" in p.metadata


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="backend"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], backend="tpu", progress=False)
    with pytest.raises(ValueError, match="int8"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], precision="int8", progress=False)
    with pytest.raises(ValueError, match="input_shape"):
        measure.profile(lambda c: nn.Identity(), [{"width": 2, "kernel": 1}], space="toy", progress=False)
    with pytest.raises(ValueError, match="repeats"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], repeats=0, progress=False)


def test_onnxruntime_backend() -> None:
    pytest.importorskip("onnxruntime")
    p = measure.profile(
        ToyNet(),
        [{"width": 2, "kernel": 1}, {"width": 8, "kernel": 3}],
        backend="onnxruntime",
        threads=1,
        warmup=1,
        repeats=4,
        rounds=2,
        progress=False,
    )
    assert len(p) == 2 and np.all(p.latency_ms > 0)
    assert p.metadata["backend"] == "onnxruntime" and "onnxruntime" in p.metadata["versions"]


def test_mobilenetv3_supernet_profile() -> None:
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small", in_channels=1)
    cfgs = net.space.samples(2, seed=0, unique=True)
    p = measure.profile(net, cfgs, threads=1, warmup=1, repeats=2, rounds=1, progress=False)
    assert p.space == net.space.name and len(p) == 2 and net.training  # the supernet's mode is untouched
    rebuilt = measure.space_from_record(p.space, p.metadata["space_dims"])
    assert rebuilt.names == net.space.names
    assert np.array_equal(rebuilt.features_matrix(cfgs), net.space.features_matrix(cfgs))


# ------------------------------------------------------------------------------------------------ CLI hooks
def test_run_profile_resumes_measuring_only_missing(tmp_path) -> None:
    out = tmp_path / "toy.csv"
    net = ToyNet()
    first = cli_hooks.run_profile(
        net, "torch", 3, out, repeats=2, rounds=1, warmup=0, progress=False, verbose=False
    )
    assert len(first) == 3 and len(net.built) == 3
    net2 = ToyNet()
    full = cli_hooks.run_profile(
        net2, "torch", 6, out, repeats=2, rounds=1, warmup=0, progress=False, verbose=False
    )
    assert len(full) == 6 and len(net2.built) == 3  # only the 3 missing configs were measured
    assert set(net2.built).isdisjoint({c.key for c in first.configs})
    assert [c.key for c in full.configs[:3]] == [c.key for c in first.configs]
    assert np.array_equal(full.latency_ms[:3], first.latency_ms)  # old measurements kept as they were
    assert len(Profile.load(out)) == 6 and len(full.metadata["runs"]) == 2
    net3 = ToyNet()
    cli_hooks.run_profile(net3, "torch", 6, out, repeats=2, rounds=1, progress=False, verbose=False)
    assert net3.built == []  # complete: nothing to measure
    with pytest.raises(ValueError, match="batch_size"):
        cli_hooks.run_profile(ToyNet(), "torch", 7, out, batch_size=4, progress=False, verbose=False)


def test_run_profile_refuses_to_extend_a_profile_measured_with_other_threads(tmp_path) -> None:
    # 1 and 2 threads give different latencies; a merged file would also keep saying threads=1 at the top.
    out = tmp_path / "toy.csv"
    kw = {"repeats": 1, "rounds": 1, "warmup": 0, "progress": False, "verbose": False}
    cli_hooks.run_profile(ToyNet(), "torch", 2, out, threads=1, **kw)
    net = ToyNet()
    with pytest.raises(ValueError, match="threads=1 but this run uses threads=2"):
        cli_hooks.run_profile(net, "torch", 4, out, threads=2, **kw)
    assert net.built == [] and len(Profile.load(out)) == 2
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # threads=None measures with torch's thread count, which here matches the file
        assert len(cli_hooks.run_profile(ToyNet(), "torch", 3, out, threads=None, **kw)) == 3
    finally:
        torch.set_num_threads(before)


def test_run_profile_refuses_other_space(tmp_path) -> None:
    out = tmp_path / "p.csv"
    Profile("other", [{"a": 1}], [1.0], metadata={"backend": "torch"}).save(out)
    with pytest.raises(ValueError, match="other"):
        cli_hooks.run_profile(ToyNet(), "torch", 2, out, progress=False, verbose=False)


def test_run_profile_checks_settings_before_touching_the_file(tmp_path, capsys) -> None:
    out = tmp_path / "p.csv"
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        cli_hooks.run_profile(ToyNet(), "torch", 2, out, repeats=0, progress=False)
    with pytest.raises(ValueError, match="threads=1"):
        cli_hooks.run_profile(ToyNet(), "torch", 2, out, threads=2, clock="thread_cpu", progress=False)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        cli_hooks.run_profile(ToyNet(), "torch", 0, out, progress=False)
    net = ToyNet()  # an --out that Profile.save refuses used to be found out after measuring the first chunk
    with pytest.raises(ValueError, match=r"must end in \.csv or \.csv\.gz"):
        cli_hooks.run_profile(net, "torch", 2, tmp_path / "p.txt", repeats=1, rounds=1, progress=False)
    assert net.built == []
    assert capsys.readouterr().out == "" and list(tmp_path.iterdir()) == []


def _synthetic_profile(path, with_dims: bool = True) -> None:
    rng = np.random.default_rng(0)
    configs = list(SPACE.all_configs())
    lat = [0.1 + 0.02 * c["width"] * c["kernel"] ** 2 for c in configs]
    meta = {"backend": "torch"}
    if with_dims:
        meta["space_dims"] = measure.space_record(SPACE)
    cv = rng.uniform(0.01, 0.03, len(configs))
    Profile(
        SPACE.name,
        configs,
        lat,
        latency_iqr_ms=np.array(lat) * cv,
        latency_cv=cv,
        repeats=[10] * len(configs),
        metadata=meta,
    ).save(path)


def test_run_fit_reports_metrics_and_noise(tmp_path, capsys) -> None:
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    res = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", test_fraction=0.25)
    assert res["test"] == 2 and res["train"] == 6
    assert {"within_10pct", "mape", "kendall_tau"} <= set(res["metrics"])
    assert 0.01 <= res["noise"]["median_cv"] <= 0.03
    printed = capsys.readouterr().out
    assert "noise floor" in printed and "within_10pct" in printed
    # 6 training configs with 1-3% repeat noise: a hint to measure more, none about noise
    assert "only 6 training configs" in printed and "latency_p10_ms" not in printed
    assert cli_hooks._fit_hints(0.15, "latency_ms", 300)[0].startswith("the repeats vary by 15%")
    assert "compare a fit of --metric latency_ms" in cli_hooks._fit_hints(0.15, "latency_p10_ms", 300)[0]
    assert cli_hooks._fit_hints(0.15, "energy_mj", 300) == []  # not a latency column
    import predictors

    pred = predictors.load(tmp_path / "pred.json")
    assert json.loads((tmp_path / "pred.json").read_text())  # plain JSON
    assert pred.predict(SPACE.features_matrix(list(SPACE.all_configs()))).shape == (8,)


def test_run_fit_on_a_noisy_profile_compares_median_and_fast_tail(tmp_path, capsys) -> None:
    """The hint follows the held-out numbers: here the median is noise and the 10th percentile is clean."""
    space = SearchSpace(
        "toy-noisy", [Choice("width", tuple(range(1, 16))), Choice("kernel", (1, 3, 5, 7, 9, 11, 13, 15))]
    )
    configs = list(space.all_configs())
    clean = np.array([1.0 + 0.2 * c["width"] + 0.1 * c["kernel"] for c in configs])  # additive: ridge fits it
    noisy = clean * np.random.default_rng(0).uniform(0.6, 1.4, len(clean))
    Profile(
        space.name,
        configs,
        noisy,
        latency_cv=np.full(len(clean), 0.2),
        extras={"latency_p10_ms": 0.9 * clean},
        metadata={"backend": "torch", "space_dims": measure.space_record(space)},
    ).save(tmp_path / "noisy.csv")

    res = cli_hooks.run_fit(tmp_path / "noisy.csv", tmp_path / "pred.json", kind="ridge")
    compared = res["compared"]
    assert compared["latency_ms"] == res["metrics"]["within_10pct"] < 0.6
    assert compared["latency_p10_ms"] == 1.0
    assert "refit with --metric latency_p10_ms" in capsys.readouterr().out

    res = cli_hooks.run_fit(
        tmp_path / "noisy.csv", tmp_path / "pred.json", kind="ridge", metric="latency_p10_ms"
    )
    assert res["compared"] == {"latency_p10_ms": 1.0, "latency_ms": compared["latency_ms"]}  # same split
    assert "latency_p10_ms is the better column here" in capsys.readouterr().out
    assert res["test"] == 30  # FEW_TEST_CONFIGS: fewer held out and the hint does not pick a column
    hint = cli_hooks._fit_hints(0.2, "latency_ms", 20, res["compared"], n_test=8)[0]
    assert "too few held-out configs (8)" in hint and "refit" not in hint


def test_run_fit_needs_a_space(tmp_path) -> None:
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof, with_dims=False)
    with pytest.raises(ValueError, match="resolve_space"):
        cli_hooks.run_fit(prof, tmp_path / "pred.json", verbose=False)
    res = cli_hooks.run_fit(
        prof, tmp_path / "pred.json", kind="ridge", resolve_space=lambda n: SPACE, verbose=False
    )
    assert res["train"] == 6
    with pytest.raises(ValueError, match="must return"):
        cli_hooks.run_fit(
            prof, tmp_path / "pred.json", resolve_space=lambda n: SPACE.renamed("x"), verbose=False
        )
    (tmp_path / "bad.csv").write_text("garbage")
    with pytest.raises(ProfileFormatError):
        cli_hooks.run_fit(tmp_path / "bad.csv", tmp_path / "pred.json", verbose=False)


def test_run_fit_names_the_file_and_row_of_a_config_the_space_refuses(tmp_path) -> None:
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    p = Profile.load(prof)
    configs = p.configs
    configs[3] = Config({**configs[3], "width": 5})  # hand-edited: no such width
    Profile(p.space, configs, p.latencies, metadata=p.metadata).save(prof)
    with pytest.raises(ValueError, match=rf"p.csv': profile row 3 .*key {configs[3].key}.*'width': 5"):
        cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", verbose=False)


class Sleepy(nn.Module):
    """Waits without using the CPU: wall time sees the wait, the thread's CPU time does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(0.02)
        return x + 1


def test_thread_cpu_clock_excludes_time_off_the_cpu() -> None:
    kwargs = dict(
        input_shape=(3, 4, 4), space="sleepy", threads=1, warmup=0, repeats=2, rounds=1, progress=False
    )
    wall = measure.profile(lambda c: Sleepy(), [{"k": 1}], **kwargs)
    cpu = measure.profile(lambda c: Sleepy(), [{"k": 1}], clock="thread_cpu", **kwargs)
    assert wall.metadata["clock"] == "wall" and cpu.metadata["clock"] == "thread_cpu"
    assert wall.latency_ms[0] >= 20.0  # sleep() never returns early
    assert cpu.latency_ms[0] < 20.0  # sleeping consumes (almost) no CPU time


def test_thread_cpu_clock_needs_one_thread_on_a_cpu_backend(tmp_path) -> None:
    with pytest.raises(ValueError, match="threads=1"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], clock="thread_cpu", threads=2, progress=False)
    with pytest.raises(ValueError, match="unknown clock"):
        measure.profile(ToyNet(), [{"width": 2, "kernel": 1}], clock="cycles", progress=False)
    out = tmp_path / "p.csv"
    cli_hooks.run_profile(
        ToyNet(), "torch", 2, out, threads=1, repeats=1, rounds=1, progress=False, verbose=False
    )
    with pytest.raises(ValueError, match="clock"):  # a resumed file never mixes clocks
        cli_hooks.run_profile(
            ToyNet(), "torch", 3, out, threads=1, clock="thread_cpu", progress=False, verbose=False
        )


# ------------------------------------------------------------------------------------- degenerate configs
class ToySpaceWithEmptyNets(SearchSpace):
    """SPACE, except that width 2 stands for a net that computes nothing (as NB201's disconnected cells)."""

    def __init__(self) -> None:
        super().__init__(SPACE.name, list(SPACE.dims))

    def degenerate_reason(self, cfg):
        return "empty" if cfg["width"] == 2 else None


def test_run_fit_leaves_out_the_configs_the_space_calls_degenerate(tmp_path, capsys) -> None:
    # NB201's disconnected cells "cost" what an empty network costs and were fitted like any other cell
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    space = ToySpaceWithEmptyNets()
    res = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", space=space, test_fraction=0.25)
    assert res["left_out"] == {"empty": 2} and res["train"] + res["test"] == 6
    assert res["provenance"]["rows"] == 8 and res["provenance"]["rows_fitted"] == 6
    assert "left out 2 of 8 configs the space calls degenerate: empty (2); --keep-degenerate" in (
        capsys.readouterr().out
    )
    kept = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", space=space, keep_degenerate=True)
    assert kept["left_out"] == {} and kept["train"] + kept["test"] == 8
    assert "left out" not in capsys.readouterr().out


def test_nb201_calls_its_disconnected_cells_degenerate() -> None:
    from search_spaces import nb201

    reasons = [nb201.space.degenerate_reason(c) for c in nb201.all_configs()]
    assert reasons.count("disconnected") == 341 and set(reasons) == {None, "disconnected"}
    assert SPACE.degenerate_reason(SPACE.max()) is None  # the default: every config is a real network


# ------------------------------------------------------------------------------------------- provenance
def test_run_fit_records_what_the_predictor_was_fitted_on(tmp_path, capsys) -> None:
    import predictors

    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    p = Profile.load(prof)
    meta = {
        **p.metadata,
        "device": "lab-pi",
        "cpu": "Cortex-A72",
        "batch_size": 1,
        "threads": 1,
        "in_channels": 3,
    }
    p.metadata.update(meta)
    p.save(prof)
    res = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", profile_name="lab")
    saved = predictors.load(tmp_path / "pred.json").provenance
    assert saved == json.loads(json.dumps(res["provenance"]))
    assert (
        saved["metric"] == "latency_ms" and saved["profile"] == str(prof) and saved["profile_name"] == "lab"
    )
    assert saved["space"] == SPACE.name and saved["rows"] == saved["rows_fitted"] == 8
    assert saved["device"] == {
        "device": "lab-pi",
        "backend": "torch",
        "cpu": "Cortex-A72",
        "batch_size": 1,
        "threads": 1,
        "in_channels": 3,
    }
    assert saved["held_out"] == res["metrics"] and saved["fitted_at"].startswith("20")
    import hashlib

    assert saved["profile_sha256"] == hashlib.sha256(prof.read_bytes()).hexdigest()
    out = capsys.readouterr().out
    assert "fitted on: latency_ms of lab, space toy-conv, device lab-pi (Cortex-A72, torch" in out


def test_run_fit_shows_progress_on_stderr(tmp_path, capsys) -> None:
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", progress=True, verbose=False)
    captured = capsys.readouterr()
    assert "nas fit: fitting ridge on 6 samples" in captured.err and captured.out == ""
    cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", progress=False, verbose=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------ extending a profile
class GreyToyNet(ToyNet):
    """ToyNet on 1-channel inputs: the same configs as ToyNet's 3-channel ones, other latencies."""

    def extract(self, cfg: Config) -> nn.Module:
        self.built.append(cfg.key)
        return nn.Conv2d(1, cfg["width"], cfg["kernel"])

    def input_shape(self, cfg: Config, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 1, 8, 8)


QUICK = {"threads": 1, "repeats": 1, "rounds": 1, "warmup": 0, "progress": False, "verbose": False}


def test_run_profile_refuses_to_extend_with_other_input_channels_device_or_cpu(tmp_path, monkeypatch) -> None:
    out = tmp_path / "toy.csv"
    first = cli_hooks.run_profile(ToyNet(), "torch", 2, out, device_name="lab", **QUICK)
    assert first.metadata["in_channels"] == 3 and first.metadata["device"] == "lab"
    net = GreyToyNet()
    with pytest.raises(
        ValueError, match=r"in_channels=3 but this run uses in_channels=1.*--in-channels 3.*--out"
    ):
        cli_hooks.run_profile(net, "torch", 4, out, **QUICK)
    with pytest.raises(ValueError, match=r"device='lab' but this run uses device='home'.*--device-name lab"):
        cli_hooks.run_profile(ToyNet(), "torch", 4, out, device_name="home", **QUICK)
    monkeypatch.setattr(measure, "cpu_model", lambda: "Another CPU 9000")
    with pytest.raises(
        ValueError, match=r"measured on cpu '.*' but this machine's cpu is 'Another CPU 9000'.*--out"
    ):
        cli_hooks.run_profile(ToyNet(), "torch", 4, out, device_name="lab", **QUICK)
    assert net.built == [] and len(Profile.load(out)) == 2
    monkeypatch.undo()
    # without --device-name the file's name is kept (the CPU model says which machine it is)
    assert cli_hooks.run_profile(ToyNet(), "torch", 3, out, **QUICK).metadata["device"] == "lab"


def test_run_profile_extends_with_other_repeats_rounds_and_warmup_and_records_them(tmp_path, capsys) -> None:
    out = tmp_path / "toy.csv"
    kw = {"threads": 1, "progress": False}
    cli_hooks.run_profile(ToyNet(), "torch", 2, out, repeats=2, rounds=1, warmup=0, verbose=False, **kw)
    same = cli_hooks.run_profile(
        ToyNet(), "torch", 3, out, repeats=2, rounds=1, warmup=0, verbose=False, **kw
    )
    assert (same.metadata["repeats"], same.metadata["rounds"], same.metadata["warmup"]) == (2, 1, 0)
    capsys.readouterr()
    # repeats=3 with rounds=2 measures 4: the note and the record give the count used
    more = cli_hooks.run_profile(ToyNet(), "torch", 5, out, repeats=3, rounds=2, warmup=1, **kw)
    assert (
        "repeats=4 (the file: 2), rounds=2 (the file: 1), warmup=1 (the file: 0)" in capsys.readouterr().out
    )
    runs = Profile.load(out).metadata["runs"]
    assert [(r["repeats"], r["rounds"], r["warmup"], r["configs"]) for r in runs] == [
        (2, 1, 0, 2),
        (2, 1, 0, 1),
        (4, 2, 1, 2),
    ]
    # the top level no longer claims one setting for all rows; the repeats column says each row's count
    assert not {"repeats", "rounds", "warmup"} & set(more.metadata)
    assert more.repeats.tolist() == [2, 2, 2, 4, 4]


def test_profiles_record_their_layout_and_are_not_extended_across_layouts(tmp_path) -> None:
    # conv nets run channels-last on the CPU backends and NCHW on cuda: other kernels, other latencies
    out = tmp_path / "toy.csv"
    assert (
        cli_hooks.run_profile(ToyNet(), "torch", 2, out, **QUICK).metadata["memory_format"] == "channels_last"
    )
    saved = Profile.load(out)
    saved.metadata["memory_format"] = "contiguous"
    saved.save(out)
    net = ToyNet()
    with pytest.raises(ValueError, match=r"measured in the contiguous layout, and torch now measures in the"):
        cli_hooks.run_profile(net, "torch", 4, out, **QUICK)
    assert net.built == [] and len(Profile.load(out)) == 2
    # a profile from before the layout was recorded was measured channels-last: a CPU run extends it
    del saved.metadata["memory_format"]
    saved.save(out)
    assert len(cli_hooks.run_profile(ToyNet(), "torch", 3, out, **QUICK)) == 3


def test_run_profile_refuses_to_extend_a_profile_of_another_library_version(tmp_path) -> None:
    # other torch / onnxruntime versions run other kernels (oneDNN, MLAS): their latencies must not be mixed
    out = tmp_path / "toy.csv"
    cli_hooks.run_profile(ToyNet(), "torch", 2, out, **QUICK)
    saved = Profile.load(out)
    assert saved.metadata["versions"]["torch"] == torch.__version__
    saved.metadata["versions"]["torch"] = "1.0.0"
    saved.save(out)
    net = ToyNet()
    with pytest.raises(
        ValueError,
        match=rf"measured with torch 1\.0\.0 but this machine has torch {re.escape(torch.__version__)}.*new profile",
    ):
        cli_hooks.run_profile(net, "torch", 4, out, **QUICK)
    assert net.built == [] and len(Profile.load(out)) == 2
    # a profile from before versions were recorded cannot be checked: it is extended, and the run records its own
    del saved.metadata["versions"]
    saved.save(out)
    extended = cli_hooks.run_profile(ToyNet(), "torch", 3, out, **QUICK)
    assert len(extended) == 3 and "versions" not in extended.metadata
    assert extended.metadata["runs"][-1]["versions"]["torch"] == torch.__version__


def test_an_onnxruntime_profile_is_refused_for_another_onnxruntime_or_torch_version(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "ort.csv"
    configs = list(SPACE.all_configs())[:2]
    versions = {"onnxruntime": "0.1.0", "torch": torch.__version__}
    Profile(SPACE.name, configs, [1.0, 2.0], metadata={"backend": "onnxruntime", "versions": versions}).save(
        out
    )
    with pytest.raises(
        ValueError,
        match=rf"onnxruntime 0\.1\.0 but this machine has onnxruntime {re.escape(ort.__version__)}",
    ):
        cli_hooks.run_profile(ToyNet(), "onnxruntime", 4, out, **QUICK)
    # the graph onnxruntime runs is torch's export: another torch may write another graph
    versions.update(onnxruntime=ort.__version__, torch="1.0.0")
    Profile(SPACE.name, configs, [1.0, 2.0], metadata={"backend": "onnxruntime", "versions": versions}).save(
        out
    )
    with pytest.raises(ValueError, match=r"torch 1\.0\.0 but this machine has torch"):
        cli_hooks.run_profile(ToyNet(), "onnxruntime", 4, out, **QUICK)


def test_measure_export_compares_the_predicted_statistic_and_keeps_the_export_loadable(tmp_path, monkeypatch):
    from nas.export import export, load_exported, read_manifest
    from nas.hw.export_check import machine_difference, measure_export
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small", in_channels=1)
    out = export(net, net.space.min(), tmp_path / "m", formats=("safetensors",))
    # a fake clock: repeat i of the 10 takes i + 1 ms, so median 5.5, 10th percentile 1.9
    monkeypatch.setattr(measure._TorchRunner, "time", lambda self, n: [float(i + 1) for i in range(n)])
    meta = {"backend": "torch", "threads": 1, "repeats": 10, "rounds": 1, "warmup": 0, "in_channels": 1}
    m = measure_export(out, meta, metric="latency_p10_ms", predicted_ms=2.0, max_latency_ms=1.5)
    assert m["settings"]["statistic"] == "p10" and m["measured_ms"] == pytest.approx(1.9)
    assert m["median_ms"] == 5.5 and m["difference"] == pytest.approx(-0.05) and not m["within_max_latency"]
    assert read_manifest(out)["measured_latency"] == json.loads(json.dumps(m))
    load_exported(out)  # the rewritten manifest still lists the same files and checksums
    with pytest.raises(ValueError, match="predicts 'energy_mj', not a latency statistic"):
        measure_export(out, meta, metric="energy_mj")
    # a GPU target is told apart by its GPU, a CPU one by its CPU
    cuda = {"backend": "cuda", "cpu": "A", "gpu": "NVIDIA H100"}
    assert machine_difference(cuda, {"cpu": "B", "gpu": "NVIDIA H100"}) is None
    assert (
        machine_difference(cuda, {"cpu": "A", "gpu": "NVIDIA A10"}) == "GPU 'NVIDIA A10', not 'NVIDIA H100'"
    )
    assert machine_difference({"backend": "torch"}, {"cpu": "B"}) is None  # not recorded: cannot tell


def test_measure_export_says_when_the_targets_int8_graphs_were_quantized_otherwise(tmp_path):
    """A vit int8 profile measured before attention graphs were quantized weight ops only times other graphs
    than nas exports now; the measurement says so rather than comparing them silently."""
    pytest.importorskip("onnxruntime")
    from nas.export import export
    from nas.hw.export_check import RECORDED_KEYS, measure_export
    from search_spaces import mobilenetv3

    net = mobilenetv3.supernet("small", in_channels=1)
    out = export(net, net.space.min(), tmp_path / "m", formats=("safetensors",))
    meta = {
        "backend": "onnxruntime",
        "precision": "int8",
        "threads": 1,
        "repeats": 1,
        "rounds": 1,
        "warmup": 0,
    }
    # a conv graph is quantized as "all", as the target's were: nothing to say
    m = measure_export(out, {**meta, "int8_quantize": "all"}, record=False)
    assert m["settings"]["int8_quantize"] == "all" and m["other_quantization"] is None
    m = measure_export(out, {**meta, "int8_quantize": "weights"}, record=False)
    assert (
        m["other_quantization"]
        == "int8 graphs quantized as 'all' (what nas does now), not 'weights' as the target's were"
    )
    # a target recorded by nas search (or a predictor's provenance) keeps what its profile quantized
    assert "int8_quantize" in RECORDED_KEYS and "int8_quantize" in cli_hooks._PROVENANCE_DEVICE_KEYS


def test_run_fit_with_one_held_out_config_saves_its_undefined_tau_as_null(tmp_path, capsys) -> None:
    """Kendall's tau of one held-out config is NaN, which JSON cannot hold: the fit of a 4-row profile crashed
    on save ("Out of range float values are not JSON compliant") after fitting."""
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    res = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", test_fraction=0.1)
    assert res["test"] == 1 and math.isnan(res["metrics"]["kendall_tau"])
    assert "kendall_tau: n/a (1 held-out config)" in capsys.readouterr().out
    saved = json.loads((tmp_path / "pred.json").read_text())
    assert saved["provenance"]["held_out"]["kendall_tau"] is None
    assert saved["provenance"]["held_out"]["within_10pct"] == res["metrics"]["within_10pct"]


def test_run_fit_saves_the_held_out_count_as_an_int(tmp_path) -> None:
    """``held_out.n`` counts configs; it was saved as a float (``"n": 2.0``)."""
    prof = tmp_path / "p.csv"
    _synthetic_profile(prof)
    res = cli_hooks.run_fit(prof, tmp_path / "pred.json", kind="ridge", verbose=False)
    saved = json.loads((tmp_path / "pred.json").read_text())["provenance"]["held_out"]
    assert saved["n"] == res["test"] and type(saved["n"]) is int
    assert type(saved["mape"]) is float


def test_merge_keeps_the_extra_columns_of_either_run() -> None:
    # a profile measured before nas recorded the fast tail, extended by a run that records it
    old = Profile("toy-conv", [{"width": 2, "kernel": 1}], [1.0], repeats=[3], extras={"energy_mj": [0.5]})
    new = Profile(
        "toy-conv",
        [{"width": 2, "kernel": 1}, {"width": 4, "kernel": 1}],  # the first is already in old
        [9.0, 2.0],
        latency_cv=[0.9, 0.1],
        repeats=[6, 6],
        extras={"latency_p10_ms": [8.0, 1.5]},
    )
    merged = cli_hooks._merge(old, new)
    assert [c["width"] for c in merged.configs] == [2, 4] and merged.latency_ms.tolist() == [1.0, 2.0]
    assert merged.repeats.tolist() == [3, 6]
    assert list(merged.extras) == ["energy_mj", "latency_p10_ms"]
    np.testing.assert_array_equal(merged.extras["energy_mj"], [0.5, np.nan])
    np.testing.assert_array_equal(merged.extras["latency_p10_ms"], [np.nan, 1.5])
