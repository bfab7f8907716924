"""Quantization and sparsity as searchable dimensions: ops, extraction, metrics and int8 export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import nas
from nas import metrics, semi_structured, static
from nas.export import export, load_exported
from nas.ops import ElasticConv2d
from nas.ops.quant import ElasticActQuant, act_qparams, fake_quant_weight, weight_scale
from nas.ops.sparse import parse_sparsity, sparsity_mask
from nas.supernet import resize_to
from search_spaces import mobilenetv3

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- quantization
def test_32_bit_is_identity_and_error_falls_with_bits():
    w = torch.randn(16, 8, 3, 3)
    assert fake_quant_weight(w, 32) is w
    err4 = (fake_quant_weight(w, 4) - w).abs().mean()
    err8 = (fake_quant_weight(w, 8) - w).abs().mean()
    assert 0 < err8 < err4


@pytest.mark.parametrize("bits", [4, 8])
def test_weights_land_on_a_symmetric_per_channel_grid(bits):
    w = torch.randn(6, 4, 3, 3) * torch.arange(1, 7).view(-1, 1, 1, 1)  # channels of different ranges
    q = fake_quant_weight(w, bits)
    levels = q / weight_scale(w, bits).view(-1, 1, 1, 1)
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert levels.abs().max().round() == 2 ** (bits - 1) - 1
    with pytest.raises(ValueError, match=r"bits=6 is not supported; use one of \(4, 8, 32\)"):
        fake_quant_weight(w, 6)


def test_straight_through_gradient():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    fake_quant_weight(w, 4).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones_like(w))


def _reference_fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per output channel: scale = max|w| / (2**(bits-1) - 1) in float32, ``w * (1 / scale)`` in float32,
    rounded half to even, clamped to the symmetric range; an all-zero channel stays zero."""
    qmax = 2 ** (bits - 1) - 1
    shape = (-1,) + (1,) * (w.dim() - 1)
    scale = (w.abs().flatten(1).amax(1) / qmax).clamp_min(1e-12).view(shape)
    levels = torch.from_numpy(np.rint((w * (1.0 / scale)).numpy())).clamp(-qmax, qmax)
    return levels * scale


@pytest.mark.parametrize("bits", [4, 8])
def test_fake_quant_weight_equals_a_hand_written_reference(bits):
    g = torch.Generator().manual_seed(bits)
    for shape in [(8, 4, 3, 3), (16, 1, 7, 7), (5, 12), (32, 24, 1, 1)]:
        w = torch.randn(shape, generator=g) * torch.rand(shape[0], generator=g).view(
            -1, *[1] * (len(shape) - 1)
        )
        w[0] = 0.0  # an all-zero channel: scale clamped, no NaN
        assert torch.equal(fake_quant_weight(w, bits), _reference_fake_quant(w, bits))
    # Rounding is half to even (torch's kernel and ONNX Round): with scale 1, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2.
    qmax = 2 ** (bits - 1) - 1
    halves = torch.tensor([[qmax, 0.5, 1.5, 2.5, -2.5, 3.5]])
    assert fake_quant_weight(halves, bits).tolist() == [[qmax, 0.0, 2.0, 2.0, -2.0, 4.0]]


def test_act_qparams_match_torch_minmax_observer():
    """Same zero point as torch.ao's uint8 MinMaxObserver; the scale is (hi - lo) / 255 rounded once to
    float32, which torch's float32 subtraction then division misses by one ulp at most."""
    from torch.ao.quantization import MinMaxObserver

    g = torch.Generator().manual_seed(0)
    for i in range(200):
        lo, hi = (torch.randn(2, generator=g) * 10 ** (i % 5 - 2)).sort().values.tolist()
        lo, hi = (abs(lo), abs(hi)) if i % 3 == 0 else (lo, hi)  # ranges that do not include 0 too
        observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        observer(torch.tensor([lo, hi]))
        scale, zero_point = observer.calculate_qparams()
        ours = act_qparams(min(lo, hi), max(lo, hi))
        assert ours[1] == int(zero_point)
        assert ours[0] == pytest.approx(float(scale), rel=2**-23)


