"""Elastic layers compute exactly what their static slices compute; static descriptions round-trip."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from nas import static
from nas.ops import (
    ElasticBatchNorm2d,
    ElasticConv2d,
    ElasticLayerNorm,
    ElasticLinear,
    ElasticMBConv,
    ElasticMultiheadSelfAttention,
    ElasticPatchEmbed,
    ElasticSequential,
    ElasticTransformerBlock,
    make_divisible,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("c_in,c_out,k", [(8, 16, 7), (5, 3, 5), (8, 16, 3), (1, 1, 3)])
def test_conv_matches_static_slice(c_in, c_out, k):
    conv = ElasticConv2d(8, 16, kernel_sizes=(3, 5, 7), stride=2, bias=True)
    conv.set_active(out_channels=c_out, kernel=k)
    x = torch.randn(2, c_in, 9, 9)
    static_conv = conv.to_static(c_in)
    assert isinstance(static_conv, nn.Conv2d) and static_conv.kernel_size == (k, k)
    start = (7 - k) // 2
    torch.testing.assert_close(
        static_conv.weight, conv.weight[:c_out, :c_in, start : start + k, start : start + k]
    )
    torch.testing.assert_close(conv(x), static_conv(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_on_channels_last_cpu_input_computes_like_conv2d(size, bias):
    # On CPU a 1x1 convolution of channels-last input runs as a matrix product (faster than oneDNN's
    # backward pass at small maps); values, gradients and the output layout must not change.
    conv = ElasticConv2d(12, 16, kernel_sizes=1, bias=bias)
    conv.set_active(out_channels=10)
    x = torch.randn(3, 9, size, size).to(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == (3, 10, size, size)
    weight = conv.weight[:10, :9]
    reference = F.conv2d(x, weight, conv.bias[:10] if bias else None)
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight), grad)
    want = torch.autograd.grad(reference, (x, conv.weight), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if size > 1:  # NCHW memory keeps the convolution itself
        plain = x.detach().contiguous()
        assert torch.equal(conv(plain), F.conv2d(plain, weight, conv.bias[:10] if bias else None))


def test_depthwise_conv_follows_input_channels():
    dw = ElasticConv2d(32, 32, kernel_sizes=(3, 5, 7), depthwise=True)
    dw.set_active(kernel=5)
    x = torch.randn(2, 20, 8, 8)
    y = dw(x)
    assert y.shape == (2, 20, 8, 8)
    static_dw = dw.to_static(20)
    assert static_dw.groups == 20 and static_dw.weight.shape == (20, 1, 5, 5)
    torch.testing.assert_close(y, static_dw(x), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="output channels follow"):
        dw.set_active(out_channels=4)


def test_conv_rejects_bad_settings_with_allowed_values():
    conv = ElasticConv2d(8, 16, kernel_sizes=(3, 5))
    with pytest.raises(ValueError, match=r"kernel=7 is not allowed; use one of \(3, 5\)"):
        conv.set_active(kernel=7)
    with pytest.raises(ValueError, match=r"out_channels=17 .*\[1, 16\]"):
        conv.set_active(out_channels=17)
    with pytest.raises(ValueError, match="in_channels=9"):
        conv(torch.randn(1, 9, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        ElasticConv2d(4, 4, kernel_sizes=(2,))


def test_elastic_layers_refuse_sizes_they_would_cut_or_could_not_copy():
    # A width computed as 0.35 * 24 = 8.4 was cut to 8 without a word (int()); the user's extract then built a
    # layer of another width than the one the space said.
    conv = ElasticConv2d(8, 16, kernel_sizes=3)
    with pytest.raises(ValueError, match=r"out_channels=8.39+ is not a whole number; round it"):
        conv.set_active(out_channels=0.35 * 24)
    conv.set_active(out_channels=12.0)  # a whole float is fine
    assert conv.active_out_channels == 12
    # to_static with more inputs than the layer has: torch's "size of tensor a (10) must match ..." before.
    with pytest.raises(
        ValueError, match=r"ElasticLinear: in_features=10 is out of range; use an integer in \[1, 8\]"
    ):
        ElasticLinear(8, 4).to_static(10)
    # A batch norm without affine parameters or running statistics has no tensor to take the device from.
    plain = ElasticBatchNorm2d(8, affine=False, track_running_stats=False).to_static(4)
    assert plain.num_features == 4 and not plain.affine and not plain.track_running_stats


def test_slice_cache_follows_weight_updates_and_keeps_gradients():
    conv = ElasticConv2d(4, 8, kernel_sizes=(3, 5))
    conv.set_active(out_channels=6, kernel=3)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        before = conv(x)
        again = conv(x)
        assert torch.equal(before, again)
        conv.weight.mul_(2.0)  # an in-place update (as by an optimizer) must invalidate the cache
        after = conv(x)
    torch.testing.assert_close(after, 2 * before)
    # With autograd on, gradients reach exactly the active slice of the max-size weight.
    conv.zero_grad()
    conv(x).sum().backward()
    grad = conv.weight.grad
    assert grad[:6, :, 1:4, 1:4].abs().sum() > 0
    assert grad[6:].abs().sum() == 0 and grad[:, :, 0].abs().sum() == 0


def test_slice_cache_follows_fused_optimizer_steps():
    # Fused optimizers write the parameters without bumping their version counters (torch 2.13).
    conv = ElasticConv2d(8, 8, kernel_sizes=(3, 5))
    conv.set_active(out_channels=6, kernel=3)
    fc = ElasticLinear(8, 8)
    fc.set_active(out_features=5)
    x, features = torch.randn(1, 8, 5, 5), torch.randn(2, 6)
    opt = torch.optim.Adam([*conv.parameters(), *fc.parameters()], lr=0.5, fused=True)
    with torch.no_grad():  # fills the caches
        conv(x), fc(features)
    (conv(x).square().sum() + fc(features).square().sum()).backward()
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight[:6, :, 1:4, 1:4], padding=1))
        torch.testing.assert_close(fc(features), F.linear(features, fc.weight[:5, :6], fc.bias[:5]))


def test_dtype_and_device_conversions_empty_the_slice_caches():
    # .half().float() swaps the weight tensors without bumping their versions; the new fp32 tensor often lands
    # at the freed address of the old one (7 of 20 times measured), where a kept cache entry would match.
    conv = ElasticConv2d(8, 8, kernel_sizes=(3, 5))
    conv.set_active(out_channels=6, kernel=3)
    attn = ElasticMultiheadSelfAttention(8, num_heads=2, head_dim=4)
    embed = ElasticPatchEmbed(1, 8, patch_size=2, max_grid=4)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        conv(x), attn(torch.randn(1, 3, 8)), embed(torch.randn(1, 1, 6, 6))
    for layer in (conv, attn, embed):
        layer.half().float()
    assert conv._cache.value is None and attn._cache.value is None and embed._pos_cache.value is None
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight[:6, :, 1:4, 1:4], padding=1))


def test_slice_cache_is_not_used_while_a_kernel_transform_records_gradients():
    # A frozen max-size weight with trainable kernel transforms: the slice carries the transform's graph
    # (a matmul that saves its inputs), so a cached copy would be backpropagated through a second time.
    conv = ElasticConv2d(4, 4, kernel_sizes=(3, 5), kernel_transform=True)
    conv.weight.requires_grad_(False)
    conv.set_active(kernel=3)
    x = torch.randn(1, 4, 5, 5)
    conv(x).sum().backward()
    once = conv.kernel_transforms["k3"].grad.clone()
    conv(x).sum().backward()  # the second step of gradient accumulation
    torch.testing.assert_close(conv.kernel_transforms["k3"].grad, 2 * once)


def test_batchnorm_eval_uses_first_running_stats_and_train_updates_them():
    bn = ElasticBatchNorm2d(16)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    x = torch.randn(4, 10, 5, 5)
    static_bn = bn.to_static(10).eval()
    torch.testing.assert_close(bn.eval()(x), static_bn(x), rtol=0, atol=1e-6)
    # Train mode: batch statistics, and only the first 10 running statistics move.
    bn.train()
    static_bn.train()
    untouched = bn.running_mean[10:].clone()
    torch.testing.assert_close(bn(x), static_bn(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_mean[:10], static_bn.running_mean)
    assert torch.equal(bn.running_mean[10:], untouched)
    with pytest.raises(ValueError, match="exceed"):
        bn(torch.randn(2, 17, 2, 2))


def test_batchnorm_cumulative_momentum_matches_torch():
    bn, ref = ElasticBatchNorm2d(6, momentum=None), nn.BatchNorm2d(6, momentum=None)
    for _ in range(3):
        x = torch.randn(8, 6, 3, 3)
        bn(x), ref(x)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 3


def test_linear_and_layernorm_match_static():
    fc = ElasticLinear(64, 10)
    fc.set_active(out_features=7)
    x = torch.randn(3, 40)
    torch.testing.assert_close(fc(x), fc.to_static(40)(x), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(fc(x), fc.to_static(40)(x), rtol=0, atol=1e-6)  # cached path
    ln = ElasticLayerNorm(32)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.normal_()
    t = torch.randn(2, 5, 20)
    torch.testing.assert_close(ln(t), ln.to_static(20)(t), rtol=0, atol=1e-6)


def test_elastic_sequential_runs_first_blocks():
    stage = ElasticSequential([nn.Linear(4, 4) for _ in range(4)], depths=(2, 3, 4))
    stage.set_active(3)
    x = torch.randn(2, 4)
    expected = stage[2](stage[1](stage[0](x)))
    torch.testing.assert_close(stage(x), expected)
    with pytest.raises(ValueError, match=r"depth=1 is not allowed"):
        stage.set_active(1)


@pytest.mark.parametrize("use_se,stride", [(True, 1), (False, 2)])
def test_mbconv_block_matches_static_in_eval_and_train(use_se, stride):
    block = ElasticMBConv(16, 16, (3, 4, 6), (3, 5, 7), stride=stride, act="hswish", use_se=use_se)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(3, 16, 9, 9)
    for expand, kernel in [(3, 3), (4, 5), (6, 7)]:
        block.set_active(expand=expand, kernel=kernel)
        static_block = block.to_static()
        assert isinstance(static_block, static.Residual) == (stride == 1)
        block.eval(), static_block.eval()
        torch.testing.assert_close(block(x), static_block(x), rtol=0, atol=1e-5)
        block.train(), static_block.train()
        torch.testing.assert_close(block(x), static_block(x), rtol=0, atol=1e-5)


def test_mbconv_sort_channels_keeps_function_and_orders_importance():
    block = ElasticMBConv(8, 8, (3, 6), (3, 5), use_se=True).eval()
    x = torch.randn(2, 8, 6, 6)
    before = block(x)
    block.sort_channels()
    torch.testing.assert_close(block(x), before, rtol=0, atol=1e-5)
    importance = block.project.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_make_divisible():
    assert make_divisible(16 * 3) == 48
    assert make_divisible(10) == 16  # never more than 10% below the value
    assert make_divisible(3) == 8


def test_static_describe_build_round_trip():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.Hardswish(),
        static.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU())),
        static.SqueezeExcite(8, 8),
        static.GlobalAvgPool(keepdim=False),
        nn.Dropout(0.2),
        nn.Linear(8, 4),
    ).eval()
    arch = static.describe(model)
    rebuilt = static.build(arch).eval()
    assert rebuilt.architecture == arch
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), rebuilt(x))
    assert str(rebuilt) == str(model)


def test_static_describes_the_pooling_and_activations_a_traced_supernet_may_use():
    # trace_layer_specs (MACs, lookup tables) and the LUT accept these, so export must too.
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.SiLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d((2, 2), stride=1, count_include_pad=False),
        nn.Sigmoid(),
        nn.LeakyReLU(0.1),
        nn.ELU(0.5),
        nn.Mish(),
        nn.Dropout2d(0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    arch = json.loads(json.dumps(static.describe(model)))  # as the manifest stores it
    rebuilt = static.build(arch).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model(x), rebuilt(x))
    assert str(rebuilt) == str(model)


def test_static_errors_name_the_problem():
    with pytest.raises(TypeError, match="no codec for LSTM"):
        static.describe(nn.LSTM(2, 2))
    with pytest.raises(TypeError, match=r"no codec for LSTM \(at root\.1\.body\).*nas\.static\.register"):
        static.describe(nn.Sequential(nn.ReLU(), static.Residual(nn.LSTM(2, 2))))
    with pytest.raises(ValueError, match="unknown type 'Bogus'"):
        static.build({"type": "Sequential", "args": {}, "children": [["0", {"type": "Bogus"}]]})
    with pytest.raises(ValueError, match=r"root\.0 \(Conv2d\)"):
        static.build(
            {"type": "Sequential", "args": {}, "children": [["0", {"type": "Conv2d", "args": {"x": 1}}]]}
        )


def test_batchnorm_inference_fast_path_sees_updates_and_replacements():
    bn = ElasticBatchNorm2d(8).eval()
    x = torch.randn(2, 6, 3, 3)
    with torch.no_grad():
        first = bn(x)
        bn.running_mean.add_(1.0)  # in place: the cached views must see it
        torch.testing.assert_close(bn(x), bn.to_static(6).eval()(x), rtol=0, atol=1e-6)
        assert not torch.allclose(bn(x), first)
        bn.running_var = torch.full((8,), 4.0)  # replaced tensor: the cache must miss
        torch.testing.assert_close(bn(x), bn.to_static(6).eval()(x), rtol=0, atol=1e-6)
    # With autograd on, the slow path keeps gradients flowing to the affine parameters.
    bn(x).sum().backward()
    assert bn.weight.grad is not None and bn.weight.grad[6:].abs().sum() == 0


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 12),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    size=st.integers(1, 7),
    depthwise=st.booleans(),
    bits=st.sampled_from([4, 8, 32]),
)
def test_any_conv_setting_equals_its_static_copy(c_in, c_out, kernel, stride, size, depthwise, bits):
    conv = ElasticConv2d(8, 12, kernel_sizes=(1, 3, 5), stride=stride, depthwise=depthwise, bias=True)
    conv.set_active(out_channels=None if depthwise else c_out, kernel=kernel)
    conv.set_policy(bits=bits)
    x = torch.randn(2, c_in, size, size)
    with torch.no_grad():
        expected = conv.to_static(c_in)(x)
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)  # cached slice
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-6)  # autograd path


def test_copies_start_with_empty_caches():
    import copy
    import pickle

    conv = ElasticConv2d(4, 8, kernel_sizes=(3,))
    bn = ElasticBatchNorm2d(8).eval()
    with torch.no_grad():
        bn(conv(torch.randn(1, 4, 5, 5)))
    assert conv._cache.value is not None and bn._eval_views
    for clone in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
        assert clone._cache.value is None
        assert torch.equal(clone.weight, conv.weight)
    assert not copy.deepcopy(bn)._eval_views


def _randomized_attention(embed_dim: int, heads: int, head_dim: int) -> ElasticMultiheadSelfAttention:
    attn = ElasticMultiheadSelfAttention(embed_dim, heads, head_dim)
    with torch.no_grad():
        attn.qkv_bias.normal_()
        attn.proj_bias.normal_()
    return attn


@pytest.mark.parametrize("heads,embed", [(4, 32), (2, 24), (1, 8), (3, 32)])
def test_attention_matches_torch_multihead_attention_on_its_slice(heads, embed):
    # An independent reference: torch's attention on the same weights (inner width = embed width here, the
    # one case nn.MultiheadAttention can express).
    head_dim = 8
    attn = _randomized_attention(32, 4, head_dim)
    attn.set_active(num_heads=heads)
    qkv_w, qkv_b, proj_w, proj_b = attn.active_weights(embed)
    x = torch.randn(2, 6, embed)
    got = attn(x)
    assert tuple(qkv_w.shape) == (3 * heads * head_dim, embed)
    # q rows of the active heads are the first rows of the stored q block, and likewise k and v.
    torch.testing.assert_close(
        qkv_w[heads * head_dim : 2 * heads * head_dim], attn.qkv_weight[32 : 32 + heads * 8, :embed]
    )
    if heads * head_dim == embed:
        ref = nn.MultiheadAttention(embed, heads, batch_first=True)
        with torch.no_grad():
            ref.in_proj_weight.copy_(qkv_w)
            ref.in_proj_bias.copy_(qkv_b)
            ref.out_proj.weight.copy_(proj_w)
            ref.out_proj.bias.copy_(proj_b)
        expected = ref(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    static_attn = attn.to_static(embed)
    assert type(static_attn) is static.SelfAttention
    torch.testing.assert_close(static_attn(x), got, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), got, rtol=0, atol=1e-6)  # the cached slices


def test_attention_with_fewer_heads_ignores_the_other_heads_and_channels():
    attn = _randomized_attention(16, 3, 4)
    attn.set_active(num_heads=2)
    x = torch.randn(1, 5, 12)
    before = attn(x)
    with torch.no_grad():
        q_k_v = attn.qkv_weight.view(3, 3, 4, 16)
        q_k_v[:, 2].normal_()  # the third head
        q_k_v[..., 12:].normal_()  # input channels beyond the active 12
        attn.proj_weight[12:].normal_()
        attn.proj_weight[:, 8:].normal_()
    torch.testing.assert_close(attn(x), before, rtol=0, atol=0)
    with torch.no_grad():
        q_k_v[1, 1, 0, 0] += 1.0  # a key weight of an active head
    assert not torch.allclose(attn(x), before)


def test_attention_sort_heads_keeps_the_function_and_moves_whole_heads():
    attn = _randomized_attention(16, 4, 4)
    x = torch.randn(2, 5, 16)
    before = attn(x).detach()
    order = attn.sort_heads()
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(attn(x), before, rtol=0, atol=1e-5)
    importance = attn.head_importance()
    assert torch.all(importance[:-1] >= importance[1:])


def test_transformer_block_and_patch_embed_match_static():
    block = ElasticTransformerBlock(32, num_heads=4, head_dim=8, mlp_ratios=(3, 3.5, 4))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    block.set_active(embed_dim=24, num_heads=3, mlp_ratio=3.5)
    x = torch.randn(2, 7, 24)
    torch.testing.assert_close(block.to_static()(x), block(x), rtol=0, atol=1e-5)
    assert block.to_static().mlp.body.fc1.out_features == 84
    with pytest.raises(ValueError, match="input has 32 channels but the active embed_dim is 24"):
        block(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match=r"mlp_ratio=5 is not allowed; use one of \(3.0, 3.5, 4.0\)"):
        block.set_active(mlp_ratio=5)
    pe = ElasticPatchEmbed(2, 16, patch_size=2, max_grid=4)
    with torch.no_grad():
        pe.pos_embed.normal_()
        pe.cls_token.normal_()
    pe.set_active(embed_dim=12)
    for size in (8, 6, 4):
        img = torch.randn(2, 2, size, size)
        torch.testing.assert_close(pe.to_static(size)(img), pe(img), rtol=0, atol=1e-6)


def test_static_transformer_modules_round_trip():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 2, stride=2),
        static.PatchTokens(8, 2, 2, class_token=True),
        static.Residual(nn.Sequential(nn.LayerNorm(8), static.SelfAttention(8, 3, 4))),
        static.TakeToken(0),
        nn.Linear(8, 3),
    ).eval()
    with torch.no_grad():
        model[1].pos_embed.normal_()
        model[1].cls_token.normal_()
    arch = json.loads(json.dumps(static.describe(model)))
    rebuilt = static.build(arch).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(model(x), rebuilt(x))
    assert str(rebuilt) == str(model)
