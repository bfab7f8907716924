"""The Supernet base contract, shown on the MobileNetV3 supernet."""

from __future__ import annotations

import pytest
import torch

import nas
from nas.supernet import LayerSpec, Supernet, resize_to
from search_spaces import mobilenetv3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return mobilenetv3.supernet("small").eval()


def test_base_class_methods_say_what_is_missing():
    base = Supernet(nas.SearchSpace("toy", [nas.Choice("k", (3, 5))]))
    with pytest.raises(NotImplementedError, match="must implement _set_active"):
        base.activate({"k": 3})
    for call in (
        lambda: base.extract({"k": 3}),
        lambda: base.input_shape({"k": 3}),
        base.elastic_groups,
        base.sort_channels,
        lambda: base.layer_specs({"k": 3}),
    ):
        with pytest.raises(NotImplementedError, match="Supernet must implement"):
            call()
    with pytest.raises(TypeError, match="SearchSpace"):
        Supernet({"k": (3, 5)})
    assert nas.Supernet is Supernet


def test_construction_activates_max_and_activate_canonicalises(net):
    fresh = mobilenetv3.supernet("small")
    assert fresh.active_config == fresh.space.max()
    raw = dict(net.space.min())
    raw["stage1.block3.kernel"] = 7  # inactive at depth 2
    cfg = net.activate(raw)
    assert isinstance(cfg, nas.Config) and cfg == net.space.canonical(raw) and net.active_config == cfg
    assert cfg["stage1.block3.kernel"] == 3
    with pytest.raises(nas.InvalidConfigError, match="resolution"):
        net.activate({k: v for k, v in cfg.items() if k != "resolution"})
    assert net.active_config == cfg  # a rejected config leaves the active one alone


def test_activated_context_restores(net):
    net.activate(net.space.max())
    with net.activated(net.space.min()) as cfg:
        assert net.active_config == cfg == net.space.min()
        assert net.stages[0].active_depth == 2
    assert net.active_config == net.space.max() and net.stages[0].active_depth == 4


def test_resize_to():
    x = torch.randn(2, 3, 32, 32)
    assert resize_to(x, {"resolution": 32}) is x
    y = resize_to(x, nas.Config({"resolution": 24}))
    assert y.shape == (2, 3, 24, 24)
    torch.testing.assert_close(y, torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear"))
    assert resize_to(x, (28, 30)).shape == (2, 3, 28, 30)
    with pytest.raises(KeyError, match="resolution"):
        resize_to(x, {"depth": 2})


def test_forward_does_not_resize(net):
    net.activate(net.space.min())  # resolution 24
    with torch.no_grad():
        y24 = net(torch.randn(1, 3, 24, 24))
        assert net(torch.randn(1, 3, 32, 32)).shape == y24.shape  # runs at the size it is given


def test_elastic_groups_partition_the_space(net):
    groups = net.elastic_groups()
    assert set(groups) == {"resolution", "depth", "kernel", "width"}
    names = [n for group in groups.values() for n in group]
    assert sorted(names) == sorted(net.space.names)
    assert groups["depth"][0] == "stage1.depth"


def test_sort_channels_keeps_max_subnet_function_and_orders_channels():
    torch.manual_seed(1)
    net = mobilenetv3.supernet("small").eval()
    with torch.no_grad():  # make importances differ from the initial order
        for p in net.parameters():
            p.mul_(torch.rand_like(p) + 0.5)
        for (
            name,
            b,
        ) in net.named_buffers():  # and batch-norm statistics differ per channel, so they must move too
            if name.endswith(("running_mean", "running_var")):
                b.copy_(torch.rand_like(b) + 0.5)
    cfg = net.activate(net.space.max())
    x = torch.randn(2, *net.input_shape(cfg)[1:])
    with torch.no_grad():
        before = net(x)
        net.sort_channels()
        after = net(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for stage in net.stages:
        for block in stage:
            importance = block.project.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(importance[:-1] >= importance[1:])


def test_layer_specs_shapes_and_stable_keys(net):
    specs = net.layer_specs(net.space.max())
    assert all(isinstance(s, LayerSpec) for s in specs)
    kinds = {s.kind for s in specs}
    assert {"conv", "dwconv", "bn", "act", "se", "pool", "linear", "add"} <= kinds
    assert specs[0].in_h == 32 and specs[0].out_h == 16 and specs[-1].kind == "linear"
    assert all(s.bits == 32 and s.density == 1.0 for s in specs)
    dw = next(s for s in specs if s.kind == "dwconv" and s.name.startswith("stage1.block0"))
    assert dw.kernel == 7 and dw.groups == dw.in_channels == 8 * 6
    # The same layer shape gives the same key in another config; a different kernel changes it.
    other = net.space.canonical({**net.space.max(), "stage5.block0.kernel": 3})
    specs2 = net.layer_specs(other)
    assert specs[0].key == specs2[0].key
    changed = {s.name for s, t in zip(specs, specs2) if s.key != t.key}
    assert changed == {"stage5.block0.depthwise"}
    assert LayerSpec("conv", 3, 8, 3, 2, 1, 32, 32, 16, 16).key == specs[0].key


def test_layer_specs_do_not_touch_the_active_layers(net):
    active = net.activate(net.space.max())
    small = net.space.min()
    specs = net.layer_specs(small)
    assert net.active_config == active and net.stages[0][0].active_kernel == 7
    with net.activated(small):  # the same specs as when the subnet is active
        assert net.layer_specs(small) == specs