def test_activation_observers_are_per_bit_width():
    aq = ElasticActQuant()
    x = torch.randn(8, 4, 5, 5)
    aq.eval().set_active(8)
    assert torch.equal(aq(x), x)  # uncalibrated: float
    aq.train()
    aq(x)  # observes for 8-bit weights only
    assert aq.observed.tolist() == [False, True]
    aq.set_active(4)
    aq(3 * x)
    lo, hi = aq.min_val.tolist(), aq.max_val.tolist()
    assert hi[0] == pytest.approx(3 * x.max().item()) and hi[1] == pytest.approx(x.max().item())
    assert lo[0] < lo[1]
    aq.eval()
    y = aq(x)
    scale, zero = aq.qparams()
    levels = y / scale + zero
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)
    assert levels.min() >= 0 and levels.max() <= 255
    assert isinstance(aq.to_static(), static.ActQuant)
    aq.set_active(32)
    assert aq(x) is x and isinstance(aq.to_static(), nn.Identity)


def test_activation_qparams_follow_ranges_loaded_after_the_buffers_were_replaced():
    """``.to(device)`` replaces the observer buffers by new tensors whose version counters restart at 0; a
    ``load_state_dict`` afterwards brings the counters back to the ones the cached qparams were taken at."""

    def state(lo: float, hi: float) -> dict[str, torch.Tensor]:
        return {
            "min_val": torch.full((2,), lo),
            "max_val": torch.full((2,), hi),
            "observed": torch.ones(2, dtype=torch.bool),
        }

    aq = ElasticActQuant().eval()
    aq.set_active(8)
    aq.load_state_dict(state(-1.0, 1.0))
    assert aq.qparams() == act_qparams(-1.0, 1.0)
    aq._apply(torch.clone)  # what .to(other_device) does to every buffer
    aq.load_state_dict(state(-10.0, 30.0))
    assert aq.qparams() == act_qparams(-10.0, 30.0)
    assert aq(torch.tensor([20.0])).item() == pytest.approx(20.0, abs=aq.qparams()[0])


# ------------------------------------------------------------------------------------------- sparsity
@pytest.mark.parametrize("density", [0.5, 0.25])
def test_unstructured_masks_have_the_exact_density_and_keep_the_largest(density):
    w = torch.randn(24, 16, 3, 3)
    mask = sparsity_mask(w, density)
    assert int(mask.sum()) == round(density * w.numel())
    kept, dropped = w.abs()[mask.bool()], w.abs()[~mask.bool()]
    assert kept.min() >= dropped.max()


def test_n_m_masks_keep_exactly_n_per_group_of_each_output_channel():
    w = torch.randn(12, 32, 1, 1)
    mask = sparsity_mask(w, "2:4")
    groups = mask.reshape(12, 8, 4)
    assert torch.all(groups.sum(-1) == 2)
    # The kept two are the two largest of each group.
    mags = w.abs().reshape(12, 8, 4)
    kept_min = torch.where(groups.bool(), mags, torch.inf).amin(-1)
    dropped_max = torch.where(groups.bool(), -torch.inf, mags).amax(-1)
    assert torch.all(kept_min >= dropped_max)
    assert parse_sparsity("2:4") == (0.5, (2, 4))
    with pytest.raises(ValueError, match="not divisible by 4"):
        sparsity_mask(torch.randn(3, 1, 3, 3), "2:4")
    for bad in (0.0, 1.5, "4:2", "dense"):
        with pytest.raises(ValueError, match="sparsity"):
            parse_sparsity(bad)


def test_masked_quantized_conv_passes_gradients_to_kept_weights_and_masks_follow_updates():
    conv = ElasticConv2d(16, 8, 1)
    conv.set_policy(bits=8, sparsity="2:4")
    x = torch.randn(2, 16, 4, 4)
    conv(x).sum().backward()
    mask = sparsity_mask(conv.weight.detach(), "2:4").bool()
    assert torch.all(conv.weight.grad[~mask] == 0) and torch.all(conv.weight.grad[mask] != 0)
    with torch.no_grad():
        before = conv.active_weight(16).clone()
        assert torch.count_nonzero(before) == before.numel() // 2
        conv.weight.neg_().add_(torch.randn_like(conv.weight))  # new weights: the cached mask must follow
        after = conv.active_weight(16)
    assert torch.equal(after != 0, sparsity_mask(conv.weight, "2:4").bool())
    assert not torch.equal(after != 0, before != 0)


