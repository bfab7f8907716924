"""The OFA MobileNetV3 supernet: space, extraction equivalence, presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nas
from nas.supernet import resize_to
from search_spaces import mobilenetv3

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN statistics/affines and the classifier non-trivial values, so that differences show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
    return net


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return randomize(mobilenetv3.supernet("small", num_classes=10, in_channels=3)).eval()


def test_space_dimensions_and_conditions():
    space = mobilenetv3.space("small")
    assert space["resolution"].values == (24, 28, 32)
    assert space["stage3.depth"].values == (2, 3, 4)
    assert space["stage5.block3.kernel"].values == (3, 5, 7)
    assert space["stage1.block1.expand"].values == (3, 4, 6)
    assert space["stage2.block2.kernel"].when == {"stage2.depth": (3, 4)}
    assert space["stage2.block3.expand"].when == {"stage2.depth": (4,)}
    assert len(space) == 1 + 5 * (1 + 4 * 2)
    assert mobilenetv3.space("imagenet")["resolution"].values == (160, 176, 192, 208, 224)
    # Per stage: 9^2 * (1 + 9 + 81) distinct block settings; 3 resolutions.
    assert space.size == 3 * (81 * 91) ** 5


def test_blocks_beyond_depth_do_not_change_the_network(small_net):
    cfg = small_net.space.canonical({**small_net.space.max(), "stage2.depth": 2})
    other = dict(cfg)
    other["stage2.block3.kernel"] = 7
    assert small_net.space.canonical(other).key == cfg.key
    x = torch.randn(2, 3, 32, 32)
    small_net.activate(cfg)
    a = small_net(x)
    small_net.activate(other)
    torch.testing.assert_close(small_net(x), a, rtol=0, atol=0)


def test_extraction_equivalence_100_random_configs_plus_max_and_min(small_net):
    space = small_net.space
    configs = [space.max(), space.min(), *space.samples(100, seed=2026)]
    x0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    worst = 0.0
    with torch.no_grad():
        for cfg in configs:
            cfg = small_net.activate(cfg)
            x = resize_to(x0, cfg)
            expected = small_net(x)
            static_model = small_net.extract(cfg).eval()
            assert not any(type(m).__module__.startswith("nas.ops") for m in static_model.modules())
            got = static_model(x)
            assert expected.abs().max() > 0.1  # a non-trivial function, so the comparison can fail
            worst = max(worst, (got - expected).abs().max().item())
            assert small_net.active_config == cfg  # extract restores the active config
    assert worst <= 1e-5, worst


def test_extraction_is_independent_of_the_active_config(small_net):
    cfg = small_net.space.sample(5)
    small_net.activate(small_net.space.max())
    m1 = small_net.extract(cfg)
    small_net.activate(small_net.space.min())
    m2 = small_net.extract(cfg)
    assert m1.architecture == m2.architecture
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert small_net.active_config == small_net.space.min()


def test_train_mode_uses_batch_statistics_like_the_extracted_model():
    torch.manual_seed(3)
    net = randomize(mobilenetv3.supernet("small"))
    net.classifier[0].p = 0.0  # dropout would draw different masks
    cfg = net.space.sample(11)
    static_model = net.extract(cfg).train()
    net.activate(cfg)
    net.train()
    x = torch.randn(4, *net.input_shape(cfg)[1:])
    torch.testing.assert_close(net(x), static_model(x), rtol=0, atol=1e-5)


def test_gradients_reach_only_active_weights():
    net = mobilenetv3.supernet("small").train()
    cfg = net.activate(net.space.min())
    x = torch.randn(2, *net.input_shape(cfg)[1:])
    net(x).sum().backward()
    block0 = net.stages[0][0]
    hidden = block0.expand_conv.active_out_channels
    assert block0.expand_conv.weight.grad[:hidden].abs().sum() > 0
    assert block0.expand_conv.weight.grad[hidden:].abs().sum() == 0
    assert net.stages[0][3].expand_conv.weight.grad is None  # depth 2: block 3 never ran


def test_mnist_input_channels_and_input_shape():
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1).eval()
    cfg = net.activate({**net.space.min(), "resolution": 28})
    assert net.input_shape(cfg, batch_size=5) == (5, 1, 28, 28)
    with torch.no_grad():
        assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_imagenet_preset_extracts_equivalently():
    torch.manual_seed(0)
    net = randomize(mobilenetv3.supernet("imagenet", num_classes=1000)).eval()
    assert net.stages[4][0].se is not None and net.stages[0][0].se is None
    assert net.stages[2][0].act_name == "hswish" and net.stages[1][0].act_name == "relu"
    for cfg in (net.space.max(), net.space.sample(0)):
        cfg = {**cfg, "resolution": 160}
        net.activate(cfg)
        x = torch.randn(1, 3, 160, 160)
        with torch.no_grad():
            torch.testing.assert_close(net.extract(cfg).eval()(x), net(x), rtol=0, atol=1e-5)


def test_bad_configs_and_presets_raise_useful_errors(small_net):
    with pytest.raises(nas.InvalidConfigError, match=r"stage1\.block0\.kernel.*\[3, 5, 7\]"):
        small_net.activate({**small_net.space.max(), "stage1.block0.kernel": 4})
    with pytest.raises(ValueError, match="unknown mobilenetv3 preset 'huge'"):
        mobilenetv3.supernet("huge")


def test_kernel_transform_starts_as_plain_crops_and_extracts_equivalently():
    torch.manual_seed(0)
    plain = randomize(mobilenetv3.supernet("small", num_classes=10, in_channels=3)).eval()
    torch.manual_seed(0)
    net = randomize(
        mobilenetv3.supernet("small", num_classes=10, in_channels=3, kernel_transform=True)
    ).eval()
    cfg = net.space.min()  # kernel 3 everywhere: every transform is used
    x = torch.randn(2, *net.input_shape(cfg)[1:], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        net.activate(cfg), plain.activate(cfg)
        assert torch.allclose(net(x), plain(x), atol=1e-6)  # identity at start
        transforms = [p for n, p in net.named_parameters() if "kernel_transforms." in n]
        assert transforms and all(p.shape in ((9, 9), (25, 25)) for p in transforms)
        g = torch.Generator().manual_seed(2)
        for p in transforms:
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
        assert not torch.allclose(net(x), plain(x), atol=1e-3)  # now the small kernels differ...
        worst = 0.0
        for c in [net.space.max(), cfg, *net.space.samples(20, seed=7)]:
            c = net.activate(c)
            xc = resize_to(x, c)
            worst = max(worst, (net.extract(c).eval()(xc) - net(xc)).abs().max().item())
        assert worst <= 1e-5, worst  # ...and extraction bakes them into plain convs
        big = net.space.max()
        net.activate(big), plain.activate(big)
        xb = resize_to(x, big)
        assert torch.allclose(net(xb), plain(xb), atol=1e-6)  # the largest kernel never uses them


def test_kernel_transforms_learn_and_are_not_weight_decayed():
    from nas.train.trainer import TrainConfig, _make_optimizer

    net = randomize(mobilenetv3.supernet("small", num_classes=10, in_channels=1, kernel_transform=True))
    deepest_smallest_kernels = {k: (3 if k.endswith(".kernel") else v) for k, v in net.space.max().items()}
    cfg = net.activate(deepest_smallest_kernels)  # every block active, each using both transforms
    net(torch.randn(2, *net.input_shape(cfg)[1:])).sum().backward()
    transforms = {id(p): p for n, p in net.named_parameters() if "kernel_transforms." in n}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in transforms.values())
    opt = _make_optimizer(TrainConfig(weight_decay=0.1), net)
    decayed = {id(p) for group in opt.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert decayed and not decayed & set(transforms)


def _assert_subnets_extract_equivalently(net, space) -> None:
    """The min, the max and 5 random subnets of ``net``, extracted, compute what the supernet computes."""
    x0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for cfg in (space.min(), space.max(), *space.samples(5, seed=1)):
            cfg = net.activate(cfg)
            x = resize_to(x0, cfg)
            torch.testing.assert_close(net.extract(cfg).eval()(x), net(x), rtol=1e-4, atol=1e-5)


def test_a_preset_with_other_depths_builds_its_space_and_extracts_equivalently():
    import dataclasses

    preset = dataclasses.replace(mobilenetv3.PRESETS["small"], name="shallow", depths=(1, 2, 3))
    space = mobilenetv3.space(preset)
    assert space["stage1.depth"].values == (1, 2, 3)
    assert space["stage1.block0.kernel"].when == {}  # the first block always runs
    assert space["stage1.block1.kernel"].when == {"stage1.depth": (2, 3)}
    assert space["stage1.block2.expand"].when == {"stage1.depth": (3,)}
    assert "stage1.block3.kernel" not in space.names
    torch.manual_seed(0)
    net = randomize(mobilenetv3.supernet(preset, num_classes=10, in_channels=3)).eval()
    assert all(len(stage) == 3 for stage in net.stages)
    _assert_subnets_extract_equivalently(net, space)
    assert sum(1 for n in net.extract(space.min()).modules() if type(n).__name__ == "Residual") < sum(
        1
        for n in mobilenetv3.supernet("small").extract(mobilenetv3.space("small").min()).modules()
        if type(n).__name__ == "Residual"
    )


def test_a_preset_with_other_expand_ratios_and_kernels_builds_its_space_and_extracts_equivalently():
    import dataclasses

    preset = dataclasses.replace(
        mobilenetv3.PRESETS["small"], name="thin", expand_ratios=(1, 2, 6), kernels=(3, 5)
    )
    space = mobilenetv3.space(preset)
    assert space["stage2.block0.expand"].values == (1, 2, 6)
    assert space["stage2.block0.kernel"].values == (3, 5)
    assert space.min()["stage3.block1.expand"] == 1
    torch.manual_seed(0)
    net = randomize(mobilenetv3.supernet(preset, num_classes=10, in_channels=3)).eval()

    # The min subnet's hidden layers are as wide as its blocks' inputs (expand 1).
    def params(supernet, cfg):
        return sum(spec.params for spec in supernet.layer_specs(cfg))

    small = mobilenetv3.supernet("small", num_classes=10, in_channels=3)
    assert params(net, space.min()) < params(small, small.space.min())
    _assert_subnets_extract_equivalently(net, space)


def test_narrow_preset_is_small_at_half_width_with_the_same_space():
    narrow, small = mobilenetv3.PRESETS["narrow"], mobilenetv3.PRESETS["small"]
    assert narrow.widths == tuple(w // 2 for w in small.widths)
    assert (narrow.final_expand, narrow.feature_mix) == (small.final_expand // 2, small.feature_mix // 2)
    space = mobilenetv3.space("narrow")
    assert space.name == "mobilenetv3-narrow"
    assert space.dims == mobilenetv3.space("small").dims  # the same architectures, thinner layers
    torch.manual_seed(0)
    net = randomize(mobilenetv3.supernet("narrow", num_classes=10, in_channels=3)).eval()
    assert [stage[0].out_channels for stage in net.stages] == [8, 12, 16, 24, 32]

    def params(supernet, cfg):
        return sum(spec.params for spec in supernet.layer_specs(cfg))

    wide = mobilenetv3.supernet("small", num_classes=10, in_channels=3)
    assert params(net, space.max()) < 0.4 * params(wide, space.max())
    _assert_subnets_extract_equivalently(net, space)
