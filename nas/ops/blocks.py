"""Elastic composite blocks built from the elastic layers: squeeze-excite, the inverted-residual MBConv and
the ResNet bottleneck.

Example:
    >>> import torch
    >>> block = ElasticMBConv(16, 16, expand_ratios=(3, 6), kernel_sizes=(3, 5), act="hswish", use_se=True)
    >>> block.set_active(expand=3, kernel=3)
    >>> block = block.eval()
    >>> x = torch.randn(2, 16, 8, 8)
    >>> bool((block.to_static(16)(x) - block(x)).abs().max() < 1e-6)
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.ops.elastic import ElasticBatchNorm2d, ElasticConv2d, make_divisible
from nas.ops.quant import ElasticActQuant
from nas.ops.sparse import parse_sparsity
from nas.static import Residual, SqueezeExcite
from nas.supernet import LayerSpec

__all__ = ["ACTIVATIONS", "ElasticBottleneck", "ElasticMBConv", "ElasticSqueezeExcite", "conv_out_size"]

# Activation name -> plain module class (shared by supernet and extracted model so they compute alike).
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def conv_out_size(size: int, kernel: int, stride: int) -> int:
    """Spatial output size of a "same"-padded (``kernel // 2``) convolution."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}") from None


class ElasticSqueezeExcite(nn.Module):
    """Squeeze-excite over the first ``C`` channels; hidden units ``make_divisible(C // reduction, divisor)``.

    ``C`` is the active (expanded) width of the input, so the hidden width shrinks with the expand ratio, as in
    Once-for-All's dynamic SE. Matches :class:`nas.static.SqueezeExcite` operation for operation.
    """

    def __init__(self, channels: int, reduction: int = 4, divisor: int = 8):
        super().__init__()
        self.max_channels = int(channels)
        self.reduction = int(reduction)
        self.divisor = int(divisor)
        hidden = self.hidden_for(channels)
        self.reduce = ElasticConv2d(channels, hidden, 1, bias=True)
        self.expand = ElasticConv2d(hidden, channels, 1, bias=True)

    def hidden_for(self, channels: int) -> int:
        """Hidden units used when ``channels`` come in."""
        return make_divisible(channels // self.reduction, self.divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        self.reduce.active_out_channels = self.hidden_for(c)
        self.expand.active_out_channels = c
        s = x.mean((2, 3), keepdim=True)
        s = torch.relu(self.reduce(s))
        return x * F.hardsigmoid(self.expand(s))

    @torch.no_grad()
    def to_static(self, channels: int) -> SqueezeExcite:
        hidden = self.hidden_for(channels)
        self.reduce.active_out_channels = hidden
        self.expand.active_out_channels = channels
        se = SqueezeExcite(channels, hidden)
        se.reduce = self.reduce.to_static(channels)
        se.expand = self.expand.to_static(hidden)
        return se

    @torch.no_grad()
    def sort_hidden(self) -> None:
        """Order hidden units by the L1 norm of their outgoing weights (largest first)."""
        importance = self.expand.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.reduce.permute_channels(order, dim=0)
        self.expand.permute_channels(order, dim=1)

    @torch.no_grad()
    def permute_channels(self, order: torch.Tensor) -> None:
        """Reorder the (outer) channels the block gates."""
        self.reduce.permute_channels(order, dim=1)
        self.expand.permute_channels(order, dim=0)


class ElasticMBConv(nn.Module):
    """MobileNetV2/V3 inverted residual with elastic expand ratio and depthwise kernel.

    ``1x1 expand -> BN -> act -> kxk depthwise (stride) -> BN -> act -> [SE] -> 1x1 project -> BN [+ x]``.
    The hidden width is ``make_divisible(in_channels * expand, divisor)``; the residual is used when the
    stride is 1 and the channel counts match.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratios: Sequence[float] = (3, 4, 6),
        kernel_sizes: Sequence[int] = (3, 5, 7),
        stride: int = 1,
        act: str = "relu",
        use_se: bool = False,
        divisor: int = 8,
        quant: bool = False,
        kernel_transform: bool = False,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = int(stride)
        self.act_name = act
        self.use_se = bool(use_se)
        self.divisor = int(divisor)
        self.use_residual = self.stride == 1 and self.in_channels == self.out_channels
        hidden = self.hidden_for(self.expand_ratios[-1])
        self.max_hidden = hidden
        self.expand_conv = ElasticConv2d(in_channels, hidden, 1)
        self.expand_bn = ElasticBatchNorm2d(hidden)
        self.depthwise = ElasticConv2d(
            hidden,
            hidden,
            self.kernel_sizes,
            stride=stride,
            depthwise=True,
            kernel_transform=kernel_transform,
        )
        self.depthwise_bn = ElasticBatchNorm2d(hidden)
        self.act = make_activation(act)
        self.se = ElasticSqueezeExcite(hidden, divisor=divisor) if use_se else None
        self.project = ElasticConv2d(hidden, out_channels, 1)
        self.project_bn = ElasticBatchNorm2d(out_channels)
        self.active_expand = self.expand_ratios[-1]
        self.active_kernel = self.kernel_sizes[-1]
        # 8-bit input quantization of each conv, active when the block's weights are quantized.
        self.quant = bool(quant)
        if self.quant:
            self.expand_aq = ElasticActQuant()
            self.depthwise_aq = ElasticActQuant()
            self.project_aq = ElasticActQuant()
        self.active_bits = 32
        self.active_sparsity: float | str = 1.0

    def hidden_for(self, expand: float) -> int:
        """Hidden (expanded) channels for an expand ratio."""
        return make_divisible(round(self.in_channels * expand), self.divisor)

    def set_active(self, expand: float, kernel: int) -> None:
        if expand not in self.expand_ratios:
            raise ValueError(
                f"ElasticMBConv: expand={expand!r} is not allowed; use one of {self.expand_ratios}"
            )
        self.expand_conv.set_active(out_channels=self.hidden_for(expand))
        self.depthwise.set_active(kernel=kernel)
        self.active_expand, self.active_kernel = expand, int(kernel)

    def set_policy(self, bits: int | None = None, sparsity: float | str | None = None) -> None:
        """Weight bit-width of the block's convs (with 8-bit inputs when < 32) and sparsity of its 1x1 convs.

        The depthwise conv stays dense (its k*k filters fit no N:M group and hold few weights) and the SE
        stays float (a few hundred MACs); both are common practice for quantized/sparse MobileNets.
        """
        if bits is not None:
            if bits != 32 and not self.quant:
                raise ValueError("ElasticMBConv: built with quant=False; only 32-bit weights are available")
            for conv in (self.expand_conv, self.depthwise, self.project):
                conv.set_policy(bits=bits)
            if self.quant:
                for aq in (self.expand_aq, self.depthwise_aq, self.project_aq):
                    aq.set_active(bits)
            self.active_bits = int(bits)
        if sparsity is not None:
            for conv in (self.expand_conv, self.project):
                conv.set_policy(sparsity=sparsity)
            self.active_sparsity = sparsity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.active_bits != 32
        y = self.act(self.expand_bn(self.expand_conv(self.expand_aq(x) if q else x)))
        y = self.act(self.depthwise_bn(self.depthwise(self.depthwise_aq(y) if q else y)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(self.project_aq(y) if q else y))
        return x + y if self.use_residual else y

    def _static_quant(self, name: str) -> list[nn.Module]:
        if self.active_bits == 32:
            return []
        aq = getattr(self, f"{name}_aq").to_static()
        return [] if isinstance(aq, nn.Identity) else [aq]

    @torch.no_grad()
    def to_static(self, in_channels: int | None = None) -> nn.Module:
        """Plain layers for the active settings: ``Sequential(expand, depthwise, [se], project)``."""
        c_in = self.in_channels if in_channels is None else int(in_channels)
        hidden = self.expand_conv.active_out_channels
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        parts["expand"] = nn.Sequential(
            *self._static_quant("expand"),
            self.expand_conv.to_static(c_in),
            self.expand_bn.to_static(hidden),
            make_activation(self.act_name),
        )
        parts["depthwise"] = nn.Sequential(
            *self._static_quant("depthwise"),
            self.depthwise.to_static(hidden),
            self.depthwise_bn.to_static(hidden),
            make_activation(self.act_name),
        )
        if self.se is not None:
            parts["se"] = self.se.to_static(hidden)
        parts["project"] = nn.Sequential(
            *self._static_quant("project"),
            self.project.to_static(hidden),
            self.project_bn.to_static(self.out_channels),
        )
        body = nn.Sequential(parts)
        block = Residual(body) if self.use_residual else body
        return block.train(self.training)

    def layer_specs(
        self,
        size: tuple[int, int],
        name: str = "",
        expand: float | None = None,
        kernel: int | None = None,
        bits: int | None = None,
        sparsity: float | str | None = None,
    ) -> tuple[list[LayerSpec], tuple[int, int]]:
        """Specs of the block for an input of ``size`` (H, W); returns them and the output size.

        Settings left as ``None`` are the active ones; passing them describes another setting without
        touching the layers (cheap, side-effect free).
        """
        h, w = size
        hidden = self.expand_conv.active_out_channels if expand is None else self.hidden_for(expand)
        k = self.active_kernel if kernel is None else int(kernel)
        oh, ow = conv_out_size(h, k, self.stride), conv_out_size(w, k, self.stride)
        act = self.act_name
        bits = self.active_bits if bits is None else int(bits)
        density, nm = parse_sparsity(self.active_sparsity if sparsity is None else sparsity)
        sparse = {"bits": bits, "density": density, "pattern": f"{nm[0]}:{nm[1]}" if nm else ""}
        specs = [
            LayerSpec("conv", self.in_channels, hidden, 1, 1, 1, h, w, h, w, name=f"{name}.expand", **sparse),
            LayerSpec("bn", hidden, hidden, in_h=h, in_w=w, out_h=h, out_w=w, name=f"{name}.expand_bn"),
            LayerSpec(
                "act", hidden, hidden, in_h=h, in_w=w, out_h=h, out_w=w, act=act, name=f"{name}.expand_act"
            ),
            LayerSpec(
                "dwconv",
                hidden,
                hidden,
                k,
                self.stride,
                hidden,
                h,
                w,
                oh,
                ow,
                bits=bits,
                name=f"{name}.depthwise",
            ),
            LayerSpec(
                "bn", hidden, hidden, in_h=oh, in_w=ow, out_h=oh, out_w=ow, name=f"{name}.depthwise_bn"
            ),
            LayerSpec(
                "act",
                hidden,
                hidden,
                in_h=oh,
                in_w=ow,
                out_h=oh,
                out_w=ow,
                act=act,
                name=f"{name}.depthwise_act",
            ),
        ]
        if self.se is not None:
            se_hidden = self.se.hidden_for(hidden)
            specs.append(
                LayerSpec(
                    "se",
                    hidden,
                    se_hidden,
                    in_h=oh,
                    in_w=ow,
                    out_h=oh,
                    out_w=ow,
                    bias=True,
                    name=f"{name}.se",
                )
            )
        specs += [
            LayerSpec(
                "conv", hidden, self.out_channels, 1, 1, 1, oh, ow, oh, ow, name=f"{name}.project", **sparse
            ),
            LayerSpec(
                "bn",
                self.out_channels,
                self.out_channels,
                in_h=oh,
                in_w=ow,
                out_h=oh,
                out_w=ow,
                name=f"{name}.project_bn",
            ),
        ]
        if self.use_residual:
            specs.append(
                LayerSpec(
                    "add",
                    self.out_channels,
                    self.out_channels,
                    in_h=oh,
                    in_w=ow,
                    out_h=oh,
                    out_w=ow,
                    name=f"{name}.add",
                )
            )
        return specs, (oh, ow)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """OFA channel re-sorting: hidden channels by the L1 norm of the project weights, largest first.

        The expand conv/BN, depthwise conv/BN and SE are permuted consistently, so the block computes the
        same function afterwards; narrower settings then keep the most important channels.
        """
        if self.se is not None:
            self.se.sort_hidden()
        importance = self.project.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.expand_conv.permute_channels(order, dim=0)
        self.expand_bn.permute_channels(order)
        self.depthwise.permute_channels(order, dim=0)
        self.depthwise_bn.permute_channels(order)
        if self.se is not None:
            self.se.permute_channels(order)
        self.project.permute_channels(order, dim=1)


class ElasticBottleneck(nn.Module):
    """ResNet bottleneck with elastic output width and expand ratio (Once-for-All ResNet's dynamic block).

    ``1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 -> BN``, plus the shortcut, then ReLU. The middle
    width is ``make_divisible(round(out * expand), divisor)`` of the *active* output channels (as OFA computes
    it); input channels are read from the incoming tensor. With ``projection`` the shortcut is a strided 1x1
    conv + BN (torchvision's choice; OFA's average pool before it has no :class:`LayerSpec` kind to time it in
    a lookup table), else the identity, which needs the input to have the block's output shape.

    Example:
        >>> import torch
        >>> block = ElasticBottleneck(16, 64, expand_ratios=(0.25, 0.5), stride=2, projection=True).eval()
        >>> block.set_active(out_channels=48, expand=0.25)
        >>> x = torch.randn(2, 8, 9, 9)
        >>> tuple(block(x).shape), bool((block.to_static(8)(x) - block(x)).abs().max() < 1e-6)
        ((2, 48, 5, 5), True)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratios: Sequence[float] = (0.2, 0.25, 0.35),
        stride: int = 1,
        projection: bool = False,
        divisor: int = 8,
        quant: bool = False,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expand_ratios = tuple(sorted(expand_ratios))
        self.stride = int(stride)
        self.divisor = int(divisor)
        if not projection and (self.stride != 1 or self.in_channels != self.out_channels):
            raise ValueError(
                f"ElasticBottleneck: an identity shortcut needs stride 1 and in_channels == out_channels, got "
                f"stride={stride}, {in_channels} -> {out_channels}; pass projection=True"
            )
        self.projection = bool(projection)
        mid = self.mid_for(self.out_channels, self.expand_ratios[-1])
        self.conv1 = ElasticConv2d(in_channels, mid, 1)
        self.bn1 = ElasticBatchNorm2d(mid)
        self.conv2 = ElasticConv2d(mid, mid, 3, stride=stride)
        self.bn2 = ElasticBatchNorm2d(mid)
        self.conv3 = ElasticConv2d(mid, out_channels, 1)
        self.bn3 = ElasticBatchNorm2d(out_channels)
        self.shortcut_conv = (
            ElasticConv2d(in_channels, out_channels, 1, stride=stride) if projection else None
        )
        self.shortcut_bn = ElasticBatchNorm2d(out_channels) if projection else None
        self.act = nn.ReLU()
        self.active_out_channels = self.out_channels
        self.active_expand = self.expand_ratios[-1]
        # 8-bit input quantization of each conv while the weights are quantized; conv1 and the shortcut read
        # the same tensor, so they share one observer.
        self.quant = bool(quant)
        if self.quant:
            self.input_aq = ElasticActQuant()
            self.conv2_aq = ElasticActQuant()
            self.conv3_aq = ElasticActQuant()
        self.active_bits = 32
        self.active_sparsity: float | str = 1.0

    def mid_for(self, out_channels: int, expand: float) -> int:
        """Middle (bottleneck) channels for an output width and expand ratio."""
        return make_divisible(round(out_channels * expand), self.divisor)

    def _convs(self) -> list[ElasticConv2d]:
        return [self.conv1, self.conv2, self.conv3, *([self.shortcut_conv] if self.projection else [])]

    def set_active(self, out_channels: int, expand: float) -> None:
        if expand not in self.expand_ratios:
            raise ValueError(
                f"ElasticBottleneck: expand={expand!r} is not allowed; use one of {self.expand_ratios}"
            )
        if not 1 <= int(out_channels) <= self.out_channels:
            raise ValueError(
                f"ElasticBottleneck: out_channels={out_channels} is out of range; use [1, {self.out_channels}]"
            )
        mid = self.mid_for(int(out_channels), expand)
        self.conv1.set_active(out_channels=mid)
        self.conv2.set_active(out_channels=mid)
        self.conv3.set_active(out_channels=int(out_channels))
        if self.projection:
            self.shortcut_conv.set_active(out_channels=int(out_channels))
        self.active_out_channels, self.active_expand = int(out_channels), expand

    def set_policy(self, bits: int | None = None, sparsity: float | str | None = None) -> None:
        """Weight bit-width (with 8-bit inputs when < 32) and sparsity of all the block's convs."""
        if bits is not None:
            if bits != 32 and not self.quant:
                raise ValueError(
                    "ElasticBottleneck: built with quant=False; only 32-bit weights are available"
                )
            for conv in self._convs():
                conv.set_policy(bits=bits)
            if self.quant:
                for aq in (self.input_aq, self.conv2_aq, self.conv3_aq):
                    aq.set_active(bits)
            self.active_bits = int(bits)
        if sparsity is not None:
            for conv in self._convs():
                conv.set_policy(sparsity=sparsity)
            self.active_sparsity = sparsity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.active_bits != 32
        xq = self.input_aq(x) if q else x
        y = self.act(self.bn1(self.conv1(xq)))
        y = self.act(self.bn2(self.conv2(self.conv2_aq(y) if q else y)))
        y = self.bn3(self.conv3(self.conv3_aq(y) if q else y))
        shortcut = self.shortcut_bn(self.shortcut_conv(xq)) if self.projection else x
        return self.act(shortcut + y)

    def _static_quant(self, name: str) -> list[nn.Module]:
        if self.active_bits == 32:
            return []
        aq = getattr(self, f"{name}_aq").to_static()
        return [] if isinstance(aq, nn.Identity) else [aq]

    @torch.no_grad()
    def to_static(self, in_channels: int) -> nn.Sequential:
        """Plain layers for the active settings: ``Sequential(residual=Residual(body, [shortcut]), act=ReLU)``."""
        c_in, c_out = int(in_channels), self.active_out_channels
        mid = self.conv1.active_out_channels
        body = nn.Sequential(
            OrderedDict(
                conv1=nn.Sequential(
                    *self._static_quant("input"),
                    self.conv1.to_static(c_in),
                    self.bn1.to_static(mid),
                    nn.ReLU(),
                ),
                conv2=nn.Sequential(
                    *self._static_quant("conv2"),
                    self.conv2.to_static(mid),
                    self.bn2.to_static(mid),
                    nn.ReLU(),
                ),
                conv3=nn.Sequential(
                    *self._static_quant("conv3"), self.conv3.to_static(mid), self.bn3.to_static(c_out)
                ),
            )
        )
        shortcut = None
        if self.projection:
            shortcut = nn.Sequential(
                *self._static_quant("input"),
                self.shortcut_conv.to_static(c_in),
                self.shortcut_bn.to_static(c_out),
            )
        block = nn.Sequential(OrderedDict(residual=Residual(body, shortcut), act=nn.ReLU()))
        return block.train(self.training)

    def layer_specs(
        self,
        size: tuple[int, int],
        in_channels: int,
        name: str = "",
        out_channels: int | None = None,
        expand: float | None = None,
        bits: int | None = None,
        sparsity: float | str | None = None,
    ) -> tuple[list[LayerSpec], tuple[int, int]]:
        """Specs of the block for an input of ``size`` (H, W) and ``in_channels``; returns them and the output
        size. Settings left as ``None`` are the active ones (passing them touches no layer), in the order
        :func:`nas.supernet.trace_layer_specs` records the static block: body, shortcut, add, ReLU.
        """
        h, w = size
        c_in = int(in_channels)
        c_out = self.active_out_channels if out_channels is None else int(out_channels)
        mid = self.mid_for(c_out, self.active_expand if expand is None else expand)
        oh, ow = conv_out_size(h, 3, self.stride), conv_out_size(w, 3, self.stride)
        bits = self.active_bits if bits is None else int(bits)
        density, nm = parse_sparsity(self.active_sparsity if sparsity is None else sparsity)
        policy = {"bits": bits, "density": density, "pattern": f"{nm[0]}:{nm[1]}" if nm else ""}

        def conv(cin: int, cout: int, k: int, stride: int, ih: int, iw: int, label: str) -> LayerSpec:
            sh, sw = conv_out_size(ih, k, stride), conv_out_size(iw, k, stride)
            return LayerSpec(
                "conv", cin, cout, k, stride, 1, ih, iw, sh, sw, name=f"{name}.{label}", **policy
            )

        def bn(c: int, sh: int, sw: int, label: str) -> LayerSpec:
            return LayerSpec("bn", c, c, in_h=sh, in_w=sw, out_h=sh, out_w=sw, name=f"{name}.{label}")

        def relu(c: int, sh: int, sw: int, label: str) -> LayerSpec:
            return LayerSpec(
                "act", c, c, in_h=sh, in_w=sw, out_h=sh, out_w=sw, act="relu", name=f"{name}.{label}"
            )

        specs = [
            conv(c_in, mid, 1, 1, h, w, "conv1"),
            bn(mid, h, w, "bn1"),
            relu(mid, h, w, "act1"),
            conv(mid, mid, 3, self.stride, h, w, "conv2"),
            bn(mid, oh, ow, "bn2"),
            relu(mid, oh, ow, "act2"),
            conv(mid, c_out, 1, 1, oh, ow, "conv3"),
            bn(c_out, oh, ow, "bn3"),
        ]
        if self.projection:
            specs += [conv(c_in, c_out, 1, self.stride, h, w, "shortcut"), bn(c_out, oh, ow, "shortcut_bn")]
        specs += [
            LayerSpec("add", c_out, c_out, in_h=oh, in_w=ow, out_h=oh, out_w=ow, name=f"{name}.add"),
            relu(c_out, oh, ow, "act"),
        ]
        return specs, (oh, ow)

    @torch.no_grad()
    def sort_channels(self) -> None:
        """OFA-ResNet's re-sorting of the middle channels: conv2's outputs by the L1 norm of conv3's weights
        reading them, then conv1's outputs by the L1 norm of conv2's weights reading them (largest first).

        Convs and BNs are permuted consistently, so the block computes the same function afterwards; smaller
        expand ratios then keep the most important channels. The outer (stage) width is not re-sorted: it is
        shared by every block of the stage, their shortcuts and the next stage.
        """
        order = torch.argsort(self.conv3.weight.abs().sum(dim=(0, 2, 3)), descending=True)
        self.conv3.permute_channels(order, dim=1)
        self.bn2.permute_channels(order)
        self.conv2.permute_channels(order, dim=0)
        order = torch.argsort(self.conv2.weight.abs().sum(dim=(0, 2, 3)), descending=True)
        self.conv2.permute_channels(order, dim=1)
        self.bn1.permute_channels(order)
        self.conv1.permute_channels(order, dim=0)