@pytest.mark.parametrize("depthwise", [False, True])
def test_conv_weight_is_the_transformed_crop_of_the_slice_then_masked_then_quantized(depthwise):
    """The order of the weight policy on a kernel-transform conv, against a hand-written pipeline: channel
    slice, centre crops each followed by their transform, the mask of that (not a slice of a masked max
    kernel), per-channel quantization; the cached (no grad), autograd and static paths all agree."""
    conv = ElasticConv2d(16, 16, kernel_sizes=(3, 5, 7), depthwise=depthwise, kernel_transform=True)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in conv.kernel_transforms.values():
            t.add_(torch.randn(t.shape, generator=g) * 0.3)

    def reference(c_in: int, c_out: int, k: int, bits: int, sparsity: float | str) -> torch.Tensor:
        w = conv.weight.detach()[:c_out, : 1 if depthwise else c_in]
        for size in (5, 3)[: (7 - k) // 2]:
            start = (w.shape[-1] - size) // 2
            w = w[:, :, start : start + size, start : start + size]
            w = (w.reshape(*w.shape[:2], -1) @ conv.kernel_transforms[f"k{size}"].detach()).reshape(w.shape)
        w = w * sparsity_mask(w, sparsity)
        return fake_quant_weight(w, bits)

    x = torch.randn(2, 16, 9, 9, generator=g)
    for c_in, c_out in ((16, 16), (12, 4)):
        c_out = c_in if depthwise else c_out
        for k in (3, 5, 7):
            conv.set_active(out_channels=None if depthwise else c_out, kernel=k)
            for bits in (4, 8, 32):
                for sparsity in (1.0, 0.5, 0.25) + (() if depthwise else ("2:4",)):
                    conv.set_policy(bits=bits, sparsity=sparsity)
                    expected = reference(c_in, c_out, k, bits, sparsity)
                    with torch.no_grad():
                        torch.testing.assert_close(conv.active_weight(c_in), expected, rtol=0, atol=1e-6)
                        cached = conv(x[:, :c_in])
                        assert torch.equal(conv.to_static(c_in).weight, conv.active_weight(c_in))
                    assert torch.equal(conv(x[:, :c_in]).detach(), cached)
    conv.set_active(kernel=7, out_channels=None if depthwise else 8)
    conv.set_policy(bits=32, sparsity=0.25)
    sliced_mask = conv.active_weight(8) != 0
    mask_of_max = sparsity_mask(conv.weight, 0.25)[:8, : 1 if depthwise else 8].bool()
    assert not torch.equal(sliced_mask, mask_of_max)  # the two orders differ: the slice's own mask is used


# ------------------------------------------------------------------------------------------- supernet
@pytest.fixture(scope="module")
def qs_net():
    torch.manual_seed(1)
    net = mobilenetv3.supernet("small", quant=True, sparsity=True)
    net.train()  # calibrate every observer with a few sampled subnets
    with torch.no_grad():
        for i in range(40):
            cfg = net.activate(net.space.sample(1000 + i))
            net(torch.randn(8, 3, cfg["resolution"], cfg["resolution"]))
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
        net.classifier[1].weight.normal_(0, 0.1)
    return net.eval()


def test_space_has_per_block_quant_and_sparsity_dims(qs_net):
    space = qs_net.space
    assert space["stage1.block0.bits"].values == (4, 8, 32)
    assert space["stage3.block1.sparsity"].values == (0.25, 0.5, "2:4", 1.0)
    assert space["stage2.block3.bits"].when == {"stage2.depth": (4,)}
    groups = qs_net.elastic_groups()
    assert len(groups["quant"]) == len(groups["sparsity"]) == 20
    cfg = space.canonical({**space.max(), "stage1.depth": 2, "stage1.block3.bits": 8})
    assert cfg["stage1.block3.bits"] == 4  # inactive: canonical value, same key as any other choice
    assert nas.Config.from_json(cfg.to_json()) == cfg


def test_extraction_equivalence_with_quant_and_sparsity_50_configs(qs_net):
    x0 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    worst = 0.0
    seen_actquant = 0
    with torch.no_grad():
        for cfg in qs_net.space.samples(50, seed=77):
            cfg = qs_net.activate(cfg)
            x = resize_to(x0, cfg)
            expected = qs_net(x)
            model = qs_net.extract(cfg).eval()
            worst = max(worst, (model(x) - expected).abs().max().item())
            seen_actquant += sum(isinstance(m, static.ActQuant) for m in model.modules())
    assert seen_actquant > 0
    assert worst <= 1e-5, worst


def test_extracted_weights_follow_the_policy(qs_net):
    space = qs_net.space
    cfg = dict(space.max())
    cfg.update({"stage1.block0.bits": 4, "stage1.block0.sparsity": 0.25, "stage1.block1.sparsity": "2:4"})
    cfg = space.canonical(cfg)
    model = qs_net.extract(cfg)
    block0, block1 = model.stage1[0], model.stage1[1].body
    expand = block0.expand[1]  # [ActQuant, Conv2d, BN, act]
    assert isinstance(block0.expand[0], static.ActQuant)
    w = expand.weight
    assert torch.count_nonzero(w) <= round(0.25 * w.numel())
    levels = w / weight_scale(w, 4).view(-1, 1, 1, 1)
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    project = block1.project[0]  # 32-bit: no ActQuant, plain conv with the 2:4 pattern
    groups = (project.weight != 0).reshape(project.weight.shape[0], -1, 4).sum(-1)
    assert torch.all(groups == 2)


def test_model_bytes_counts_bits_and_sparse_storage(qs_net):
    space = qs_net.space
    dense = space.max()
    int8 = space.canonical({**dense, **{n: 8 for n in qs_net.elastic_groups()["quant"]}})
    sparse = space.canonical({**dense, **{n: 0.25 for n in qs_net.elastic_groups()["sparsity"]}})
    assert metrics.model_bytes(qs_net, dense) == 4 * metrics.params(qs_net, dense)
    # 8-bit weights save 3 bytes per weight of each block conv and add a float32 scale per output channel.
    quantized = [s for s in qs_net.layer_specs(int8) if s.bits == 8]
    assert {s.kind for s in quantized} == {"conv", "dwconv"}
    saved = sum(3 * s.weight_count - 4 * s.out_channels for s in quantized)
    assert metrics.model_bytes(qs_net, dense) - metrics.model_bytes(qs_net, int8) == saved
    assert metrics.model_bytes(qs_net, sparse) < metrics.model_bytes(qs_net, dense)
    # One 1x1 conv block spec by hand: 8-bit, 2:4 -> kept * 8 bits + 2-bit positions + per-channel scales.
    spec = next(
        s
        for s in qs_net.layer_specs(
            space.canonical({**dense, "stage1.block0.sparsity": "2:4", "stage1.block0.bits": 8})
        )
        if s.name == "stage1.block0.expand"
    )
    assert (spec.bits, spec.density, spec.pattern) == (8, 0.5, "2:4")


def test_quantized_sparse_subnets_metrics_equal_counts_on_the_extracted_model(qs_net):
    """MACs = FlopCounterMode / 2, params = numel, specs = the trace, and model_bytes recounted from the weights."""
    import dataclasses

    from torch.utils.flop_counter import FlopCounterMode

    from nas.supernet import trace_layer_specs

    def shape_key(s):  # the trace reads float weights: no bit-width or sparsity
        return dataclasses.replace(s, bits=32, density=1.0, pattern="", name="").key

    seen = set()
    for cfg in qs_net.space.samples(4, seed=5):
        cfg = qs_net.space.canonical(cfg)
        model, shape = qs_net.extract(cfg).eval(), qs_net.input_shape(cfg)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(shape))
        assert 2 * metrics.macs(qs_net, cfg) == counter.get_total_flops()
        assert metrics.params(qs_net, cfg) == sum(p.numel() for p in model.parameters())
        specs, traced = qs_net.layer_specs(cfg), trace_layer_specs(model, shape)
        assert [shape_key(s) for s in specs] == [shape_key(t) for t in traced]
        modules, bits = dict(model.named_modules()), 0
        for spec, t in zip(specs, traced):
            bits += 32 * spec.bias_count
            if not spec.weight_count:
                continue
            m = modules[t.name]
            weights = [m.reduce.weight, m.expand.weight] if spec.kind == "se" else [m.weight]
            kept = round(spec.weight_count * spec.density)
            assert sum(int(torch.count_nonzero(w)) for w in weights) <= kept, spec.key
            seen.add((spec.bits, spec.pattern or spec.density))
            bits += kept * spec.bits  # kept values at their bit-width, a float32 scale per output channel
            bits += 32 * spec.out_channels if spec.bits < 32 else 0
            if spec.density < 1.0:  # a bitmap of all weights, or 2 bits of position per kept N:M value
                bits += 2 * kept if spec.pattern else spec.weight_count
        assert metrics.model_bytes(qs_net, cfg) == (bits + 7) // 8
    assert {(4, 0.5), (4, 1.0), (8, "2:4"), (32, 0.25)} <= seen  # 4-bit, 50 %, N:M and float sparse all met


