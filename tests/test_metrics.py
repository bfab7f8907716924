"""Analytic MACs / params / bytes agree with counts taken on the extracted model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas import metrics
from search_spaces import mobilenetv3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return mobilenetv3.supernet("small", num_classes=10, in_channels=1).eval()


def hook_count(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of every Conv2d and Linear call, counted by forward hooks on the real tensors."""
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, output):
        nonlocal total
        k_h, k_w = m.kernel_size
        total += output.numel() // output.shape[0] * (m.in_channels // m.groups) * k_h * k_w

    def linear_hook(m: nn.Linear, inputs, output):
        nonlocal total
        total += output.numel() // output.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_macs_and_params_match_hook_counts_for_20_configs(net):
    configs = [net.space.max(), net.space.min(), *net.space.samples(18, seed=7)]
    for cfg in configs:
        model = net.extract(cfg).eval()
        x = torch.randn(1, *net.input_shape(cfg)[1:])
        assert metrics.macs(net, cfg) == hook_count(model, x), cfg
        assert metrics.params(net, cfg) == sum(p.numel() for p in model.parameters()), cfg


def test_imagenet_max_is_in_the_published_range():
    net = mobilenetv3.supernet("imagenet", num_classes=1000)
    cfg = {**net.space.max(), "resolution": 224}
    # Sanity range for the OFA MobileNetV3 D4-E6-K7 network at 224 px: ~7.7M parameters, ~0.57 GMACs.
    assert 7.0e6 < metrics.params(net, cfg) < 8.5e6
    assert 4.5e8 < metrics.macs(net, cfg) < 6.5e8
    assert metrics.macs(net, net.space.min()) < metrics.macs(net, cfg)


def test_model_bytes_of_a_float_model_is_four_per_parameter(net):
    cfg = net.space.sample(3)
    assert metrics.model_bytes(net, cfg) == 4 * metrics.params(net, cfg)


def test_metrics_validate_the_config(net):
    with pytest.raises(
        nas.InvalidConfigError, match=r"'resolution': 5 is not allowed; choose one of \[24, 28, 32\]"
    ):
        metrics.macs(net, {**net.space.max(), "resolution": 5})
