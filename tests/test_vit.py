"""The AutoFormer ViT supernet: space, extraction equivalence, metrics, layer specs, export, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import nas
import search_spaces
from nas import metrics
from nas.ops import ElasticMultiheadSelfAttention, ElasticPatchEmbed
from nas.supernet import Supernet, resize_to
from search_spaces import vit

pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial layer norms, embeddings and projections (the 0.02 initialisation hides differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("ln1.weight", "ln2.weight", "norm.weight")):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.dim() >= 2:
                fan_in = p.shape[-1] if p.dim() == 2 else p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return randomize(vit.supernet("small", num_classes=10, in_channels=3)).eval()


def test_space_dimensions_conditions_and_presets():
    space = vit.space("small")
    assert space.name == "vit-small"
    assert space["resolution"].values == (24, 28, 32)
    assert space["embed_dim"].values == (48, 64, 96)
    assert space["depth"].values == (4, 5, 6)
    assert space["block0.heads"].values == (2, 3, 4) and space["block0.heads"].when == {}
    assert space["block3.mlp_ratio"].values == (3.0, 3.5, 4.0) and space["block3.mlp_ratio"].when == {}
    assert space["block4.heads"].when == {"depth": (5, 6)}
    assert space["block5.mlp_ratio"].when == {"depth": (6,)}
    assert len(space) == 3 + 2 * 6
    # 3 resolutions x 3 widths x (9^4 + 9^5 + 9^6) settings of the active blocks.
    assert space.size == 3 * 3 * (9**4 + 9**5 + 9**6)
    tiny = vit.space("tiny")
    assert tiny["resolution"].values == (224,) and tiny["embed_dim"].values == (192, 216, 240)
    assert tiny["depth"].values == (12, 13, 14) and tiny["block13.heads"].when == {"depth": (14,)}
    assert search_spaces.space_by_name("vit-tiny").names == tiny.names
    assert search_spaces.presets("vit") == ("small", "tiny")
    assert "vit" in search_spaces.available()


def test_blocks_beyond_depth_do_not_change_the_network(small_net):
    cfg = small_net.space.canonical({**small_net.space.max(), "depth": 4})
    other = {**cfg, "block5.heads": 2, "block4.mlp_ratio": 3.0}
    assert small_net.space.canonical(other).key == cfg.key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        small_net.activate(cfg)
        a = small_net(x)
        small_net.activate(other)
        torch.testing.assert_close(small_net(x), a, rtol=0, atol=0)
        small_net.activate({**cfg, "depth": 5})  # the fifth block does change it
        assert (small_net(x) - a).abs().max() > 1e-3


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
    assert worst <= 1e-5, worst


def test_position_embedding_is_resized_for_lower_resolutions(small_net):
    cfg = small_net.space.canonical({**small_net.space.min(), "resolution": 28})
    tokens = small_net.extract(cfg).patch_embed.tokens
    assert tokens.grid == (7, 7) and tuple(tokens.pos_embed.shape) == (1, 50, 48)
    stored = small_net.patch_embed.pos_embed
    assert torch.equal(tokens.pos_embed[0, 0], stored[0, 0, :48])  # the class token's row is kept
    assert not torch.allclose(tokens.pos_embed[0, 1:], stored[0, 1:50, :48])  # the grid rows are resized
    full = small_net.extract({**cfg, "resolution": 32}).patch_embed.tokens
    assert torch.equal(full.pos_embed, stored[:, :, :48])  # the largest grid is the stored embedding


def test_resized_position_embedding_is_cached_without_grad_and_follows_weight_updates(monkeypatch):
    # The supernet resized the position embedding bicubically on every forward below the largest resolution
    # (about 5% of a batch-1 forward of the smallest subnet); without a gradient it is now resized once.
    import torch.nn.functional as F

    torch.manual_seed(4)
    pe = ElasticPatchEmbed(1, 16, patch_size=4, max_grid=8)
    torch.nn.init.normal_(pe.pos_embed)
    pe.set_active(embed_dim=12)
    resizes = []
    interpolate = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda *a, **k: resizes.append(1) or interpolate(*a, **k))
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        first, second = pe(x), pe(x)
    assert len(resizes) == 1 and torch.equal(first, second)
    with torch.no_grad():
        pe.pos_embed.mul_(2.0)  # an optimizer step: the cached copy is stale
        updated = pe(x)
        pe.set_active(embed_dim=16)
        wider = pe(x)
    assert len(resizes) == 3
    pe.set_active(embed_dim=12)
    fresh = pe(x)  # with a gradient: resized again, never from the cache
    assert len(resizes) == 4
    torch.testing.assert_close(updated, fresh.detach(), rtol=0, atol=0)
    pe.set_active(embed_dim=16)
    torch.testing.assert_close(wider, pe(x).detach(), rtol=0, atol=0)
    fresh.sum().backward()  # and the embedding learns
    assert len(resizes) == 5 and pe.pos_embed.grad is not None and pe.pos_embed.grad.abs().sum() > 0


def test_train_mode_and_channels_last_compute_the_same():
    torch.manual_seed(3)
    net = randomize(vit.supernet("small", in_channels=1))
    cfg = net.space.sample(11)
    static_model = net.extract(cfg).train()  # no dropout or batch norm: train mode changes nothing
    net.activate(cfg)
    x = torch.randn(4, *net.input_shape(cfg)[1:])
    expected = net.eval()(x)
    torch.testing.assert_close(net.train()(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(static_model(x), expected, rtol=0, atol=1e-5)
    # What the trainer does with channels_last=True: the patch convolution's weight and input go NHWC.
    net.to(memory_format=torch.channels_last)
    got = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_gradients_reach_only_active_weights():
    net = vit.supernet("small").train()
    cfg = net.activate(net.space.min())  # embed 48, depth 4, 2 heads of 16, MLP ratio 3
    x = torch.randn(2, *net.input_shape(cfg)[1:])
    net(x).sum().backward()
    pe = net.patch_embed
    assert pe.weight.grad[:48].abs().sum() > 0 and pe.weight.grad[48:].abs().sum() == 0
    assert pe.pos_embed.grad[..., :48].abs().sum() > 0 and pe.pos_embed.grad[..., 48:].abs().sum() == 0
    attn = net.blocks[0].attn
    qkv = attn.qkv_weight.grad.view(3, 4, 16, 96)  # q/k/v, head, head width, embed channel
    assert qkv[:, :2, :, :48].abs().sum(dim=(1, 2, 3)).min() > 0  # q, k and v of the active heads
    assert qkv[:, 2:].abs().sum() == 0 and qkv[..., 48:].abs().sum() == 0
    assert attn.proj_weight.grad[:48, :32].abs().sum() > 0
    assert attn.proj_weight.grad[48:].abs().sum() == 0 and attn.proj_weight.grad[:, 32:].abs().sum() == 0
    fc1 = net.blocks[0].fc1.weight.grad
    assert fc1[:144, :48].abs().sum() > 0 and fc1[144:].abs().sum() == 0 and fc1[:, 48:].abs().sum() == 0
    assert net.blocks[4].attn.qkv_weight.grad is None  # depth 4: blocks 4 and 5 never ran
    assert net.head.weight.grad[:, 48:].abs().sum() == 0


def test_macs_and_params_equal_counts_on_the_extracted_model(small_net):
    configs = [small_net.space.max(), small_net.space.min(), *small_net.space.samples(6, seed=7)]
    for cfg in configs:
        model = small_net.extract(cfg).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(small_net.input_shape(cfg)))
        # torch counts 2 FLOPs per multiply-accumulate of every conv, linear and attention matmul.
        assert metrics.macs(small_net, cfg) * 2 == counter.get_total_flops(), cfg
        assert metrics.params(small_net, cfg) == sum(p.numel() for p in model.parameters()), cfg
        assert metrics.model_bytes(small_net, cfg) == 4 * metrics.params(small_net, cfg)
    lo, hi = small_net.space.min(), small_net.space.max()
    assert (metrics.macs(small_net, lo), metrics.params(small_net, lo)) == (3_389_152, 86_746)
    assert (metrics.macs(small_net, hi), metrics.params(small_net, hi)) == (41_879_232, 608_938)


def test_attention_macs_are_projections_plus_two_token_products():
    net = vit.supernet("small")
    cfg = net.space.min()  # 24 px: 6 x 6 patches + class token = 37 tokens; 2 heads of 16
    specs = [s for s in net.layer_specs(cfg) if s.name.startswith("blocks.0.attn")]
    assert [s.kind for s in specs] == ["ln", "linear", "attention", "linear", "add"]
    qkv, core, proj = specs[1], specs[2], specs[3]
    assert qkv.macs == 37 * 48 * 96 and proj.macs == 37 * 32 * 48
    assert core.macs == 2 * 37 * 37 * 32 and core.params == 0 and core.groups == 2


def test_layer_specs_equal_the_trace_of_the_extracted_model(small_net):
    for cfg in (small_net.space.max(), small_net.space.min(), *small_net.space.samples(4, seed=4)):
        analytic = [s.key for s in small_net.layer_specs(cfg)]
        traced = [s.key for s in Supernet.layer_specs(small_net, cfg)]  # the base class's default: a trace
        assert traced == analytic
    kinds = {s.kind for s in small_net.layer_specs(small_net.space.max())}
    assert kinds == {"conv", "tokens", "ln", "linear", "attention", "act", "add"}


def test_latency_table_times_every_vit_layer(small_net):
    from nas.hw.lut import LatencyLUT, layer_module

    cfgs = [small_net.space.min(), small_net.space.sample(3)]
    for spec in {s.key: s for c in cfgs for s in small_net.layer_specs(c)}.values():
        module, shape = layer_module(spec, batch_size=2)
        with torch.inference_mode():
            y = module(torch.randn(shape))
        if spec.kind in ("attention", "ln", "tokens") or (spec.kind == "linear" and spec.in_h > 1):
            assert tuple(y.shape) == (2, spec.out_h, spec.out_channels), spec.key  # (B, tokens, channels)
        else:  # convolution, head, and elementwise layers timed on an equally large (B, C, tokens, 1) map
            assert (
                tuple(y.shape[:2]) == (2, spec.out_channels)
                and y[0].numel() == spec.out_channels * spec.out_h * spec.out_w
            ), spec.key
    lut = LatencyLUT.build(small_net, cfgs, threads=1, warmup=0, repeats=1, rounds=1, progress=False)
    assert lut.predict(small_net, cfgs).shape == (2,) and all(v > 0 for v in lut.table.values())


def test_onnx_export_and_load_exported(small_net, tmp_path):
    import onnxruntime as ort

    cfg = small_net.space.canonical({**small_net.space.sample(5), "resolution": 28})
    out = nas.export(small_net, cfg, tmp_path / "m", formats=("safetensors", "onnx"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["onnx_max_abs_diff"] <= 1e-4
    assert manifest["metrics"]["macs"] == metrics.macs(small_net, cfg)
    x = torch.randn(3, *small_net.input_shape(cfg)[1:])
    small_net.activate(cfg)
    with torch.no_grad():
        expected = small_net(x)
        rebuilt = nas.load_exported(out)
        torch.testing.assert_close(rebuilt(x), expected, rtol=0, atol=1e-5)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected.numpy()).max() <= 1e-4  # batch 3: the batch dimension is dynamic
    ops = {n.op_type for n in __import__("onnx").load(str(out / "model.onnx")).graph.node}
    assert {"MatMul", "Softmax", "Conv"} <= ops and "Attention" not in ops


def test_int8_export_keeps_layer_norms_float_without_warnings(small_net, tmp_path, caplog):
    # onnxruntime's quantizer tried per-channel quantization of every layer norm's 1-D scale and logged
    # "Axis 1 is out-of-range for weight ... with rank 1" once per norm (29 lines for vit tiny) before falling
    # back to per-tensor int8 scales, which its CPU has no integer layer-norm kernel to use.
    import logging

    import onnx

    cfg = small_net.space.min()
    calib = torch.randn(16, *small_net.input_shape(cfg)[1:], generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING):
        out = nas.export(small_net, cfg, tmp_path / "q", formats=("onnx-int8",), calib_data=calib)
    assert not [r for r in caplog.records if "out-of-range" in r.getMessage()]
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert len(norms) == 2 * 4 + 1  # two per block, and the final norm
    assert all(producer.get(name) != "DequantizeLinear" for n in norms for name in n.input[1:])
    ver = json.loads((out / "manifest.json").read_text())["verification"]
    assert ver["int8_cosine_similarity"] > 0.9


def test_sort_channels_keeps_the_max_subnet_and_orders_heads():
    torch.manual_seed(1)
    net = randomize(vit.supernet("small", in_channels=1)).eval()
    cfg = net.activate(net.space.max())
    x = torch.randn(2, *net.input_shape(cfg)[1:])
    with torch.no_grad():
        before = net(x)
        net.sort_channels()
        torch.testing.assert_close(net(x), before, rtol=0, atol=1e-5)
    for block in net.blocks:
        importance = block.attn.head_importance()
        assert torch.all(importance[:-1] >= importance[1:])
        mlp = block.fc2.weight.abs().sum(0)
        assert torch.all(mlp[:-1] >= mlp[1:])


def test_train_supernet_sandwich_and_progressive_run_a_few_steps(tmp_path):
    from nas.train import train_supernet
    from nas.train.trainer import TrainConfig, _make_optimizer

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g)
    net = vit.supernet("small", num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = train_supernet(
        net, (images, labels), strategy="sandwich", epochs=1, batch_size=16, lr=1e-3, out_dir=tmp_path / "s",
        progress=False,
    )  # fmt: skip
    assert result.steps == 3
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert "patch_embed.pos_embed" in changed and "blocks.5.attn.qkv_weight" in changed
    net2 = vit.supernet("small", num_classes=10, in_channels=1)
    result = train_supernet(
        net2, (images, labels), strategy="progressive", epochs=1, batch_size=8, lr=1e-3,
        out_dir=tmp_path / "p", progress=False,
    )  # fmt: skip
    assert result.steps == 6
    # The position embedding and class token are embeddings: not weight-decayed (timm's convention).
    opt = _make_optimizer(TrainConfig(weight_decay=0.1), net)
    decayed = {id(p) for group in opt.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    assert id(net.patch_embed.pos_embed) not in decayed and id(net.blocks[0].attn.qkv_weight) in decayed


def test_bad_configs_presets_and_inputs_raise_useful_errors(small_net):
    with pytest.raises(nas.InvalidConfigError, match=r"block0\.heads.*\[2, 3, 4\]"):
        small_net.activate({**small_net.space.max(), "block0.heads": 5})
    with pytest.raises(ValueError, match=r"unknown vit preset 'huge'; use one of \['small', 'tiny'\]"):
        vit.supernet("huge")
    with pytest.raises(ValueError, match="not multiples of the patch size 4"):
        vit.Preset("odd", (30,), 4, (16,), (1,), (1,), (2.0,), 8)
    with pytest.raises(ValueError, match="num_heads=3 is out of range; use an integer in \\[1, 2\\]"):
        ElasticMultiheadSelfAttention(8, num_heads=2, head_dim=4).set_active(num_heads=3)
    with pytest.raises(ValueError, match=r"30x30 pixels.*multiple of the patch size 4, at most 32"):
        ElasticPatchEmbed(1, 8, 4, 8)(torch.zeros(1, 1, 30, 30))
    with pytest.raises(ValueError, match="no built-in search space is named 'vit-huge'"):
        search_spaces.space_by_name("vit-huge")


def test_projections_start_xavier_uniform_with_q_k_v_each_on_their_own():
    """The original ViT's initialisation: a DeiT-style std 0.02 made the small preset's attention start nearly
    uniform (the max subnet alone: 31% on MNIST after 150 AdamW steps at lr 1e-3, against 62% with this)."""
    import math

    net = vit.supernet("small", num_classes=10, in_channels=1)
    block = net.blocks[0]
    e = block.attn.max_embed_dim
    weights = [*block.attn.qkv_weight.detach().view(3, -1, e), block.attn.proj_weight.detach()]
    weights += [block.fc1.weight.detach(), net.head.weight.detach()]
    for w in weights:
        bound = math.sqrt(6 / sum(w.shape))
        assert 0.95 * bound < float(w.abs().max()) <= bound
        assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.05 * bound
    assert float(block.attn.qkv_bias.detach().abs().max()) == 0.0


def test_int8_export_of_attention_quantizes_only_weight_ops(small_net, tmp_path):
    # Quantizing every op type requantized each residual add, softmax and q k^T / scores @ v product: the
    # int8 ViT took 1.1-1.7x the float time on onnxruntime's CPU kernels, at 25-70x the logit error of int8
    # weight ops with float outputs (0.87-1.2x the float time; see docs/spaces.md).
    import onnx
    from onnx import numpy_helper

    from nas.export import activation_products, export_onnx_int8

    cfg = small_net.space.min()
    model = small_net.extract(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    calib, held_out = (torch.randn(n, *small_net.input_shape(cfg)[1:], generator=gen) for n in (32, 64))
    auto = export_onnx_int8(model, tmp_path / "auto.onnx", calib, eval_inputs=held_out)
    assert auto["int8_quantize"] == "weights"
    graph = onnx.load(str(tmp_path / "auto.onnx")).graph
    producer = {out: n for n in graph.node for out in n.output}
    read_by = {name for n in graph.node if n.op_type == "QuantizeLinear" for name in n.input[:1]}
    int8 = {i.name for i in graph.initializer if numpy_helper.to_array(i).dtype == np.int8}

    def made_by(name: str) -> str | None:
        return producer[name].op_type if name in producer else None

    products = activation_products(onnx.load(str(tmp_path / "auto.onnx")))
    assert len(products) == 2 * 4  # q k^T and scores @ v in each of the min subnet's 4 blocks
    for node in [*products, *(n for n in graph.node if n.op_type == "Softmax")]:
        assert all(made_by(name) != "DequantizeLinear" for name in node.input), (
            node.name
        )  # attention stays float
    weighted = [n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and n not in products]
    assert len(weighted) == 4 * 4 + 2  # qkv, proj, fc1, fc2 per block; patch conv and head
    for node in weighted:
        weight = producer[node.input[1]]
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in int8, node.name
        assert made_by(node.input[0]) == "DequantizeLinear", node.name  # uint8 activations in ...
        assert node.output[0] not in read_by, node.name  # ... float outputs, not requantized
    assert auto["int8_top1_agreement"] >= 0.9 and auto["int8_cosine_similarity"] > 0.999
    everything = export_onnx_int8(model, tmp_path / "all.onnx", calib, eval_inputs=held_out, quantize="all")
    assert everything["int8_quantize"] == "all"
    assert 1 - auto["int8_cosine_similarity"] < (1 - everything["int8_cosine_similarity"]) / 4


class _TokenMixer(nn.Module):
    """Patches -> tokens -> one attention-like mix (``einsum`` products, as a user might write them) -> logits."""

    def __init__(self, einsum: bool):
        super().__init__()
        self.embed, self.qk, self.head, self.einsum = (
            nn.Conv2d(3, 8, 4, 4),
            nn.Linear(8, 16),
            nn.Linear(8, 10),
            einsum,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        q, k = self.qk(tokens).chunk(2, dim=-1)
        if self.einsum:
            scores = torch.einsum("bnc,bmc->bnm", q, k).softmax(-1)
            tokens = torch.einsum("bnm,bmc->bnc", scores, tokens)
        else:
            tokens = (q @ k.transpose(1, 2)).softmax(-1) @ tokens
        return self.head(tokens.mean(1))


class _SoftmaxClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean((2, 3))).softmax(-1)  # probabilities, not attention


@pytest.mark.parametrize(
    ("model", "expected"),
    [(_TokenMixer(einsum=False), True), (_TokenMixer(einsum=True), True), (_SoftmaxClassifier(), False)],
    ids=["matmul", "einsum", "softmax-classifier"],
)
def test_has_attention_finds_products_of_two_activations(model, expected, tmp_path):
    import onnx

    from nas.export import _write_onnx, has_attention

    _write_onnx(model.eval(), torch.randn(2, 3, 16, 16), tmp_path / "m.onnx")
    assert has_attention(onnx.load(str(tmp_path / "m.onnx"))) is expected


def test_int8_export_names_unknown_quantize_choices(small_net, tmp_path):
    from nas.export import export_onnx_int8

    model = small_net.extract(small_net.space.min()).eval()
    with pytest.raises(ValueError, match="quantize='weight' is not one of auto, all, weights"):
        export_onnx_int8(model, tmp_path / "m.onnx", torch.randn(2, 3, 24, 24), quantize="weight")


def test_an_int8_profile_records_how_its_graphs_were_quantized_and_is_not_mixed(small_net, tmp_path):
    """A vit int8 profile measured when every op type was quantized must not be extended with latencies of the
    weight-ops-only graphs nas exports now (they run 0.6-0.9x as long): the choice is recorded and checked."""
    from nas.hw import cli_hooks
    from nas.hw.profiles import Profile

    out = tmp_path / "vit-int8.csv"
    settings = {"repeats": 1, "rounds": 1, "warmup": 0, "progress": False, "verbose": False}
    first = cli_hooks.run_profile(small_net, "onnxruntime", 1, out, precision="int8", threads=1, **settings)
    assert first.metadata["int8_quantize"] == "weights"
    extended = cli_hooks.run_profile(
        small_net, "onnxruntime", 2, out, precision="int8", threads=1, **settings
    )
    assert len(extended) == 2 and extended.metadata["int8_quantize"] == "weights"
    old = Profile.load(out)  # as a profile of an earlier nas left it: no record, every op type quantized
    del old.metadata["int8_quantize"]
    old.save(out)
    with pytest.raises(
        ValueError,
        match=r"quantized as 'all' \(every op type.*now quantizes this space's graphs as 'weights'",
    ):
        cli_hooks.run_profile(small_net, "onnxruntime", 3, out, precision="int8", threads=1, **settings)
    assert len(Profile.load(out)) == 2
