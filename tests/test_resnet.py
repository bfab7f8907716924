"""The OFA ResNet supernet: space, extraction equivalence, metrics, export, training, presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import nas
from nas import metrics, static
from nas.export import export, load_exported
from nas.ops.quant import weight_scale
from nas.supernet import Supernet, resize_to
from search_spaces import resnet

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN statistics/affines (the zero-initialised last BN of each block too) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        fc = net.classifier[1]
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) / fc.weight.shape[1] ** 0.5)
    return net


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return randomize(resnet.supernet("small", num_classes=10, in_channels=3)).eval()


@pytest.fixture(scope="module")
def imagenet_net():
    torch.manual_seed(0)
    return randomize(resnet.supernet("imagenet", num_classes=1000)).eval()


def test_space_dimensions_and_conditions():
    space = resnet.space("small")
    assert space["resolution"].values == (24, 28, 32)
    assert space["stem.width"].values == space["stage4.width"].values == (0.65, 0.8, 1.0)
    assert space["stage1.depth"].values == (1, 2, 3) and space["stage3.depth"].values == (2, 3, 4)
    assert space["stage1.block0.expand"].values == (0.2, 0.25, 0.35)
    assert space["stage1.block0.expand"].when == {}  # below the base depth: always runs
    assert space["stage1.block1.expand"].when == {"stage1.depth": (2, 3)}
    assert space["stage3.block3.expand"].when == {"stage3.depth": (4,)}
    assert len(space) == 2 + 4 * 2 + (3 + 3 + 4 + 3)
    # 3 resolutions, 3 widths for the stem and each stage; expand settings of depths base..base+2 per stage.
    assert space.size == 3**6 * (3 + 9 + 27) ** 3 * (9 + 27 + 81)
    imagenet = resnet.space("imagenet")
    assert imagenet["resolution"].values == (128, 144, 160, 176, 192, 208, 224)
    assert [imagenet[f"stage{s}.depth"].values[-1] for s in (1, 2, 3, 4)] == [4, 4, 6, 4]
    assert resnet.space("small", quant=True, sparsity=True).name == "resnet-small-quant-sparse"


def test_channel_rules_follow_ofa(imagenet_net):
    net = imagenet_net
    assert [resnet.channels(64, m) for m in resnet.WIDTH_MULTIPLIERS] == [40, 48, 64]
    block = net.stages[0][0]
    # ResNet-50's bottleneck at multiplier 1 and expand 0.25: 256 -> 64 -> 256; mid from the active width.
    assert block.mid_for(256, 0.25) == 64 and block.mid_for(256, 0.35) == 88 and block.mid_for(168, 0.2) == 32
    cfg = net.space.canonical({**net.space.min(), "stage1.width": 1.0, "stage1.block0.expand": 0.25})
    net.activate(cfg)
    assert (block.conv1.active_out_channels, block.conv3.active_out_channels) == (64, 256)
    assert net.stem[0].active_out_channels == 24 and net.stem[3].active_out_channels == 40  # 0.65 x 64


def test_blocks_beyond_depth_do_not_change_the_network(small_net):
    cfg = small_net.space.canonical({**small_net.space.max(), "stage3.depth": 2})
    other = dict(cfg)
    other["stage3.block3.expand"] = 0.35
    assert small_net.space.canonical(other).key == cfg.key
    x = torch.randn(2, 3, 32, 32)
    small_net.activate(cfg)
    a = small_net(x)
    small_net.activate(other)
    torch.testing.assert_close(small_net(x), a, rtol=0, atol=0)
    small_net.activate(small_net.space.max())
    assert not torch.allclose(small_net(x), a, atol=1e-3)  # the skipped blocks do compute something


def test_extraction_equivalence_30_random_configs_plus_max_and_min(small_net):
    space = small_net.space
    configs = [space.max(), space.min(), *space.samples(30, seed=2026)]
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
            rebuilt = static.build(static_model.architecture)
            assert list(rebuilt.state_dict()) == list(static_model.state_dict())
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
    net = randomize(resnet.supernet("small"))
    net.classifier[0].p = 0.0  # dropout would draw different masks
    cfg = net.space.sample(11)
    static_model = net.extract(cfg).train()
    net.activate(cfg)
    net.train()
    x = torch.randn(4, *net.input_shape(cfg)[1:])
    torch.testing.assert_close(net(x), static_model(x), rtol=0, atol=1e-5)


def test_gradients_reach_only_active_weights():
    net = randomize(resnet.supernet("small")).train()
    cfg = net.activate(net.space.min())
    x = torch.randn(2, *net.input_shape(cfg)[1:])
    net(x).sum().backward()
    block0 = net.stages[0][0]
    mid, width = block0.conv1.active_out_channels, block0.conv3.active_out_channels
    assert (mid, width) == (8, 40)  # expand 0.2 of 0.65 x 64
    assert block0.conv1.weight.grad[:mid].abs().sum() > 0
    assert block0.conv1.weight.grad[mid:].abs().sum() == 0
    assert block0.shortcut_conv.weight.grad[:width].abs().sum() > 0
    assert block0.shortcut_conv.weight.grad[width:].abs().sum() == 0
    stem = net.stem[3].active_out_channels
    assert block0.conv1.weight.grad[:, stem:].abs().sum() == 0  # stem width 0.65: later inputs unused
    fc = net.classifier[1]
    last = net.stages[3][0].conv3.active_out_channels
    assert fc.weight.grad[:, :last].abs().sum() > 0 and fc.weight.grad[:, last:].abs().sum() == 0
    assert net.stages[0][1].conv1.weight.grad is None  # depth 1: blocks 1 and 2 never ran


def test_mnist_input_channels_and_input_shape():
    net = resnet.supernet("small", num_classes=10, in_channels=1).eval()
    cfg = net.activate({**net.space.min(), "resolution": 28})
    assert net.input_shape(cfg, batch_size=5) == (5, 1, 28, 28)
    with torch.no_grad():
        assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def _hook_counts(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs counted by forward hooks on every conv and linear layer, and parameters, of a static model."""
    total = [0]

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total[0] += out[0].numel() * (m.in_channels // m.groups) * kh * kw
        else:
            total[0] += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    return total[0], sum(p.numel() for p in model.parameters())


def test_macs_and_params_equal_a_hook_count_and_layer_specs_equal_the_trace(small_net):
    space = small_net.space
    for cfg in (space.max(), space.min(), *space.samples(6, seed=4)):
        cfg = space.canonical(cfg)
        model = small_net.extract(cfg)
        shape = small_net.input_shape(cfg)
        assert (metrics.macs(small_net, cfg), metrics.params(small_net, cfg)) == _hook_counts(model, shape)
        analytic = [s.key for s in small_net.layer_specs(cfg)]
        traced = [s.key for s in Supernet.layer_specs(small_net, cfg)]  # the base class's default: a trace
        assert traced == analytic
    assert 1e6 < metrics.macs(small_net, space.min()) < metrics.macs(small_net, space.max()) < 2e7


def test_imagenet_preset_extracts_equivalently_at_low_resolution(imagenet_net):
    net = imagenet_net
    assert isinstance(net.stem_pool, nn.MaxPool2d) and net.stages[2][5].conv2.max_out_channels == 360
    cfg = {**net.space.min(), "resolution": 128}
    net.activate(cfg)
    model = net.extract(cfg).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-5)
    # ResNet-50 as a subnet (depths 3-4-6-3, expand 0.25, full width): torchvision's 25.6 M parameters and
    # 4.1 G MACs at 224 px, give or take the deep stem (here 25.6 M and 4.2 G).
    r50 = {n: 0.25 if n.endswith(".expand") else v for n, v in net.space.max().items()}
    r50 = net.space.canonical({**r50, "stage1.depth": 3, "stage4.depth": 3, "resolution": 224})
    assert 4.0e9 < metrics.macs(net, r50) < 4.6e9 and 2.4e7 < metrics.params(net, r50) < 2.7e7
    assert metrics.macs(net, net.space.max()) > 7e9 and metrics.macs(net, net.space.min()) < 4e8