def test_int8_export_runs_in_onnxruntime_and_reloads(qs_net, tmp_path):
    import onnx

    space = qs_net.space
    cfg = space.canonical(
        {**space.max(), **{n: 8 for n in qs_net.elastic_groups()["quant"]}, "stage2.block0.sparsity": "2:4"}
    )
    calib = torch.randn(32, 3, 32, 32)
    out = export(qs_net, cfg, tmp_path / "q", formats=("safetensors", "onnx", "onnx-int8"), calib_data=calib)
    manifest = json.loads((out / "manifest.json").read_text())
    ver = manifest["verification"]
    assert ver["int8_samples"] == 32 and 0.0 <= ver["int8_top1_agreement"] <= 1.0
    assert ver["int8_cosine_similarity"] > 0.9
    assert ver["onnx_max_abs_diff"] <= 1e-3
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert ver["int8_quantize"] == "all"  # no attention: every op type, as tuned for the conv spaces
    # h-swish stages and SE pooling were rewritten, so no QLinearMul-per-h-swish / ReduceMean remains.
    rewrites = ver["int8_graph_rewrites"]
    assert rewrites["HardSwish"] > 0 and rewrites["GlobalAveragePool"] > 0
    assert "GlobalAveragePool" in ops and "ReduceMean" not in ops
    # ... and h-swish / SE gates between quantizers run as integer Add / Mul (QLinearAdd / QLinearMul).
    assert rewrites["IntegerHardSwish"] > 0 and rewrites["IntegerHardSigmoid"] > 0
    assert ops.isdisjoint({"HardSigmoid"})
    density = manifest["measured_density"]  # the 2:4 1x1 convs of stage2.block0 keep exactly half
    assert density["stage2.0.expand.1"] == density["stage2.0.project.1"] == 0.5
    loaded = load_exported(out)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), qs_net.extract(cfg).eval()(x))


