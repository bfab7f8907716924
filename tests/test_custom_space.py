"""A supernet of the user's own (examples/custom_space.py) and the layer specs traced from extracted subnets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from nas import metrics
from nas.export import load_exported
from nas.supernet import Supernet, trace_layer_specs
from search_spaces import mobilenetv3

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_space.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_space_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_traced_layer_specs_equal_the_analytic_ones_of_mobilenetv3():
    torch.manual_seed(0)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1)
    for cfg in (net.space.max(), net.space.min(), *net.space.samples(3, seed=4)):
        analytic = [s.key for s in net.layer_specs(cfg)]
        traced = [s.key for s in Supernet.layer_specs(net, cfg)]  # the base class's default: a trace
        assert traced == analytic


def test_trace_refuses_layers_whose_cost_it_cannot_describe():
    with pytest.raises(ValueError, match=r"'1' \(GroupNorm\) has weights"):
        trace_layer_specs(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4)), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="affine layer norms over the last dimension only"):
        trace_layer_specs(nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm((2, 2))), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="square ones only"):
        trace_layer_specs(nn.Sequential(nn.Conv2d(1, 4, (1, 3))), (1, 1, 4, 4))
    # Parameter-free layers cost nothing; the model's training mode survives the trace.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(), nn.MaxPool2d(2)).train()
    assert [s.kind for s in trace_layer_specs(model, (1, 1, 6, 6))] == ["conv", "bn"]
    assert model.training


def test_a_user_supernet_gets_macs_and_params_from_its_extracted_subnets(example):
    torch.manual_seed(0)
    net = example.DigitsSupernet()
    for cfg in (net.space.max(), net.space.min(), net.space.sample(seed=2)):
        model = net.extract(cfg).eval()
        assert metrics.params(net, cfg) == sum(p.numel() for p in model.parameters())
        x = torch.randn(3, *net.input_shape(cfg)[1:])
        with net.activated(cfg):
            net.eval()
            assert torch.allclose(model(x), net(x), atol=1e-5)
    assert metrics.macs(net, net.space.min()) < metrics.macs(net, net.space.max())


def test_custom_space_example_trains_searches_and_exports(example, tmp_path):
    summary = example.main(["--epochs", "2", "--budget", "8", "--out", str(tmp_path)])
    assert summary["front_size"] >= 1
    assert summary["macs"] <= summary["max_subnet"]["macs"]
    assert {"manifest.json", "model.safetensors", "model.onnx"} <= set(summary["files"])
    model = load_exported(summary["export"])
    assert json.loads(model.config_json) == summary["chosen"]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # batch norm re-estimated for the subnet as its evaluation did: the export scores the accuracy it was chosen by
    from nas import data

    images, labels = data.train_val_split(data.digits(), 0.2, seed=0)[1].tensors
    with torch.no_grad():
        accuracy = float((model(images.float()).argmax(1) == labels).float().mean()) * 100
    assert abs(accuracy - summary["accuracy"]) <= 100 / len(labels)  # one image: float noise at a near tie


def test_user_supernet_channel_sorting_keeps_every_full_width_subnet(example):
    torch.manual_seed(0)
    net = example.DigitsSupernet().eval()
    x = torch.randn(4, 1, 8, 8)
    full = [dict(net.space.max(), depth=d) for d in (1, 2, 3)]
    before = []
    for cfg in full:
        with net.activated(cfg):
            before.append(net(x))
    net.sort_channels()
    for cfg, out in zip(full, before):
        with net.activated(cfg):
            assert torch.allclose(net(x), out, atol=1e-5)
    importance = net.head.weight.abs().sum(0)
    assert importance[0] >= importance[-1]  # the head's most-read channels come first


def test_phased_strategies_need_channel_sorting_and_say_so_before_writing(example, tmp_path):
    from nas import data
    from nas.train import train_supernet

    class NoSorting(example.DigitsSupernet):
        sort_channels = Supernet.sort_channels  # what a supernet that never defined it inherits

    train, _ = data.train_val_split(data.digits(), 0.2, seed=0)
    for strategy in ("progressive", "delayed"):
        with pytest.raises(ValueError, match="does not implement sort_channels"):
            train_supernet(NoSorting(), train, strategy=strategy, epochs=1, out_dir=tmp_path / strategy)
        assert not (tmp_path / strategy).exists()
    result = train_supernet(
        example.DigitsSupernet(),
        train,
        strategy="progressive",
        epochs=1,
        batch_size=128,
        out_dir=tmp_path / "ok",
    )
    assert result.steps == 11  # 1,437 images, batches of 128
    events = [json.loads(line) for line in (tmp_path / "ok" / "metrics.jsonl").read_text().splitlines()]
    assert (
        len([e for e in events if e.get("event") == "phase"]) >= 3
    )  # channels were re-sorted at each change


def test_a_batchnorm1d_head_is_costed_and_exported():
    # Flatten -> Linear -> BatchNorm1d: trace_layer_specs refused it ("has weights but no LayerSpec kind") and
    # nas.static had no codec, so such a user supernet could be neither costed nor exported.
    from nas import static

    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
    ).eval()
    specs = trace_layer_specs(model, (1, 1, 4, 4))
    assert [s.kind for s in specs] == ["conv", "linear", "bn", "act", "linear"]
    assert specs[2].params == 16 and specs[2].in_h == specs[2].out_w == 1
    rebuilt = static.build(json.loads(json.dumps(static.describe(model)))).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(rebuilt(x), model(x))
