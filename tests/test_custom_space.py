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
    with pytest.raises(ValueError, match=r"'1' \(LayerNorm\) has weights"):
        trace_layer_specs(nn.Sequential(nn.Conv2d(1, 4, 3), nn.LayerNorm(2)), (1, 1, 4, 4))
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