def test_float_onnx_of_a_quantized_subnet_gives_the_torch_outputs_in_onnxruntime(tmp_path):
    """The fp32 ONNX export of a quantized subnet is the fake-quant model, as onnxruntime runs it by default.

    Its activation fake-quantizers used to be exported as QuantizeLinear/DequantizeLinear, and onnxruntime's
    default optimisations turned ``DQ -> Conv(float weights) -> Q`` into an integer convolution with weights
    quantized its own way: here logits off by 0.03 at a scale of 0.35 (the manifest recorded the
    difference, nothing checked it).
    """
    import onnxruntime as ort

    from nas.evaluation import recalibrate_bn

    torch.manual_seed(0)
    net = mobilenetv3.supernet("small", num_classes=10, in_channels=1, quant=True).eval()
    space = net.space
    cfg = space.canonical({**space.min(), **{n: 4 for n in net.elastic_groups()["quant"]}})
    net.activate(cfg)
    recalibrate_bn(net, torch.randn(64, 1, 24, 24), cfg, batches=1, batch_size=64)  # BN and observers
    out = export(net, cfg, tmp_path / "q4", formats=("safetensors", "onnx"))
    x = torch.randn(4, *net.input_shape(cfg)[1:], generator=torch.Generator().manual_seed(3))
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = net.extract(cfg).eval()(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert abs(got - expected).max() <= 1e-3  # (a float rounding tie may flip one quantization step)
    assert json.loads((out / "manifest.json").read_text())["verification"]["onnx_max_abs_diff"] <= 1e-3


def test_act_quant_as_onnx_arithmetic_is_bit_exact():
    q = static.ActQuant(0.05540864169597626, 139)
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)) * 5
    x[:200] = (torch.arange(200.0) - 100 + 0.5) * torch.tensor(q.scale)  # exact rounding ties
    assert torch.equal(q._explicit(x), q(x))


