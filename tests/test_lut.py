"""nas.hw.lut: per-layer latency lookup tables (few repeats: these test logic, not speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from nas.hw.lut import (
    LUT_FEATURE_NAMES,
    LatencyLUT,
    LUTFormatError,
    LUTMissingLayerError,
    build_lut,
    layer_module,
    lut_feature,
)
from nas.supernet import LayerSpec, trace_layer_specs


@pytest.fixture(scope="module")
def net():
    from search_spaces import mobilenetv3

    return mobilenetv3.supernet("small", num_classes=10, in_channels=1)


def test_layer_modules_have_the_shapes_of_their_specs(net) -> None:
    seen = set()
    for cfg in [net.space.min(), net.space.max(), *net.space.samples(3, seed=0)]:
        for s in net.layer_specs(cfg):
            if s.key in seen:
                continue
            seen.add(s.key)
            m, shape = layer_module(s, batch_size=2)
            with torch.inference_mode():
                y = m(torch.randn(shape))
            channels = s.in_channels if s.kind == "se" else s.out_channels  # SE: out_channels = hidden units
            assert y.shape[:2] == (2, channels), s.key
            if y.dim() == 4 and s.kind != "pool":
                assert tuple(y.shape[2:]) == (s.out_h, s.out_w), s.key
    with pytest.raises(ValueError, match="cannot be built"):
        layer_module(LayerSpec("lstm", 4, 4))


def test_build_save_load_predict(net, tmp_path) -> None:
    cfgs = net.space.samples(4, seed=1, unique=True)
    lut = LatencyLUT.build(net, cfgs[:3], threads=1, warmup=0, repeats=2, rounds=1, progress=False)
    keys = {s.key for c in cfgs[:3] for s in net.layer_specs(c)}
    assert set(lut.table) == keys and all(v > 0 for v in lut.table.values())
    assert (
        lut.metadata["backend"] == "torch"
        and lut.metadata["threads"] == 1
        and lut.metadata["batch_size"] == 1
    )

    raw = lut.raw_sum(net, cfgs[:3])
    fake = 1.5 * raw + 0.25  # a known line: calibration must recover it exactly
    fit = lut.calibrate(net, cfgs[:3], fake)
    assert fit["scale"] == pytest.approx(1.5) and fit["overhead_ms"] == pytest.approx(0.25)
    assert np.allclose(lut.predict(net, cfgs[:3]), fake)

    path = tmp_path / "lut.json"
    lut.save(path)
    again = LatencyLUT.load(path)
    assert again.table == lut.table and again.scale == lut.scale and again.overhead_ms == lut.overhead_ms
    assert np.allclose(again.predict(net, cfgs[:3]), fake)
    assert json.loads(path.read_text())["format_version"] == 1

    # Extending measures only the new shapes.
    before = dict(lut.table)
    added = lut.extend(net, cfgs, threads=1, warmup=0, repeats=2, rounds=1, progress=False)
    assert added == len(set(lut.table) - set(before)) > 0
    assert all(lut.table[k] == v for k, v in before.items())
    assert lut.extend(net, cfgs, progress=False) == 0
    with pytest.raises(ValueError, match="batch_size"):
        lut.extend(net, net.space.samples(2, seed=9), batch_size=4, progress=False)


def test_missing_layer_is_a_clear_error(net) -> None:
    lut = LatencyLUT({s.key: 0.01 for s in net.layer_specs(net.space.min())})
    assert lut.predict(net, [net.space.min()])[0] > 0
    with pytest.raises(LUTMissingLayerError, match="not in the lookup table") as err:
        lut.predict(net, [net.space.max()])
    assert "extend" in str(err.value) and "|" in str(err.value)  # names the shape and how to fix it
    assert lut.missing(net, [net.space.max()])


def test_lut_feature(net) -> None:
    cfgs = [net.space.min(), net.space.max()]
    lut = LatencyLUT({s.key: 0.001 * (1 + s.macs / 1e5) for c in cfgs for s in net.layer_specs(c)})
    f = np.stack([lut_feature(net, c, lut) for c in cfgs])
    assert f.shape == (2, len(LUT_FEATURE_NAMES))
    assert np.allclose(f[:, 0], lut.raw_sum(net, cfgs))
    assert np.allclose(f[:, 1:6].sum(1), f[:, 0])  # the groups split the total
    assert f[1, 0] > f[0, 0] and f[1, -1] > f[0, -1]


def test_load_rejects_foreign_and_corrupt_files(tmp_path) -> None:
    bad = tmp_path / "x.json"
    with pytest.raises(LUTFormatError, match="does not exist"):
        LatencyLUT.load(bad)
    bad.write_text("{not json")
    with pytest.raises(LUTFormatError, match="not valid JSON"):
        LatencyLUT.load(bad)
    bad.write_text(json.dumps({"format": "nas-profile"}))
    with pytest.raises(LUTFormatError, match="not a latency lookup table"):
        LatencyLUT.load(bad)
    bad.write_text(json.dumps({"format": "nas-latency-lut", "format_version": 99}))
    with pytest.raises(LUTFormatError, match="format_version"):
        LatencyLUT.load(bad)
    bad.write_text(
        json.dumps(
            {
                "format": "nas-latency-lut",
                "format_version": 1,
                "metadata": {},
                "table": {"a": -1.0},
                "scale": 1.0,
                "overhead_ms": 0.0,
            }
        )
    )
    with pytest.raises(LUTFormatError, match="finite"):
        LatencyLUT.load(bad)
    good = {"format": "nas-latency-lut", "format_version": 1, "metadata": {}, "table": {"a": 0.1}}
    for fields, message in [
        ({"overhead_ms": 0.0}, r"field 'scale' must be a number, got None; rebuild the table"),
        ({"scale": "2", "overhead_ms": 0.0}, r"field 'scale' must be a number, got '2'"),
        ({"scale": 1.0, "overhead_ms": 0.0, "table": {"a": True}}, r"layer 'a' must be a number, got True"),
        ({"scale": 1.0, "overhead_ms": 0.0, "table": {"a": "0.5"}}, r"layer 'a' must be a number, got '0.5'"),
    ]:
        bad.write_text(json.dumps({**good, **fields}))
        with pytest.raises(LUTFormatError, match=message):
            LatencyLUT.load(bad)


def test_build_lut_calibrates_and_saves(net, tmp_path) -> None:
    cfgs = net.space.samples(3, seed=2, unique=True)
    out = tmp_path / "lut.json"
    probe = LatencyLUT.build(net, cfgs, threads=1, warmup=0, repeats=1, rounds=1, progress=False)
    truth = 2.0 * probe.raw_sum(net, cfgs) + 1.0
    lut = build_lut(
        net,
        cfgs,
        threads=1,
        warmup=0,
        repeats=1,
        rounds=1,
        progress=False,
        clock="thread_cpu",
        calibrate_on=cfgs,
        calibration_latencies_ms=truth,
        out_path=out,
    )
    assert lut.metadata["clock"] == "thread_cpu" and lut.metadata["calibration"]["configs"] == 3
    loaded = LatencyLUT.load(out)
    assert np.allclose(loaded.predict(net, cfgs), lut.predict(net, cfgs))
    with pytest.raises(ValueError, match="clock"):  # a table never mixes clocks
        loaded.extend(net, net.space.samples(2, seed=9), threads=1, repeats=1, rounds=1, progress=False)
    with pytest.raises(ValueError, match="both"):
        build_lut(net, cfgs, threads=1, repeats=1, rounds=1, progress=False, calibrate_on=cfgs)


def test_extend_refuses_another_thread_count(net) -> None:
    cfgs = net.space.samples(2, seed=0, unique=True)
    meta = {"backend": "torch", "batch_size": 1, "clock": "wall", "threads": 1}
    lut = LatencyLUT({}, meta)
    with pytest.raises(ValueError, match="threads=1; cannot add layers measured with threads=2"):
        lut.extend(net, cfgs, threads=2, warmup=0, repeats=1, rounds=1, progress=False)
    assert len(lut) == 0


def test_calibration_line_must_be_finite(net, tmp_path) -> None:
    cfgs = net.space.samples(2, seed=0, unique=True)
    lut = LatencyLUT({s.key: 0.01 for c in cfgs for s in net.layer_specs(c)}, {"backend": "torch"})
    for bad in ([float("nan"), 1.0], [1.0, 0.0], [1.0, float("inf")]):
        with pytest.raises(ValueError, match="calibration latencies must be finite and > 0"):
            lut.calibrate(net, cfgs, bad)
    assert (lut.scale, lut.overhead_ms) == (1.0, 0.0)  # left as it was
    path = tmp_path / "lut.json"
    lut.save(path)
    d = json.loads(path.read_text())
    for field, value in (("scale", float("nan")), ("scale", 0.0), ("overhead_ms", float("inf"))):
        path.write_text(json.dumps({**d, field: value}))  # json writes NaN and Infinity, and reads them back
        with pytest.raises(LUTFormatError, match="finite scale > 0 and a finite overhead_ms"):
            LatencyLUT.load(path)


def test_a_traced_unpadded_conv_is_timed_at_the_output_size_it_computes():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=0), nn.Conv2d(4, 4, 5, stride=2, padding=2))
    for spec in trace_layer_specs(model, (1, 1, 9, 9)):
        module, shape = layer_module(spec)
        assert tuple(module(torch.zeros(shape)).shape[-2:]) == (spec.out_h, spec.out_w)


def test_a_dilated_conv_is_its_own_layer_and_is_timed_as_dilated():
    """A dilated conv computes with the same MACs as a plain one but other memory access: its own table row."""
    from nas.hw.lut import layer_module
    from nas.supernet import trace_layer_specs

    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2)
    )
    plain, dilated = trace_layer_specs(model, (1, 4, 8, 8))
    assert plain.macs == dilated.macs and plain.key != dilated.key and dilated.key.endswith("|dil2")
    module, shape = layer_module(dilated)
    assert module.dilation == (2, 2) and tuple(module(torch.zeros(shape)).shape) == (1, 4, 8, 8)
    unpadded = trace_layer_specs(torch.nn.Conv2d(4, 4, 3, dilation=2), (1, 4, 8, 8))[0]  # 8x8 -> 4x4
    module, shape = layer_module(unpadded)
    assert tuple(module(torch.zeros(shape)).shape) == (1, 4, 4, 4)


def test_the_activations_nas_export_describes_can_be_timed():
    # A user's extract() with LeakyReLU / ELU / Mish traces to act:leakyrelu etc.; its lookup table must time them.
    for act in ("leakyrelu", "elu", "mish"):
        module, shape = layer_module(LayerSpec("act", 4, 4, in_h=3, in_w=3, out_h=3, out_w=3, act=act))
        assert tuple(module(torch.zeros(shape)).shape) == shape


def test_on_a_fake_timer_each_layer_is_measured_once_and_the_line_is_fitted_by_hand(monkeypatch) -> None:
    from nas import Choice, SearchSpace
    from nas.hw import lut as lut_module
    from nas.hw import measure

    clock = {"ns": 0}
    calls: dict[float, int] = {}

    class FakeLayer(nn.Module):
        def __init__(self, ms: float):
            super().__init__()
            self.ms = ms

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            clock["ns"] += round(self.ms * 1_000_000)
            calls[self.ms] = calls.get(self.ms, 0) + 1
            return x

    def fake_layer_module(spec: LayerSpec, batch_size: int = 1) -> tuple[nn.Module, tuple[int, ...]]:
        return FakeLayer(spec.out_channels / 4), (batch_size, 1)  # 4 output channels take 1 ms

    monkeypatch.setattr(measure._Runner, "clock", staticmethod(lambda: clock["ns"]))
    monkeypatch.setattr(lut_module, "layer_module", fake_layer_module)

    class Net:
        space = SearchSpace("fake", [Choice("w", (4, 8, 12)), Choice("d", (1, 2))])

        def layer_specs(self, cfg):
            body = [LayerSpec("conv", 3, cfg["w"], name=f"b{i}") for i in range(cfg["d"])]
            return [*body, LayerSpec("conv", 3, 4, name="head")]

    net = Net()
    cfgs = list(net.space.all_configs())
    lut = LatencyLUT.build(net, cfgs, threads=1, warmup=1, repeats=4, rounds=2, progress=False)
    assert sorted(lut.table.values()) == [1.0, 2.0, 3.0]
    # each distinct layer is measured once however many configs share it: 2 rounds of 1 warm-up + 2 timed calls
    assert calls == {1.0: 6, 2.0: 6, 3.0: 6}
    raw = lut.raw_sum(net, cfgs)  # w/4 per body layer, times d, plus the 1 ms head
    assert raw.tolist() == [c["d"] * c["w"] / 4 + 1 for c in cfgs]
    fit = lut.calibrate(net, cfgs, 1.5 * raw + 0.25)  # least squares recovers an exact line
    assert fit["scale"] == pytest.approx(1.5) and fit["overhead_ms"] == pytest.approx(0.25)
    assert fit["median_abs_rel_error"] == pytest.approx(0.0, abs=1e-12)
    # a decreasing line is noise: scale 1 and the mean offset instead
    fit = lut.calibrate(net, cfgs, 10.0 - raw)
    assert (fit["scale"], fit["overhead_ms"]) == (1.0, pytest.approx(float(np.mean(10.0 - 2 * raw))))
    fit = lut.calibrate(net, cfgs[:1], [10.0])  # one network: the overhead only
    assert (fit["scale"], fit["overhead_ms"]) == (1.0, 10.0 - raw[0])
