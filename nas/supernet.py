"""The weight-sharing supernet base class and the per-layer description of a subnet.

A :class:`Supernet` owns a :class:`nas.SearchSpace` and one set of max-size weights. ``activate(cfg)`` sets
every elastic layer for the subnet ``cfg``; ``forward`` then runs that subnet. ``extract(cfg)`` copies the
subnet into a static model of plain ``torch.nn`` layers (see :mod:`nas.static`) that computes the same
function. ``layer_specs(cfg)`` lists the subnet's layers for MACs, parameter counts, model size and per-layer
latency tables: built-in supernets compute it analytically (no forward pass); a supernet of your own gets it
from :func:`trace_layer_specs` on its extracted subnet unless it overrides the method.

Inputs must already have the active resolution: resize with :func:`resize_to` (the supernet never resizes
silently, so that timing and accuracy measurements see exactly the tensor that the subnet gets).

Example:
    >>> import torch
    >>> from search_spaces import mobilenetv3
    >>> net = mobilenetv3.supernet("small").eval()
    >>> cfg = net.activate(net.space.min())
    >>> x = resize_to(torch.randn(2, 3, 32, 32), cfg)
    >>> static = net.extract(cfg)
    >>> bool((static(x) - net(x)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nas.space import Config, SearchSpace

__all__ = ["LayerSpec", "Supernet", "resize_to", "trace_layer_specs"]

ELASTIC_GROUP_KINDS = ("resolution", "depth", "kernel", "width", "quant", "sparsity")


def resize_to(x: torch.Tensor, cfg_or_resolution: Mapping[str, Any] | int | tuple[int, int]) -> torch.Tensor:
    """Resize a batch ``(B, C, H, W)`` to the resolution of a config (its ``"resolution"`` value) or to a size.

    Bilinear, ``align_corners=False``; returns ``x`` itself when the size already matches.

    Example:
        >>> tuple(resize_to(torch.zeros(1, 3, 32, 32), {"resolution": 24}).shape)
        (1, 3, 24, 24)
    """
    if isinstance(cfg_or_resolution, Mapping):
        if "resolution" not in cfg_or_resolution:
            raise KeyError("resize_to: the config has no 'resolution' dimension; pass the size instead")
        size = cfg_or_resolution["resolution"]
    else:
        size = cfg_or_resolution
    h, w = (int(size), int(size)) if isinstance(size, int | float) else (int(size[0]), int(size[1]))
    if x.dim() != 4:
        raise ValueError(f"resize_to: expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an active subnet, described by shape only.

    ``kind`` is one of ``conv``, ``dwconv`` (depthwise), ``linear``, ``se`` (squeeze-excite on
    ``in_channels`` with ``out_channels`` hidden units), ``bn``, ``act`` (``act`` names it), ``pool``
    (global average), ``add`` (residual), and for transformers ``ln`` (layer norm; ``bias`` whether it has
    one), ``attention`` (the parameter-free core ``softmax(q k^T / sqrt(d)) v`` of ``groups`` heads whose
    concatenated width is ``in_channels``) and ``tokens`` (a ``in_h x in_w`` patch map of ``in_channels``
    channels turned into ``out_h`` tokens: a class token when ``out_h = in_h * in_w + 1``, and a learned
    position embedding). Spatial sizes are the input and output height/width; layers on token sequences
    (``linear``, ``ln``, ``attention``, ``act``, ``add``) have the number of tokens as height and width 1,
    and a linear layer on one vector per example has 1 x 1.
    ``bits`` (weight bit-width, 32 = float) and ``density`` (fraction of weights kept; ``pattern`` such as
    ``"2:4"`` for N:M sparsity) describe quantization and sparsity. ``dilation`` is a convolution's (it enters
    :attr:`key` only when it is not 1). ``name`` is the layer's path in the supernet and is not part of
    :attr:`key`.

    Example:
        >>> s = LayerSpec("conv", 16, 32, kernel=3, stride=2, in_h=8, in_w=8, out_h=4, out_w=4)
        >>> s.macs, s.params
        (73728, 4608)
        >>> s.key
        'conv|i16|o32|k3|s2|g1|8x8>4x4|nobias|w32|d1.0'
    """

    kind: str
    in_channels: int
    out_channels: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    in_h: int = 1
    in_w: int = 1
    out_h: int = 1
    out_w: int = 1
    bias: bool = False
    act: str = ""
    bits: int = 32
    density: float = 1.0
    pattern: str = ""
    name: str = ""
    dilation: int = 1

    @property
    def key(self) -> str:
        """Stable text identifying the layer's shape (same shape, same key, in any config or process)."""
        parts = [
            self.kind + (f":{self.act}" if self.act else ""),
            f"i{self.in_channels}",
            f"o{self.out_channels}",
            f"k{self.kernel}",
            f"s{self.stride}",
            f"g{self.groups}",
            f"{self.in_h}x{self.in_w}>{self.out_h}x{self.out_w}",
            "bias" if self.bias else "nobias",
            f"w{self.bits}",
            f"d{float(self.density)}" + (f":{self.pattern}" if self.pattern else ""),
        ]
        if self.dilation != 1:  # only then, so keys (and lookup tables) of undilated layers stay as they were
            parts.append(f"dil{self.dilation}")
        return "|".join(parts)

    @property
    def weight_count(self) -> int:
        """Number of weights (not biases) before sparsity."""
        if self.kind in ("conv", "dwconv"):
            return self.out_channels * (self.in_channels // self.groups) * self.kernel * self.kernel
        if self.kind == "linear":
            return self.in_channels * self.out_channels
        if self.kind == "se":  # reduce: C -> mid, expand: mid -> C (1x1 convs)
            return 2 * self.in_channels * self.out_channels
        return 0

    @property
    def bias_count(self) -> int:
        if self.kind in ("conv", "dwconv", "linear"):
            return self.out_channels if self.bias else 0
        if self.kind == "se":
            return self.in_channels + self.out_channels
        if self.kind == "bn":
            return 2 * self.out_channels  # affine weight and bias (running statistics are buffers)
        if self.kind == "ln":  # affine weight, and a bias unless bias=False
            return 2 * self.out_channels if self.bias else self.out_channels
        if self.kind == "tokens":  # position embedding (one row per token) and the class token, if any
            return self.out_channels * (2 * self.out_h * self.out_w - self.in_h * self.in_w)
        return 0

    @property
    def params(self) -> int:
        """Trainable parameters (weights, biases, BN affine), before sparsity."""
        return self.weight_count + self.bias_count

    @property
    def macs(self) -> int:
        """Multiply-accumulates of convolutions, linear layers (once per token) and attention (norms,
        activations, softmax, pooling, adds and position embeddings count 0).

        Attention counts its two matrix products per head, ``q k^T`` and ``scores @ v``: ``2 * N^2 * width``
        for ``N`` tokens and ``width = heads * head_dim``; its q/k/v and output projections are ``linear``
        layers of their own.
        """
        if self.kind in ("conv", "dwconv", "linear"):
            return self.weight_count * self.out_h * self.out_w
        if self.kind == "se":
            return self.weight_count
        if self.kind == "attention":
            return 2 * self.in_h * self.in_h * self.in_channels
        return 0


class Supernet(nn.Module):
    """Base class of weight-sharing supernets.

    Subclasses build their elastic modules in ``__init__``, then call ``self.activate(self.space.max())``,
    and implement :meth:`_set_active`, :meth:`extract`, :meth:`input_shape`,
    :meth:`elastic_groups`, :meth:`sort_channels` and :meth:`layer_specs`.

    Attributes:
        space: the search space; every config passed in is validated and made canonical against it.
        active_config: the canonical config the elastic layers are set to.
        training_recipe: training settings this kind of supernet is known to train well with
            (:class:`nas.train.TrainConfig` fields such as ``lr``, ``weight_decay``, ``warmup_epochs``,
            ``grad_clip``, ``label_smoothing``, ``distill_labels``); ``nas train`` uses them for the options its
            user does not give, and :func:`nas.train.recipe_for` merges them for the Python API. Empty: the
            defaults suit it.
    """

    training_recipe: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, space: SearchSpace):
        super().__init__()
        if not isinstance(space, SearchSpace):
            raise TypeError(f"Supernet needs a nas.SearchSpace, got {type(space).__name__}")
        self.space = space
        self.active_config: Config | None = None

    # ------------------------------------------------------------------------------------------ activation
    def activate(self, cfg: Mapping[str, Any]) -> Config:
        """Validate and canonicalise ``cfg``, set every elastic layer to it and return the canonical config.

        Raises :class:`nas.InvalidConfigError` naming the bad dimension.
        """
        canonical = self.space.canonical(cfg)
        self._set_active(canonical)
        self.active_config = canonical
        return canonical

    @contextlib.contextmanager
    def activated(self, cfg: Mapping[str, Any]) -> Iterator[Config]:
        """Activate ``cfg`` for the ``with`` block, then restore the previously active config."""
        previous = self.active_config
        try:
            yield self.activate(cfg)
        finally:
            if previous is not None:
                self.activate(previous)

    def _set_active(self, cfg: Config) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _set_active(cfg) to set its layers")

    # ------------------------------------------------------------------------------------------ subnets
    def extract(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A static model of plain torch layers computing subnet ``cfg``.

        Its ``.architecture`` (:func:`nas.static.finalize`) is what :func:`nas.export` records; export attaches
        it when the model lacks one.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement extract(cfg)")

    def input_shape(self, cfg: Mapping[str, Any], batch_size: int = 1) -> tuple[int, ...]:
        """The input shape ``(B, C, H, W)`` subnet ``cfg`` expects."""
        raise NotImplementedError(f"{type(self).__name__} must implement input_shape(cfg, batch_size)")

    def elastic_groups(self) -> dict[str, tuple[str, ...]]:
        """Dimension names per elastic kind (keys among ``resolution, depth, kernel, width, quant, sparsity``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement elastic_groups()")

    def sort_channels(self) -> None:
        """Re-sort expandable channels by importance so narrow subnets keep the most important ones."""
        raise NotImplementedError(f"{type(self).__name__} must implement sort_channels()")

    def layer_specs(self, cfg: Mapping[str, Any]) -> list[LayerSpec]:
        """One :class:`LayerSpec` per active layer of subnet ``cfg``, in execution order.

        This default traces the extracted subnet (:meth:`extract`, one forward pass on zeros of
        :meth:`input_shape`, see :func:`trace_layer_specs`), so a supernet of your own gets MACs, parameter
        counts and lookup-table latency without describing its layers twice. It sees float layers only:
        override it when the space has quantization or sparsity dimensions, or to avoid the forward pass (the
        built-in supernets compute their specs analytically).
        """
        canonical = self.space.canonical(cfg)
        model = self.extract(canonical).eval()
        return trace_layer_specs(model, self.input_shape(canonical, batch_size=1))


def _activation_names() -> dict[type[nn.Module], str]:
    from nas.ops.blocks import ACTIVATIONS  # nas.ops imports this module: import on use

    return {cls: name for name, cls in ACTIVATIONS.items()}


def trace_layer_specs(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerSpec]:
    """The :class:`LayerSpec` list of a static model, read from one forward pass on zeros.

    Recorded, in the order they finish: ``nn.Conv2d`` (``dwconv`` when every channel has its own filter),
    ``nn.Linear``, ``nn.BatchNorm2d`` / ``nn.BatchNorm1d``, ``nn.LayerNorm`` (``ln``, over the last dimension), activation modules
    (``act`` named as in :mod:`nas.ops.blocks`, else the lower-case class name),
    :class:`nas.static.SqueezeExcite` (one ``se`` spec, its inner convs not repeated), global average pooling
    (:class:`nas.static.GlobalAvgPool`, ``nn.AdaptiveAvgPool2d(1)``), :class:`nas.static.Residual` (``add``),
    :class:`nas.static.DotProductAttention` (``attention``) and :class:`nas.static.PatchTokens` (``tokens``).
    A 3-D tensor is a token sequence ``(B, N, C)``: ``N`` tokens as height, ``C`` channels. Parameter-free
    layers of other types (dropout, flatten, pooling windows, activation quantizers) cost nothing here; a
    layer with parameters of any other type is refused, naming it, since its cost would silently be missing.
    Weights are read as float (no bit-width or sparsity).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 10))
        >>> [(s.kind, s.out_h, s.macs) for s in trace_layer_specs(net, (1, 3, 8, 8))]
        [('conv', 4, 3456), ('act', 4, 0), ('linear', 1, 1280)]
    """
    from nas.static import DotProductAttention, GlobalAvgPool, PatchTokens, Residual, SqueezeExcite

    act_names = _activation_names()
    specs: list[LayerSpec] = []

    def spatial(t: torch.Tensor) -> tuple[int, int]:
        if t.dim() == 4:
            return (int(t.shape[-2]), int(t.shape[-1]))
        return (int(t.shape[1]), 1) if t.dim() == 3 else (1, 1)

    def rows(t: torch.Tensor) -> int:
        """Vectors per example that a layer on the last dimension (linear, layer norm) processes."""
        return t[:1].numel() // max(1, int(t.shape[-1])) if t.dim() >= 2 else 1

    def spec_of(name: str, m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerSpec | None:
        (ih, iw), (oh, ow) = spatial(x), spatial(y)
        shape = {"in_h": ih, "in_w": iw, "out_h": oh, "out_w": ow, "name": name}
        if isinstance(m, nn.Conv2d):
            if (
                m.kernel_size[0] != m.kernel_size[1]
                or m.stride[0] != m.stride[1]
                or m.dilation[0] != m.dilation[1]
            ):
                raise ValueError(
                    f"trace_layer_specs: conv {name!r} has kernel {m.kernel_size} / stride {m.stride} / dilation "
                    f"{m.dilation}; LayerSpec describes square ones only: override layer_specs(cfg) for this supernet"
                )
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            kind = "dwconv" if depthwise else "conv"
            return LayerSpec(
                kind, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups,
                bias=m.bias is not None, dilation=m.dilation[0], **shape,
            )  # fmt: skip
        if isinstance(m, nn.Linear):
            n = rows(x)  # tokens: 1 for a (B, features) batch, so such layers keep their old keys
            return LayerSpec(
                "linear", m.in_features, m.out_features, in_h=n, out_h=n, bias=m.bias is not None, name=name
            )
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):  # 1d: after a flatten, as a 1x1 map
            return LayerSpec("bn", m.num_features, m.num_features, **shape)
        if isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1 or not m.elementwise_affine:
                raise ValueError(
                    f"trace_layer_specs: LayerNorm {name!r} normalises {tuple(m.normalized_shape)} "
                    f"(elementwise_affine={m.elementwise_affine}); LayerSpec describes affine layer norms "
                    "over the last dimension only: override layer_specs(cfg) for this supernet"
                )
            n, c = rows(x), m.normalized_shape[0]
            return LayerSpec("ln", c, c, in_h=n, out_h=n, bias=m.bias is not None, name=name)
        if isinstance(m, DotProductAttention):
            width = m.num_heads * m.head_dim
            return LayerSpec("attention", width, width, groups=m.num_heads, **shape)
        if isinstance(m, PatchTokens):
            c = int(y.shape[-1])
            return LayerSpec("tokens", c, c, in_h=ih, in_w=iw, out_h=int(y.shape[1]), out_w=1, name=name)
        if isinstance(m, SqueezeExcite):
            return LayerSpec("se", m.reduce.in_channels, m.reduce.out_channels, bias=True, **shape)
        channels = int(y.shape[-1] if y.dim() == 3 else y.shape[1]) if y.dim() >= 2 else 1
        # A residual adds two tensors of the output's shape (its input's may differ: a projection may stride).
        if isinstance(m, Residual):
            return LayerSpec("add", channels, channels, in_h=oh, in_w=ow, out_h=oh, out_w=ow, name=name)
        if isinstance(m, GlobalAvgPool) or (isinstance(m, nn.AdaptiveAvgPool2d) and (oh, ow) == (1, 1)):
            return LayerSpec("pool", channels, channels, **shape)
        if type(m) in act_names or m.__module__ == "torch.nn.modules.activation":
            act = act_names.get(type(m), type(m).__name__.lower())
            return LayerSpec("act", channels, channels, act=act, **shape)
        return None

    recorded = (
        nn.Conv2d,
        nn.Linear,
        nn.BatchNorm2d,
        nn.BatchNorm1d,
        nn.LayerNorm,
        DotProductAttention,
        PatchTokens,
        SqueezeExcite,
        Residual,
        GlobalAvgPool,
        nn.AdaptiveAvgPool2d,
    )
    handles = []
    inside_se: list[str] = []
    try:
        for name, m in model.named_modules():
            if any(name.startswith(prefix + ".") for prefix in inside_se):
                continue  # the squeeze-excite spec covers its inner convs
            if isinstance(m, SqueezeExcite):
                inside_se.append(name)
            is_leaf = next(m.children(), None) is None
            if not isinstance(m, recorded) and not (
                is_leaf and m.__module__ == "torch.nn.modules.activation"
            ):
                if next(m.parameters(recurse=False), None) is not None:
                    raise ValueError(
                        f"trace_layer_specs: layer {name!r} ({type(m).__name__}) has weights but no LayerSpec kind; "
                        "override layer_specs(cfg) for this supernet"
                    )
                continue

            def hook(mod: nn.Module, args: tuple, out: Any, name: str = name) -> None:
                if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
                    return
                spec = spec_of(name, mod, args[0], out)
                if spec is not None:
                    specs.append(spec)

            handles.append(m.register_forward_hook(hook))
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        model.eval()  # batch norm on one all-zero example would refuse to compute batch statistics
        try:
            with torch.no_grad():
                model(torch.zeros(input_shape, device=device))
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return specs