def test_fuse_for_int8_rewrites_hswish_and_se_pooling_without_changing_outputs():
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from nas.export import fuse_for_int8

    nodes = [
        helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["hs", "x"], ["h"]),  # h-swish, operands in either order
        helper.make_node("ReduceMean", ["h"], ["s"], axes=[2, 3], keepdims=1),
        helper.make_node("HardSigmoid", ["s"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h", "gate"], ["y0"]),  # SE gating: another operand, must stay
        helper.make_node("HardSigmoid", ["y0"], ["g2"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["y0", "g2"], ["y1"]),  # not h-swish (alpha 0.2): must stay
        helper.make_node("ReduceMean", ["y1"], ["y"], axes=[1], keepdims=1),  # not spatial: must stay
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fuse_for_int8(fused) == {"HardSwish": 1, "GlobalAveragePool": 1}
    onnx.checker.check_model(fused)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("HardSwish") == 1 and ops.count("HardSigmoid") == 2 and ops.count("ReduceMean") == 1
    x = np.random.default_rng(0).normal(0, 4, (2, 4, 5, 5)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]

    np.testing.assert_allclose(run(fused), run(model), rtol=1e-5, atol=1e-6)


def _qdq_activation_graph(op: str, out_scale: float, out_zero: int, **attrs):
    """``x -> Q -> DQ -> op -> Q(out_scale, out_zero) -> DQ -> y`` with uint8 activations."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.asarray(0.05, np.float32), "s"),
        numpy_helper.from_array(np.asarray(100, np.uint8), "z"),
        numpy_helper.from_array(np.asarray(out_scale, np.float32), "so"),
        numpy_helper.from_array(np.asarray(out_zero, np.uint8), "zo"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node(op, ["xd"], ["a"], name="act", **attrs),
        helper.make_node("QuantizeLinear", ["a", "so", "zo"], ["aq"]),
        helper.make_node("DequantizeLinear", ["aq", "so", "zo"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(
    ("op", "attrs", "out_scale", "out_zero", "rewritten"),
    [
        ("HardSwish", {}, 0.04, 20, True),
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, 1 / 255, 0, True),
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, 0.9 / 255, 0, True),  # range inside [0, 1]: exact
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, 1.2 / 255, 0, False),  # saturates past 1: must stay
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, 1 / 255, 3, False),  # range starts below 0: must stay
        ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, 1 / 255, 0, False),  # not a hard-sigmoid of h-swish
    ],
)
def test_integer_hard_activations_run_as_integer_ops_with_the_same_outputs(
    op, attrs, out_scale, out_zero, rewritten
):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from nas.export import integer_hard_activations

    model = _qdq_activation_graph(op, out_scale, out_zero, **attrs)
    rewritten_model = onnx.ModelProto()
    rewritten_model.CopyFrom(model)
    counts = integer_hard_activations(rewritten_model)
    assert sum(counts.values()) == int(rewritten)
    onnx.checker.check_model(rewritten_model)
    ops = [n.op_type for n in rewritten_model.graph.node]
    assert (op in ops) != rewritten
    # Every representable input: the whole uint8 grid of x (scale 0.05, zero point 100), twice over.
    x = ((np.arange(512) % 256 - 100) * 0.05).astype(np.float32).reshape(2, 4, 8, 8)

    def run(m, optimized=None):
        options = ort.SessionOptions()
        if optimized:
            options.optimized_model_filepath = optimized
        session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    expected = run(model)
    got = run(rewritten_model)
    steps = np.abs(got - expected) / out_scale
    if op == "HardSigmoid":  # saturation clips where min/max did: equal but for how exact ties round
        assert steps.max() < 1.001 and (steps > 0.5).mean() < 0.05
    else:  # the 8-bit gate adds rounding: within one output step, rarely off at all
        assert steps.max() < 1.001 and (steps > 0.5).mean() < 0.1


def test_integer_hard_activations_fuse_to_qlinear_ops_in_onnxruntime(tmp_path):
    import onnx
    import onnxruntime as ort

    from nas.export import integer_hard_activations

    model = _qdq_activation_graph("HardSwish", 0.04, 20)
    integer_hard_activations(model)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert {"QLinearAdd", "QLinearMul"} <= ops and not ops & {"HardSwish", "HardSigmoid", "Mul", "Add"}


@pytest.mark.parametrize(
    ("size", "stride", "quantized", "kernel_after"),
    [
        (2, 1, False, [3, 3]),  # 7x7 pad 3 on 2x2: only the central 3x3 taps read pixels
        (4, 2, False, [6, 6]),  # stride 2 on 4x4: the first row / column of taps only reads padding
        (2, 1, True, [3, 3]),  # QDQ: the int8 weights are cut, their per-channel scales kept
        (16, 1, False, [7, 7]),  # every tap reads a pixel somewhere: unchanged
    ],
)
def test_crop_dead_taps_computes_the_same_function(size, stride, quantized, kernel_after):
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nas.export import crop_dead_taps

    rng = np.random.default_rng(0)
    c = 16
    w = rng.normal(size=(c, 1, 7, 7)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.normal(size=c).astype(np.float32), "b")]
    nodes = []
    if quantized:
        scale = np.abs(w).reshape(c, -1).max(1) / 127
        inits += [
            numpy_helper.from_array(np.round(w / scale.reshape(-1, 1, 1, 1)).astype(np.int8), "wq"),
            numpy_helper.from_array(scale.astype(np.float32), "ws"),
            numpy_helper.from_array(np.zeros(c, np.int8), "wz"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    nodes.append(
        helper.make_node("Conv", ["x", "w", "b"], ["y"], group=c, pads=[3, 3, 3, 3], strides=[stride] * 2)
    )
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c, size // stride, size // stride])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    assert crop_dead_taps(cut) == int(kernel_after != [7, 7])
    onnx.checker.check_model(cut)
    weight = next(i for i in cut.graph.initializer if i.name == ("wq" if quantized else "w"))
    assert list(weight.dims[2:]) == kernel_after
    x = rng.normal(size=(3, c, size, size)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]

    expected, got = run(model), run(cut)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- 2:4 on GPUs
def test_2to4_masks_are_what_the_semi_structured_format_stores():
    """A 2:4 mask of a linear / 1x1 conv weight survives torch's CUTLASS compression (the CPU reference
    conversion) unchanged: its groups are the format's groups of 4 consecutive inputs of an output row."""
    conversions = pytest.importorskip("torch.sparse._semi_structured_conversions")
    g = torch.Generator().manual_seed(4)
    for rows, cols in [(32, 64), (64, 32), (128, 128)]:
        w = torch.randn(rows, cols, 1, 1, generator=g)
        sparse = (w * sparsity_mask(w, "2:4")).reshape(rows, cols).half()
        assert semi_structured.is_2to4(sparse)
        packed, meta = conversions.sparse_semi_structured_from_dense_cutlass(sparse)
        assert torch.equal(conversions.sparse_semi_structured_to_dense_cutlass(packed, meta), sparse)
        assert not semi_structured.is_2to4(sparse.t())  # the other axis would not be 2:4


def _two_four_model(qs_net):
    space = qs_net.space
    cfg = space.canonical({**space.max(), "stage2.block0.sparsity": "2:4", "stage4.block1.sparsity": "2:4"})
    return qs_net.extract(cfg).eval()


def test_2to4_layers_are_found_and_run_as_sparse_linears(qs_net):
    from nas import semi_structured

    model = _two_four_model(qs_net)
    eligible = [name for name, _ in semi_structured.eligible_layers(model)]
    # the pointwise expand / project convs of the two 2:4 blocks; their depthwise convs are not matmuls
    assert eligible and all(n.startswith(("stage2.0.", "stage4.1.")) for n in eligible)
    assert {n.split(".")[-2] for n in eligible} == {"expand", "project"}
    # With a dense stand-in for torch's compression the rewired model computes the same function.
    fast, report = semi_structured.to_semi_structured(
        model, dtype=torch.bfloat16, device="cpu", convert=lambda w: w.clone()
    )
    assert set(report) == set(eligible)
    converted = [n for n in eligible if report[n] == "2:4"]
    # stage 2 projects 96 -> 24 channels: 24 rows are no multiple of the kernels' 16, so it stays dense
    assert report["stage2.0.project.0"] == "dense: weight 24x96 is not a multiple of 16x16"
    assert converted and all(
        isinstance(fast.get_submodule(n), semi_structured.SemiStructuredLinear) for n in converted
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = model.to(torch.bfloat16)(x.bfloat16()).float()
        torch.testing.assert_close(fast(x.bfloat16()).float(), dense, rtol=0, atol=0)
    assert not semi_structured.is_2to4(torch.ones(4, 8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown without a GPU")
def test_2to4_conversion_without_gpu_says_what_it_needs(qs_net):
    from nas import semi_structured

    with pytest.raises(RuntimeError, match=r"compute capability 8\.0"):
        semi_structured.to_semi_structured(_two_four_model(qs_net))


def test_export_manifest_lists_2to4_layers(qs_net, tmp_path):
    from nas import semi_structured

    space = qs_net.space
    cfg = space.canonical({**space.max(), "stage2.block0.sparsity": "2:4"})
    out = export(qs_net, cfg, tmp_path / "s", formats=("safetensors",))
    entry = json.loads((out / "manifest.json").read_text())["verification"]["semi_structured_2to4"]
    assert entry["eligible"] == ["stage2.0.expand.0", "stage2.0.project.0"]  # 32-bit: no ActQuant first
    assert entry["cuda"] == semi_structured.cuda_supports_2to4()
    if entry["cuda"]:  # timed eagerly and as CUDA graphs, dense and 2:4
        assert set(entry["latency_ms"]) == {"dense", "2:4"} and min(entry["latency_ms"].values()) > 0
        assert isinstance(entry["cuda_graph_latency_ms"], dict), entry["cuda_graph_latency_ms"]
    dense = export(qs_net, space.max(), tmp_path / "d", formats=("safetensors",))
    assert "semi_structured_2to4" not in json.loads((dense / "manifest.json").read_text())["verification"]


@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8),
    reason="needs an NVIDIA GPU with sparse tensor cores (compute capability 8.0+)",
)
def test_2to4_layers_run_on_sparse_tensor_cores(qs_net):
    from torch.sparse import SparseSemiStructuredTensor

    from nas import semi_structured

    model = _two_four_model(qs_net)
    fast, report = semi_structured.to_semi_structured(model)
    converted = [n for n, how in report.items() if how == "2:4"]
    assert converted
    assert all(isinstance(fast.get_submodule(n).weight, SparseSemiStructuredTensor) for n in converted)
    x = torch.randn(4, 3, 32, 32, device="cuda", dtype=torch.float16)
    dense = model.to(device="cuda", dtype=torch.float16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), dense(x), rtol=2e-2, atol=2e-2)
        # replayed as a CUDA graph (what makes 2:4 pay off): the same outputs, for new inputs too
        graphed = semi_structured.CudaGraph(fast, x)
        x2 = torch.randn_like(x)
        torch.testing.assert_close(graphed(x2), fast(x2), rtol=1e-3, atol=1e-3)
        assert semi_structured.latency_ms(graphed, x2) > 0
        with pytest.raises(ValueError, match="captured for inputs of shape"):
            graphed(x[:2])
