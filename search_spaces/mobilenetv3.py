"""Once-for-All MobileNetV3: elastic depth, expand ratio, kernel size and resolution.

Five elastic stages of inverted-residual blocks (depth {2, 3, 4}; per block expand ratio {3, 4, 6} and
depthwise kernel {3, 5, 7}), squeeze-excite and h-swish where MobileNetV3-Large has them, and an input
resolution dimension (Cai et al., "Once-for-All", ICLR 2020).

Presets:
    ``imagenet``: the OFA network (stage widths 24-40-80-112-160, 960/1280 head, 160-224 px).
    ``small``: a thin version for 24-32 px inputs (MNIST, CIFAR) that trains on a laptop CPU
    (widths 16-24-32-48-64, stem stride 2 and stage strides 1-2-2-1-2).
    ``narrow``: ``small`` at half width (8-12-16-24-32, 96/128 head). Small enough that on 5,000 MNIST images
    a subnet's size shows in its accuracy: the min architecture trained alone is ~0.3-0.6 points below 24 px
    architectures of average size, where ``small``'s are within noise of each other (docs/training.md).

Dimension names: ``resolution``, ``stage{s}.depth``, ``stage{s}.block{b}.kernel``, ``stage{s}.block{b}.expand``
(stages 1-5, blocks 0-3). Blocks 2 and 3 are only active when the stage depth reaches them.

Example:
    >>> import torch
    >>> from nas.supernet import resize_to
    >>> net = supernet("small", num_classes=10, in_channels=1).eval()
    >>> cfg = net.activate(net.space.sample(0))
    >>> x = resize_to(torch.randn(2, 1, 28, 28), cfg)
    >>> tuple(net(x).shape)
    (2, 10)
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.ops import ElasticConv2d, ElasticMBConv, ElasticSequential, conv_out_size
from nas.ops.quant import WEIGHT_BITS
from nas.ops.sparse import SPARSITY_LEVELS
from nas.space import Choice, Config, SearchSpace
from nas.static import GlobalAvgPool, Residual, finalize
from nas.supernet import LayerSpec, Supernet

__all__ = ["PRESETS", "MobileNetV3Supernet", "Preset", "space", "supernet"]

DEPTHS = (2, 3, 4)
EXPAND_RATIOS = (3, 4, 6)
KERNELS = (3, 5, 7)


@dataclass(frozen=True)
class Preset:
    """Fixed (non-searchable) structure of a MobileNetV3 supernet."""

    name: str
    resolutions: tuple[int, ...]
    stem_channels: int
    stem_stride: int
    widths: tuple[int, ...]
    strides: tuple[int, ...]
    acts: tuple[str, ...]
    use_se: tuple[bool, ...]
    final_expand: int
    feature_mix: int
    dropout: float
    #: the elastic depths of every stage (block b runs when the depth exceeds b; a stage has max(depths) blocks)
    depths: tuple[int, ...] = DEPTHS
    #: the expand ratios every MBConv block chooses from (its hidden width is the ratio times its input width)
    expand_ratios: tuple[int, ...] = EXPAND_RATIOS
    #: the depthwise kernel sizes every MBConv block chooses from (odd, ascending)
    kernels: tuple[int, ...] = KERNELS


_SMALL = Preset(
    name="small",
    resolutions=(24, 28, 32),
    stem_channels=8,
    stem_stride=2,
    widths=(16, 24, 32, 48, 64),
    strides=(1, 2, 2, 1, 2),
    acts=("relu", "relu", "hswish", "hswish", "hswish"),
    use_se=(False, True, False, True, True),
    final_expand=192,
    feature_mix=256,
    dropout=0.1,
)

PRESETS: dict[str, Preset] = {
    "imagenet": Preset(
        name="imagenet",
        resolutions=(160, 176, 192, 208, 224),
        stem_channels=16,
        stem_stride=2,
        widths=(24, 40, 80, 112, 160),
        strides=(2, 2, 2, 1, 2),
        acts=("relu", "relu", "hswish", "hswish", "hswish"),
        use_se=(False, True, False, True, True),
        final_expand=960,
        feature_mix=1280,
        dropout=0.1,
    ),
    "small": _SMALL,
    # small at half width: small enough that on 5,000 MNIST images a subnet's size shows in its accuracy
    "narrow": dataclasses.replace(
        _SMALL, name="narrow", widths=(8, 12, 16, 24, 32), final_expand=96, feature_mix=128
    ),
}


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown mobilenetv3 preset {preset!r}; use one of {sorted(PRESETS)}") from None


def _block_when(
    block: int, stage_prefix: str, depths: tuple[int, ...] = DEPTHS
) -> dict[str, tuple[int, ...]]:
    """Blocks below the smallest depth always run; block b only when the stage depth exceeds b."""
    if block < depths[0]:
        return {}
    return {f"{stage_prefix}.depth": tuple(d for d in depths if d > block)}


def space(preset: str | Preset = "small", quant: bool = False, sparsity: bool = False) -> SearchSpace:
    """The MobileNetV3 search space of a preset.

    Example:
        >>> s = space("small")
        >>> s.names[:4]
        ('resolution', 'stage1.depth', 'stage1.block0.kernel', 'stage1.block0.expand')
        >>> s.max()["stage1.depth"], s.min()["resolution"]
        (4, 24)
    """
    p = _preset(preset)
    dims = [Choice("resolution", p.resolutions)]
    for s in range(1, len(p.widths) + 1):
        prefix = f"stage{s}"
        dims.append(Choice(f"{prefix}.depth", p.depths))
        for b in range(max(p.depths)):
            when = _block_when(b, prefix, p.depths)
            dims.append(Choice(f"{prefix}.block{b}.kernel", p.kernels, when=when))
            dims.append(Choice(f"{prefix}.block{b}.expand", p.expand_ratios, when=when))
            if quant:
                dims.append(Choice(f"{prefix}.block{b}.bits", WEIGHT_BITS, when=when))
            if sparsity:
                dims.append(Choice(f"{prefix}.block{b}.sparsity", SPARSITY_LEVELS, when=when))
    suffix = ("-quant" if quant else "") + ("-sparse" if sparsity else "")
    return SearchSpace(f"mobilenetv3-{p.name}{suffix}", dims)


class MobileNetV3Supernet(Supernet):
    """The OFA MobileNetV3 weight-sharing supernet (see the module docstring).

    The stem, the first (expand-1) block and the head are fixed plain layers; the five stages are elastic.
    """

    def __init__(
        self,
        preset: str | Preset = "small",
        num_classes: int = 10,
        in_channels: int = 3,
        quant: bool = False,
        sparsity: bool = False,
        kernel_transform: bool = False,
    ):
        p = _preset(preset)
        super().__init__(space(p, quant=quant, sparsity=sparsity))
        self.quant, self.sparsity = bool(quant), bool(sparsity)
        self.kernel_transform = bool(kernel_transform)
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        self.preset = p
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        c = p.stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, stride=p.stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.Hardswish(),
        )
        # MobileNetV3's first block has no expansion: depthwise 3x3 -> BN -> ReLU -> 1x1 -> BN, residual.
        self.first_block = Residual(
            nn.Sequential(
                OrderedDict(
                    depthwise=nn.Sequential(
                        nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU()
                    ),
                    project=nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)),
                )
            )
        )
        stages = []
        c_in = c
        for width, stride, act, se in zip(p.widths, p.strides, p.acts, p.use_se):
            blocks = []
            for b in range(max(p.depths)):
                blocks.append(
                    ElasticMBConv(
                        c_in if b == 0 else width,
                        width,
                        p.expand_ratios,
                        p.kernels,
                        stride=stride if b == 0 else 1,
                        act=act,
                        use_se=se,
                        quant=quant,
                        kernel_transform=kernel_transform,
                    )
                )
            stages.append(ElasticSequential(blocks, p.depths))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.final_expand = nn.Sequential(
            nn.Conv2d(c_in, p.final_expand, 1, bias=False), nn.BatchNorm2d(p.final_expand), nn.Hardswish()
        )
        self.pool = GlobalAvgPool(keepdim=True)
        self.feature_mix = nn.Sequential(
            nn.Conv2d(p.final_expand, p.feature_mix, 1, bias=False), nn.Hardswish()
        )
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(p.feature_mix, num_classes))
        self._init_weights()
        self.activate(self.space.max())

    @torch.no_grad()
    def _init_weights(self) -> None:
        # OFA's initialisation: He-normal (fan-out) convolutions, unit BN, zero biases, small linear weights.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | ElasticConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                m.bias.zero_()
        # Every residual block starts as the identity (zero scale on its last BN; Goyal et al. 2017): a
        # 20-block network then trains like a shallow one at first. On the bundled MNIST the max subnet
        # alone reaches 87% after one epoch this way instead of 56%.
        for m in self.modules():
            if isinstance(m, ElasticMBConv) and m.use_residual:
                m.project_bn.weight.zero_()

    # --------------------------------------------------------------------------------------- activation
    def _set_active(self, cfg: Config) -> None:
        for s, stage in enumerate(self.stages, start=1):
            depth = int(cfg[f"stage{s}.depth"])
            stage.set_active(depth)
            for b in range(depth):
                block, name = stage[b], f"stage{s}.block{b}"
                block.set_active(expand=cfg[f"{name}.expand"], kernel=cfg[f"{name}.kernel"])
                block.set_policy(
                    bits=cfg[f"{name}.bits"] if self.quant else None,
                    sparsity=cfg[f"{name}.sparsity"] if self.sparsity else None,
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = self.feature_mix(self.pool(self.final_expand(x)))
        return self.classifier(self.flatten(x))

    # --------------------------------------------------------------------------------------- subnets
    @torch.no_grad()
    def extract(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A plain ``nn.Sequential`` computing subnet ``cfg``; its ``.architecture`` rebuilds it."""
        import copy

        with self.activated(cfg) as canonical:
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            parts["stem"] = copy.deepcopy(self.stem)
            parts["first_block"] = copy.deepcopy(self.first_block)
            for s, stage in enumerate(self.stages, start=1):
                parts[f"stage{s}"] = nn.Sequential(*(block.to_static() for block in stage.active_blocks()))
            parts["final_expand"] = copy.deepcopy(self.final_expand)
            parts["pool"] = copy.deepcopy(self.pool)
            parts["feature_mix"] = copy.deepcopy(self.feature_mix)
            parts["flatten"] = copy.deepcopy(self.flatten)
            parts["classifier"] = copy.deepcopy(self.classifier)
        model = finalize(nn.Sequential(parts))
        model.train(self.training)
        model.config_json = canonical.to_json()
        return model

    def input_shape(self, cfg: Mapping[str, Any], batch_size: int = 1) -> tuple[int, ...]:
        r = int(self.space.canonical(cfg)["resolution"])
        return (int(batch_size), self.in_channels, r, r)

    def elastic_groups(self) -> dict[str, tuple[str, ...]]:
        names = self.space.names
        groups = {
            "resolution": ("resolution",),
            "depth": tuple(n for n in names if n.endswith(".depth")),
            "kernel": tuple(n for n in names if n.endswith(".kernel")),
            "width": tuple(n for n in names if n.endswith(".expand")),
        }
        if self.quant:
            groups["quant"] = tuple(n for n in names if n.endswith(".bits"))
        if self.sparsity:
            groups["sparsity"] = tuple(n for n in names if n.endswith(".sparsity"))
        return groups

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Re-sort every block's hidden channels by importance (call before building the optimizer)."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()

    def layer_specs(self, cfg: Mapping[str, Any]) -> list[LayerSpec]:
        cfg = self.space.canonical(cfg)
        p = self.preset
        r = int(cfg["resolution"])
        c = p.stem_channels
        h = conv_out_size(r, 3, p.stem_stride)
        specs = [
            LayerSpec("conv", self.in_channels, c, 3, p.stem_stride, 1, r, r, h, h, name="stem.conv"),
            LayerSpec("bn", c, c, in_h=h, in_w=h, out_h=h, out_w=h, name="stem.bn"),
            LayerSpec("act", c, c, in_h=h, in_w=h, out_h=h, out_w=h, act="hswish", name="stem.act"),
            LayerSpec("dwconv", c, c, 3, 1, c, h, h, h, h, name="first_block.depthwise"),
            LayerSpec("bn", c, c, in_h=h, in_w=h, out_h=h, out_w=h, name="first_block.depthwise_bn"),
            LayerSpec(
                "act", c, c, in_h=h, in_w=h, out_h=h, out_w=h, act="relu", name="first_block.depthwise_act"
            ),
            LayerSpec("conv", c, c, 1, 1, 1, h, h, h, h, name="first_block.project"),
            LayerSpec("bn", c, c, in_h=h, in_w=h, out_h=h, out_w=h, name="first_block.project_bn"),
            LayerSpec("add", c, c, in_h=h, in_w=h, out_h=h, out_w=h, name="first_block.add"),
        ]
        size = (h, h)
        for s, stage in enumerate(self.stages, start=1):
            for b in range(int(cfg[f"stage{s}.depth"])):
                name = f"stage{s}.block{b}"
                block_specs, size = stage[b].layer_specs(
                    size,
                    name=name,
                    expand=cfg[f"{name}.expand"],
                    kernel=cfg[f"{name}.kernel"],
                    bits=cfg[f"{name}.bits"] if self.quant else 32,
                    sparsity=cfg[f"{name}.sparsity"] if self.sparsity else 1.0,
                )
                specs += block_specs
        h, w = size
        c, fe, fm = p.widths[-1], p.final_expand, p.feature_mix
        specs += [
            LayerSpec("conv", c, fe, 1, 1, 1, h, w, h, w, name="final_expand.conv"),
            LayerSpec("bn", fe, fe, in_h=h, in_w=w, out_h=h, out_w=w, name="final_expand.bn"),
            LayerSpec("act", fe, fe, in_h=h, in_w=w, out_h=h, out_w=w, act="hswish", name="final_expand.act"),
            LayerSpec("pool", fe, fe, in_h=h, in_w=w, name="pool"),
            LayerSpec("conv", fe, fm, name="feature_mix.conv"),
            LayerSpec("act", fm, fm, act="hswish", name="feature_mix.act"),
            LayerSpec("linear", fm, self.num_classes, bias=True, name="classifier"),
        ]
        return specs


def supernet(
    preset: str | Preset = "small",
    num_classes: int = 10,
    in_channels: int = 3,
    quant: bool = False,
    sparsity: bool = False,
    kernel_transform: bool = False,
) -> MobileNetV3Supernet:
    """Build the MobileNetV3 supernet of a preset (max subnet active).

    ``kernel_transform`` adds Once-for-All's kernel transformation matrices to the elastic depthwise convs
    (see :class:`nas.ops.ElasticConv2d`).

    Example:
        >>> net = supernet("small", num_classes=10, in_channels=1)
        >>> net.input_shape(net.space.min(), batch_size=8)
        (8, 1, 24, 24)
    """
    return MobileNetV3Supernet(
        preset,
        num_classes=num_classes,
        in_channels=in_channels,
        quant=quant,
        sparsity=sparsity,
        kernel_transform=kernel_transform,
    )