def test_sort_channels_keeps_the_max_subnet_and_reorders_the_middle_channels():
    torch.manual_seed(1)
    net = randomize(resnet.supernet("small"), seed=1).eval()
    with torch.no_grad():  # the max subnet's middle channels must differ in importance for a re-sort to show
        for p in net.parameters():
            if p.dim() == 4:
                p.mul_(torch.rand(p.shape[0], 1, 1, 1) + 0.5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    narrow = net.space.canonical({**net.space.max(), "stage2.block0.expand": 0.2})
    with torch.no_grad():
        before_max = net(resize_to(x, net.activate(net.space.max())))
        before_narrow = net(resize_to(x, net.activate(narrow)))
        net.sort_channels()
        after_narrow = net(resize_to(x, net.activate(narrow)))
        after_max = net(resize_to(x, net.activate(net.space.max())))
    torch.testing.assert_close(
        after_max, before_max, rtol=1e-5, atol=1e-5
    )  # only the summation order changed
    assert not torch.allclose(after_narrow, before_narrow, atol=1e-4)  # a narrow subnet keeps other channels
    importance = net.stages[1][0].conv3.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_onnx_and_torchscript_export_compute_the_subnet(small_net, tmp_path):
    import onnxruntime as ort

    cfg = small_net.space.canonical(small_net.space.sample(7))
    out = export(small_net, cfg, tmp_path / "model", formats=("safetensors", "torchscript", "onnx"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["space"] == "resnet-small" and manifest["verification"]["onnx_max_abs_diff"] <= 1e-4
    assert manifest["metrics"]["macs"] == metrics.macs(small_net, cfg)
    model = small_net.extract(cfg).eval()
    x = torch.randn(3, *small_net.input_shape(cfg)[1:])
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x)
        assert abs(session.run(None, {"input": x.numpy()})[0] - expected.numpy()).max() <= 1e-4
        assert torch.equal(load_exported(out)(x), expected)
        scripted = torch.jit.load(str(out / "model.torchscript.pt"))
        torch.testing.assert_close(scripted(x), expected, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def qs_net():
    torch.manual_seed(0)
    net = randomize(resnet.supernet("small", quant=True, sparsity=True))
    net.classifier[0].p = 0.0
    with torch.no_grad():  # calibrate the activation observers of every bit-width in training mode
        for bits in (4, 8):
            cfg = {n: bits if n.endswith(".bits") else v for n, v in net.space.max().items()}
            net.activate(cfg)
            net.train()(torch.randn(8, 3, 32, 32))
    return net.eval()


def test_quant_and_sparsity_dims_extract_equivalently_and_the_weights_follow_the_policy(qs_net):
    space = qs_net.space
    assert space["stage3.block3.bits"].when == {"stage3.depth": (4,)}
    assert set(qs_net.elastic_groups()) == {"resolution", "depth", "width", "quant", "sparsity"}
    x0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    worst, seen_actquant = 0.0, 0
    with torch.no_grad():
        for cfg in space.samples(12, seed=77):
            cfg = qs_net.activate(cfg)
            x = resize_to(x0, cfg)
            model = qs_net.extract(cfg).eval()
            worst = max(worst, (model(x) - qs_net(x)).abs().max().item())
            seen_actquant += sum(isinstance(m, static.ActQuant) for m in model.modules())
    assert seen_actquant > 0 and worst <= 1e-5, worst
    cfg = space.canonical(
        {
            **space.max(),
            "stage1.block0.bits": 4,
            "stage1.block0.sparsity": 0.25,
            "stage1.block1.sparsity": "2:4",
        }
    )
    model = qs_net.extract(cfg)
    block0 = model.stage1[0].residual
    assert isinstance(block0.body.conv1[0], static.ActQuant) and isinstance(
        block0.shortcut[0], static.ActQuant
    )
    w = block0.body.conv2[1].weight
    assert torch.count_nonzero(w) <= round(0.25 * w.numel())
    levels = w / weight_scale(w, 4).view(-1, 1, 1, 1)
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    conv2 = model.stage1[1].residual.body.conv2[0]  # 32-bit: no ActQuant, a 3x3 conv with the 2:4 pattern
    assert torch.all((conv2.weight != 0).reshape(conv2.weight.shape[0], -1, 4).sum(-1) == 2)
    specs = {s.name: s for s in qs_net.layer_specs(cfg)}
    assert (specs["stage1.block0.shortcut"].bits, specs["stage1.block0.conv2"].density) == (4, 0.25)
    assert metrics.model_bytes(qs_net, cfg) < metrics.model_bytes(qs_net, space.max())


def test_sandwich_training_runs_and_changes_the_weights(tmp_path):
    from nas.train import train_supernet

    torch.manual_seed(0)
    net = resnet.supernet("small", num_classes=4, in_channels=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images, labels = torch.randn(24, 1, 28, 28), torch.randint(0, 4, (24,))
    result = train_supernet(
        net, (images, labels), strategy="sandwich", epochs=1, batch_size=8, lr=0.01,
        out_dir=tmp_path / "run", progress=False, n_random=1,
    )  # fmt: skip
    assert result.steps == 3
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(".conv2.weight" in k for k in changed) and "classifier.1.weight" in changed


def test_bad_configs_and_presets_raise_useful_errors(small_net):
    with pytest.raises(nas.InvalidConfigError, match=r"stage1\.block0\.expand.*\[0\.2, 0\.25, 0\.35\]"):
        small_net.activate({**small_net.space.max(), "stage1.block0.expand": 0.3})
    with pytest.raises(nas.InvalidConfigError, match=r"stage2\.width.*\[0\.65, 0\.8, 1\.0\]"):
        small_net.activate({**small_net.space.max(), "stage2.width": 0.5})
    with pytest.raises(ValueError, match=r"unknown resnet preset 'huge'; use one of \['imagenet', 'small'\]"):
        resnet.supernet("huge")
    with pytest.raises(ValueError, match="one entry per stage"):
        resnet.Preset("odd", (32,), 16, 1, False, (32, 64), (1,), (1, 2), 0.0)
    with pytest.raises(ValueError, match="pass projection=True"):
        resnet.ElasticBottleneck(16, 32)
    with pytest.raises(
        ValueError,
        match=r"takes no 'kernel_transform' argument; drop the matching option \(--kernel-transform\)",
    ):
        import search_spaces

        search_spaces.supernet_kwargs("resnet", {"kernel_transform": True})


def test_registry_and_cli_know_the_space(capsys):
    import search_spaces
    from nas import cli

    assert "resnet" in search_spaces.available()
    assert search_spaces.space_by_name("resnet-small-quant") == resnet.space("small", quant=True)
    assert search_spaces.make_space("resnet", preset="imagenet").name == "resnet-imagenet"
    assert cli.main(["spaces"]) == 0 and "resnet" in capsys.readouterr().out
    for name in ("mobilenetv3", "resnet", "vit"):  # the --preset help names every preset of each
        assert name in cli._PRESET_HELP
        assert all(p in cli._PRESET_HELP for p in search_spaces.get(name).PRESETS)


def test_cli_profiles_the_space_and_names_a_bad_preset(tmp_path, capsys):
    from nas.cli import main
    from nas.hw.profiles import Profile

    out = tmp_path / "cpu.csv"
    args = ["profile", "--space", "resnet", "--preset", "small", "--samples", "2", "--repeats", "1"]
    assert main([*args, "--rounds", "1", "--warmup", "0", "--threads", "1", "--out", str(out)]) == 0
    assert Profile.load(out).space == "resnet-small"
    assert main([*args, "--preset", "huge", "--out", str(tmp_path / "other.csv")]) == 2
    assert "unknown resnet preset 'huge'" in capsys.readouterr().err


def test_progressive_shrinking_skips_the_kernel_phase_resnet_does_not_have():
    """Its kernel phase trained the max subnet only (nothing elastic yet): a quarter of the run spent on it."""
    from nas.train.strategies import make_strategy

    s = make_strategy("progressive", resnet.supernet("small"), 100, fractions=(0.1, 0.3, 0.3, 0.3))
    assert s.fractions == pytest.approx((0.1, 0.0, 0.6, 0.3))
    assert [s.phase(i) for i in (0, 9, 10, 69, 70, 99)] == [
        "full",
        "full",
        "depth",
        "depth",
        "width",
        "width",
    ]
    depth_phase = s.tasks(10, np.random.default_rng(0))
    assert depth_phase[1].config["stage3.depth"] == resnet.supernet("small").space["stage3.depth"].values[0]
