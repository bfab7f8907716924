"""Once-for-All ResNet: elastic depth, expand ratio, width and resolution.

A deep stem (two 3x3 convs, ResNet's 3x3 max pool in ``imagenet``) and four stages of bottleneck residual
blocks (Cai et al., "Once-for-All", ICLR 2020; ``ofa/imagenet_classification/elastic_nn/networks/ofa_resnets.py``):

* depth: each stage runs its base depth plus 0, 1 or 2 blocks; the blocks beyond are skipped;
* expand ratio: each block's middle (bottleneck) width is ``round(out * e)`` for ``e`` in {0.2, 0.25, 0.35},
  made divisible by 8 (ResNet-50's bottleneck is 0.25);
* width: a multiplier in {0.65, 0.8, 1.0} for the stem and for each stage (channels made divisible by 8);
* resolution of the input.

The first block of every stage has a projection shortcut, a strided 1x1 conv + BN (torchvision's option B;
OFA puts a 2x2 average pool before the conv, a layer kind that per-layer latency tables cannot time): its
input width is set by the stem's or the previous stage's multiplier and its output width by its own. The other
blocks add their input unchanged.

Presets:
    ``imagenet``: ResNet-50-like (stem 64, stage widths 256-512-1024-2048 at multiplier 1, base depths
    2-2-4-2 as OFA, so 4-4-6-4 blocks at most; strides 1-2-2-2 after a stride-2 stem and max pool; 128-224 px).
    ``small``: a thin version for 24-32 px inputs (MNIST, CIFAR) that trains on a laptop CPU (stem 48, stage
    widths 64-96-128-160, base depths 1-1-2-1; stride-2 stem, no max pool, strides 1-2-2-2).

At thin widths two multipliers or expand ratios can round to the same channel count (``small``: the expand
ratios of a 64-wide stage give 16, 16 and 24 middle channels); such configs name the same network under two
keys, as in OFA.

Dimension names: ``resolution``, ``stem.width``, ``stage{s}.depth``, ``stage{s}.width``,
``stage{s}.block{b}.expand`` (stages 1-4), plus ``stage{s}.block{b}.bits`` / ``.sparsity`` with ``quant`` /
``sparsity``. A block's dimensions only matter when the stage depth reaches it.

Example:
    >>> import torch
    >>> from nas.supernet import resize_to
    >>> net = supernet("small", num_classes=10, in_channels=1).eval()
    >>> cfg = net.activate(net.space.sample(0))
    >>> x = resize_to(torch.randn(2, 1, 28, 28), cfg)
    >>> tuple(net(x).shape)
    (2, 10)
    >>> bool((net.extract(cfg).eval()(x) - net(x)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nas.ops import (
    ElasticBatchNorm2d,
    ElasticBottleneck,
    ElasticConv2d,
    ElasticLinear,
    ElasticSequential,
    conv_out_size,
    make_divisible,
)
from nas.ops.quant import WEIGHT_BITS
from nas.ops.sparse import SPARSITY_LEVELS
from nas.space import Choice, Config, SearchSpace
from nas.static import GlobalAvgPool, finalize
from nas.supernet import LayerSpec, Supernet

__all__ = ["PRESETS", "Preset", "ResNetSupernet", "channels", "space", "supernet"]

DEPTH_OFFSETS = (0, 1, 2)  # blocks a stage may run beyond its base depth
EXPAND_RATIOS = (0.2, 0.25, 0.35)
WIDTH_MULTIPLIERS = (0.65, 0.8, 1.0)
DIVISOR = 8


@dataclass(frozen=True)
class Preset:
    """Fixed (non-searchable) structure of a ResNet supernet; channel counts are at width multiplier 1."""

    name: str
    resolutions: tuple[int, ...]
    stem_channels: int
    stem_stride: int
    stem_pool: bool  # ResNet's 3x3 stride-2 max pool after the stem
    widths: tuple[int, ...]
    base_depths: tuple[int, ...]
    strides: tuple[int, ...]
    dropout: float

    def __post_init__(self) -> None:
        if not len(self.widths) == len(self.base_depths) == len(self.strides) >= 1:
            raise ValueError(
                f"resnet preset {self.name!r}: widths {self.widths}, base_depths {self.base_depths} and strides "
                f"{self.strides} need one entry per stage each"
            )
        if min(self.base_depths) < 1:
            raise ValueError(f"resnet preset {self.name!r}: base_depths {self.base_depths} must be >= 1")


PRESETS: dict[str, Preset] = {
    "imagenet": Preset(
        name="imagenet",
        resolutions=(128, 144, 160, 176, 192, 208, 224),
        stem_channels=64,
        stem_stride=2,
        stem_pool=True,
        widths=(256, 512, 1024, 2048),
        base_depths=(2, 2, 4, 2),
        strides=(1, 2, 2, 2),
        dropout=0.1,
    ),
    "small": Preset(
        name="small",
        resolutions=(24, 28, 32),
        stem_channels=48,
        stem_stride=2,
        stem_pool=False,
        widths=(64, 96, 128, 160),
        base_depths=(1, 1, 2, 1),
        strides=(1, 2, 2, 2),
        dropout=0.1,
    ),
}


def _preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown resnet preset {preset!r}; use one of {sorted(PRESETS)}") from None


def channels(base: int, multiplier: float) -> int:
    """Channels of a layer ``base`` wide at multiplier 1 (OFA's rule: ``make_divisible(base * m, 8)``).

    Example:
        >>> [channels(256, m) for m in WIDTH_MULTIPLIERS]
        [168, 208, 256]
    """
    return make_divisible(base * multiplier, DIVISOR)


def _stem_mid(stem: int) -> int:
    """Channels between the two stem convs: half the stem's (OFA's ``mid_input_channel``)."""
    return make_divisible(stem // 2, DIVISOR)


def _depths(base: int) -> tuple[int, ...]:
    return tuple(base + d for d in DEPTH_OFFSETS)


def _block_when(block: int, base: int, stage_prefix: str) -> dict[str, tuple[int, ...]]:
    """Blocks below the base depth always run; block b >= base only when the stage depth exceeds b."""
    if block < base:
        return {}
    return {f"{stage_prefix}.depth": tuple(d for d in _depths(base) if d > block)}


def space(preset: str | Preset = "small", quant: bool = False, sparsity: bool = False) -> SearchSpace:
    """The ResNet search space of a preset.

    Example:
        >>> s = space("small")
        >>> s.names[:5]
        ('resolution', 'stem.width', 'stage1.depth', 'stage1.width', 'stage1.block0.expand')
        >>> s["stage3.depth"].values, s["stage3.block3.expand"].when
        ((2, 3, 4), {'stage3.depth': (4,)})
        >>> space("imagenet").max()["stage3.depth"], space("imagenet").min()["resolution"]
        (6, 128)
    """
    p = _preset(preset)
    dims = [Choice("resolution", p.resolutions), Choice("stem.width", WIDTH_MULTIPLIERS)]
    for s, base in enumerate(p.base_depths, start=1):
        prefix = f"stage{s}"
        dims.append(Choice(f"{prefix}.depth", _depths(base)))
        dims.append(Choice(f"{prefix}.width", WIDTH_MULTIPLIERS))
        for b in range(_depths(base)[-1]):
            when = _block_when(b, base, prefix)
            dims.append(Choice(f"{prefix}.block{b}.expand", EXPAND_RATIOS, when=when))
            if quant:
                dims.append(Choice(f"{prefix}.block{b}.bits", WEIGHT_BITS, when=when))
            if sparsity:
                dims.append(Choice(f"{prefix}.block{b}.sparsity", SPARSITY_LEVELS, when=when))
    suffix = ("-quant" if quant else "") + ("-sparse" if sparsity else "")
    return SearchSpace(f"resnet-{p.name}{suffix}", dims)


class ResNetSupernet(Supernet):
    """The OFA ResNet weight-sharing supernet (see the module docstring).

    The stem convs and the classifier are elastic in width only; every stage is an
    :class:`nas.ops.ElasticSequential` of :class:`nas.ops.ElasticBottleneck` blocks.
    """

    def __init__(
        self,
        preset: str | Preset = "small",
        num_classes: int = 10,
        in_channels: int = 3,
        quant: bool = False,
        sparsity: bool = False,
    ):
        p = _preset(preset)
        super().__init__(space(p, quant=quant, sparsity=sparsity))
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        self.quant, self.sparsity = bool(quant), bool(sparsity)
        self.preset = p
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        c, mid = p.stem_channels, _stem_mid(p.stem_channels)
        self.stem = nn.Sequential(
            ElasticConv2d(in_channels, mid, 3, stride=p.stem_stride),
            ElasticBatchNorm2d(mid),
            nn.ReLU(),
            ElasticConv2d(mid, c, 3),
            ElasticBatchNorm2d(c),
            nn.ReLU(),
        )
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1) if p.stem_pool else None
        stages = []
        c_in = c
        for width, base, stride in zip(p.widths, p.base_depths, p.strides):
            blocks = [
                ElasticBottleneck(
                    c_in if b == 0 else width,
                    width,
                    EXPAND_RATIOS,
                    stride=stride if b == 0 else 1,
                    projection=b == 0,
                    divisor=DIVISOR,
                    quant=quant,
                )
                for b in range(_depths(base)[-1])
            ]
            stages.append(ElasticSequential(blocks, _depths(base)))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.pool = GlobalAvgPool(keepdim=False)
        self.classifier = nn.Sequential(nn.Dropout(p.dropout), ElasticLinear(c_in, num_classes))
        self._init_weights()
        self.activate(self.space.max())

    @torch.no_grad()
    def _init_weights(self) -> None:
        # OFA's initialisation: He-normal (fan-out) convolutions, unit BN, zero biases, small linear weights.
        for m in self.modules():
            if isinstance(m, ElasticConv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, ElasticLinear):
                nn.init.normal_(m.weight, 0, 0.01)
                m.bias.zero_()
        # Every bottleneck starts as its shortcut (zero scale on its last BN; Goyal et al. 2017), so a deep
        # subnet trains like a shallow one at first, as in mobilenetv3.
        for m in self.modules():
            if isinstance(m, ElasticBottleneck):
                m.bn3.weight.zero_()

    # --------------------------------------------------------------------------------------- activation
    def _widths(self, cfg: Mapping[str, Any]) -> tuple[int, int, list[int]]:
        """Active (stem mid, stem, per-stage) channel counts of a canonical config."""
        p = self.preset
        stem = channels(p.stem_channels, cfg["stem.width"])
        stages = [channels(w, cfg[f"stage{s}.width"]) for s, w in enumerate(p.widths, start=1)]
        return _stem_mid(stem), stem, stages

    def _set_active(self, cfg: Config) -> None:
        mid, stem, widths = self._widths(cfg)
        self.stem[0].set_active(out_channels=mid)
        self.stem[3].set_active(out_channels=stem)
        for s, (stage, width) in enumerate(zip(self.stages, widths), start=1):
            depth = int(cfg[f"stage{s}.depth"])
            stage.set_active(depth)
            for b in range(depth):
                block, name = stage[b], f"stage{s}.block{b}"
                block.set_active(out_channels=width, expand=cfg[f"{name}.expand"])
                block.set_policy(
                    bits=cfg[f"{name}.bits"] if self.quant else None,
                    sparsity=cfg[f"{name}.sparsity"] if self.sparsity else None,
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.pool(x))

    # --------------------------------------------------------------------------------------- subnets
    @torch.no_grad()
    def extract(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A plain ``nn.Sequential`` computing subnet ``cfg``; its ``.architecture`` rebuilds it."""
        with self.activated(cfg) as canonical:
            mid, stem, widths = self._widths(canonical)
            conv1, bn1, _, conv2, bn2, _ = self.stem
            parts: OrderedDict[str, nn.Module] = OrderedDict()
            parts["stem"] = nn.Sequential(
                conv1.to_static(self.in_channels),
                bn1.to_static(mid),
                nn.ReLU(),
                conv2.to_static(mid),
                bn2.to_static(stem),
                nn.ReLU(),
            )
            if self.stem_pool is not None:
                parts["stem_pool"] = nn.MaxPool2d(3, stride=2, padding=1)
            c_in = stem
            for s, (stage, width) in enumerate(zip(self.stages, widths), start=1):
                blocks = []
                for block in stage.active_blocks():
                    blocks.append(block.to_static(c_in))
                    c_in = width
                parts[f"stage{s}"] = nn.Sequential(*blocks)
            parts["pool"] = GlobalAvgPool(keepdim=False)
            dropout, fc = self.classifier
            parts["classifier"] = nn.Sequential(nn.Dropout(dropout.p), fc.to_static(c_in))
        model = finalize(nn.Sequential(parts))
        model.train(self.training)
        model.config_json = canonical.to_json()
        return model

    def input_shape(self, cfg: Mapping[str, Any], batch_size: int = 1) -> tuple[int, ...]:
        r = int(self.space.canonical(cfg)["resolution"])
        return (int(batch_size), self.in_channels, r, r)

    def elastic_groups(self) -> dict[str, tuple[str, ...]]:
        # Width holds the expand ratios and the multipliers: OFA-ResNet's last shrinking phase.
        names = self.space.names
        groups = {
            "resolution": ("resolution",),
            "depth": tuple(n for n in names if n.endswith(".depth")),
            "width": tuple(n for n in names if n.endswith((".expand", ".width"))),
        }
        if self.quant:
            groups["quant"] = tuple(n for n in names if n.endswith(".bits"))
        if self.sparsity:
            groups["sparsity"] = tuple(n for n in names if n.endswith(".sparsity"))
        return groups

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Re-sort every bottleneck's middle channels by importance (call before building the optimizer)."""
        for stage in self.stages:
            for block in stage:
                block.sort_channels()

    def layer_specs(self, cfg: Mapping[str, Any]) -> list[LayerSpec]:
        cfg = self.space.canonical(cfg)
        p = self.preset
        r = int(cfg["resolution"])
        mid, stem, widths = self._widths(cfg)
        h = conv_out_size(r, 3, p.stem_stride)

        def stem_layers(c_in: int, c_out: int, stride: int, ih: int, oh: int, i: int) -> list[LayerSpec]:
            size = {"in_h": oh, "in_w": oh, "out_h": oh, "out_w": oh}
            return [
                LayerSpec("conv", c_in, c_out, 3, stride, 1, ih, ih, oh, oh, name=f"stem.{i}"),
                LayerSpec("bn", c_out, c_out, **size, name=f"stem.{i + 1}"),
                LayerSpec("act", c_out, c_out, **size, act="relu", name=f"stem.{i + 2}"),
            ]

        specs = stem_layers(self.in_channels, mid, p.stem_stride, r, h, 0)
        specs += stem_layers(mid, stem, 1, h, h, 3)
        if p.stem_pool:  # parameter-free; no LayerSpec kind (the lookup table's fitted line absorbs its time)
            h = conv_out_size(h, 3, 2)
        size, c_in = (h, h), stem
        for s, width in enumerate(widths, start=1):
            for b in range(int(cfg[f"stage{s}.depth"])):
                name = f"stage{s}.block{b}"
                block_specs, size = self.stages[s - 1][b].layer_specs(
                    size,
                    c_in,
                    name=name,
                    out_channels=width,
                    expand=cfg[f"{name}.expand"],
                    bits=cfg[f"{name}.bits"] if self.quant else 32,
                    sparsity=cfg[f"{name}.sparsity"] if self.sparsity else 1.0,
                )
                specs += block_specs
                c_in = width
        h, w = size
        specs += [
            LayerSpec("pool", c_in, c_in, in_h=h, in_w=w, name="pool"),
            LayerSpec("linear", c_in, self.num_classes, bias=True, name="classifier"),
        ]
        return specs


def supernet(
    preset: str | Preset = "small",
    num_classes: int = 10,
    in_channels: int = 3,
    quant: bool = False,
    sparsity: bool = False,
) -> ResNetSupernet:
    """Build the ResNet supernet of a preset (max subnet active).

    Example:
        >>> net = supernet("small", num_classes=10, in_channels=1)
        >>> net.input_shape(net.space.min(), batch_size=8)
        (8, 1, 24, 24)
    """
    return ResNetSupernet(
        preset, num_classes=num_classes, in_channels=in_channels, quant=quant, sparsity=sparsity
    )
