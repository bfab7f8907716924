"""Plain building blocks of extracted subnets and their JSON architecture description.

An extracted subnet is a tree of ordinary ``torch.nn`` layers plus the few tiny modules defined here
(:class:`Residual`, :class:`SqueezeExcite`, :class:`GlobalAvgPool`; for vision transformers
:class:`PatchTokens`, :class:`SelfAttention`, :class:`DotProductAttention` and :class:`TakeToken`).
:func:`describe` turns such a tree into a JSON-able dict and :func:`build` turns the dict back into a module
tree with the same structure and state-dict keys, so an exported model can be rebuilt from its manifest and a
safetensors file without any supernet code.

Each module type has a :class:`Codec` (how to read its constructor arguments from an instance and how to
construct it from them); :func:`register` adds codecs for new layer types (quantized or sparse layers).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Residual(nn.Sequential(nn.BatchNorm2d(8), nn.ReLU())))
    >>> arch = describe(m)
    >>> rebuilt = build(arch)
    >>> list(rebuilt.state_dict()) == list(m.state_dict())
    True
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ActQuant",
    "Codec",
    "DotProductAttention",
    "GlobalAvgPool",
    "PatchTokens",
    "Residual",
    "SelfAttention",
    "SqueezeExcite",
    "TakeToken",
    "attend",
    "build",
    "describe",
    "register",
]

FORMAT_VERSION = 1


class Residual(nn.Module):
    """``x + body(x)``, or ``shortcut(x) + body(x)`` with a projection shortcut (ResNet's 1x1 conv + BN where
    the body changes the shape).

    Example:
        >>> Residual(nn.Identity())(torch.ones(1, 2)).tolist()
        [[2.0, 2.0]]
        >>> tuple(Residual(nn.Conv2d(4, 8, 3, 2, 1), shortcut=nn.Conv2d(4, 8, 1, 2))(torch.ones(1, 4, 5, 5)).shape)
        (1, 8, 3, 3)
    """

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return x + self.body(x)
        y = self.body(x)  # body first: the order trace_layer_specs records the layers in
        return self.shortcut(x) + y


class SqueezeExcite(nn.Module):
    """MobileNetV3 squeeze-and-excite: ``x * hsigmoid(expand(relu(reduce(mean_hw(x)))))``.

    Example:
        >>> tuple(SqueezeExcite(16, 8)(torch.randn(2, 16, 5, 5)).shape)
        (2, 16, 5, 5)
    """

    def __init__(self, channels: int, mid_channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid_channels, 1, bias=True)
        self.expand = nn.Conv2d(mid_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.relu(self.reduce(s))
        return x * nn.functional.hardsigmoid(self.expand(s))


class GlobalAvgPool(nn.Module):
    """Mean over height and width (``keepdim`` keeps a 1x1 map for a following 1x1 convolution)."""

    def __init__(self, keepdim: bool = True):
        super().__init__()
        self.keepdim = bool(keepdim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"keepdim={self.keepdim}"


class ActQuant(nn.Module):
    """Static 8-bit activation fake quantization with fixed ``scale`` and ``zero_point`` (exported models).

    Example:
        >>> q = ActQuant(0.1, 10)
        >>> q(torch.tensor([0.04, 0.26, -5.0])).tolist()
        [0.0, 0.30000001192092896, -1.0]
    """

    def __init__(self, scale: float, zero_point: int):
        super().__init__()
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self._explicit(x)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)

    def _explicit(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as plain arithmetic (what ONNX export writes), bit for bit.

        Exported as ``QuantizeLinear -> DequantizeLinear``, a fake quantizer in front of a float convolution
        is a pattern onnxruntime's default optimisations rewrite into an integer convolution with its own
        (per-tensor) weight quantization: another function (logits off by 0.2-0.4 on a quantized ``small``
        subnet). ``Mul, Round, Add, Clip, Sub, Mul`` is left alone. Torch's kernel multiplies by the float32
        reciprocal of the scale and rounds half to even, as ONNX ``Round`` does.
        """
        scale = torch.tensor(self.scale, dtype=x.dtype)
        zero_point = float(self.zero_point)
        q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, 0.0, 255.0)
        return (q - zero_point) * scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}, zero_point={self.zero_point}"


def attend(qkv: torch.Tensor, num_heads: int, head_dim: int) -> torch.Tensor:
    """Scaled dot-product attention of every head, ``softmax(q k^T / sqrt(head_dim)) v``.

    ``qkv`` is ``(B, N, 3 * num_heads * head_dim)``: all queries, then all keys, then all values, each
    head-major. Returns ``(B, N, num_heads * head_dim)`` (heads concatenated). Written as two matrix products
    and a softmax (no fused kernel) so that it traces to plain MatMul / Softmax nodes in ONNX and computes the
    same numbers in the supernet and in the extracted subnet.

    Example:
        >>> tuple(attend(torch.randn(2, 5, 3 * 4 * 8), num_heads=4, head_dim=8).shape)
        (2, 5, 32)
    """
    b, n = qkv.shape[0], qkv.shape[1]
    q, k, v = qkv.reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)  # (B, heads, N, N)
    out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2).reshape(b, n, num_heads * head_dim)


class DotProductAttention(nn.Module):
    """The parameter-free core of multi-head self-attention: :func:`attend` on a ``(B, N, 3*h*d)`` tensor.

    A module of its own so that latency tables can time it and layer tracing can count it (``attention``
    :class:`nas.supernet.LayerSpec`) apart from the projections around it.

    Example:
        >>> tuple(DotProductAttention(2, 4)(torch.randn(1, 3, 24)).shape)
        (1, 3, 8)
    """

    def __init__(self, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = int(num_heads), int(head_dim)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return attend(qkv, self.num_heads, self.head_dim)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``(B, N, embed_dim)`` tokens: ``proj(attend(qkv(x)))``.

    Unlike ``nn.MultiheadAttention`` the inner width ``num_heads * head_dim`` need not equal ``embed_dim``
    (AutoFormer fixes the head width and searches the number of heads), and there is no fused fast path:
    ONNX gets two Gemm/MatMul projections and the plain MatMul / Softmax core of :func:`attend`.

    Example:
        >>> attn = SelfAttention(embed_dim=12, num_heads=3, head_dim=8)
        >>> tuple(attn.qkv.weight.shape), tuple(attn(torch.randn(2, 5, 12)).shape)
        ((72, 12), (2, 5, 12))
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, bias: bool = True):
        super().__init__()
        inner = int(num_heads) * int(head_dim)
        self.qkv = nn.Linear(embed_dim, 3 * inner, bias=bias)
        self.attend = DotProductAttention(num_heads, head_dim)
        self.proj = nn.Linear(inner, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.attend(self.qkv(x)))


class PatchTokens(nn.Module):
    """Patch map ``(B, C, H, W)`` -> tokens ``(B, [1 +] H*W, C)``: optional class token first, plus a learned
    position embedding (one row per token, for this grid size).

    Example:
        >>> tokens = PatchTokens(8, 3, 4, class_token=True)
        >>> tuple(tokens.pos_embed.shape), tuple(tokens(torch.randn(2, 8, 3, 4)).shape)
        ((1, 13, 8), (2, 13, 8))
    """

    def __init__(self, channels: int, grid_h: int, grid_w: int, class_token: bool = True):
        super().__init__()
        self.grid = (int(grid_h), int(grid_w))
        extra = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, channels)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, extra + self.grid[0] * self.grid[1], channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C); a view for channels-last input
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embed

    def extra_repr(self) -> str:
        return (
            f"channels={self.pos_embed.shape[-1]}, grid={self.grid}, class_token={self.cls_token is not None}"
        )


class TakeToken(nn.Module):
    """Token ``index`` of a ``(B, N, C)`` sequence as a ``(B, C)`` batch (the class token's read-out).

    Example:
        >>> TakeToken(0)(torch.arange(6.0).reshape(1, 3, 2)).tolist()
        [[0.0, 1.0]]
    """

    def __init__(self, index: int = 0):
        super().__init__()
        self.index = int(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


@dataclass(frozen=True)
class Codec:
    """How one module type maps to and from its JSON description.

    ``args(module)`` returns JSON-able constructor arguments; ``make(args, children)`` constructs the module
    (``children`` are the already-built child modules, for containers). ``container`` says whether the
    children are described separately (Sequential, Residual) or created by the constructor (SqueezeExcite).
    """

    name: str
    cls: type[nn.Module]
    args: Callable[[nn.Module], dict[str, Any]]
    make: Callable[[dict[str, Any], list[tuple[str, nn.Module]]], nn.Module]
    container: bool = False


_BY_NAME: dict[str, Codec] = {}
_BY_CLASS: dict[type, Codec] = {}


def register(codec: Codec) -> Codec:
    """Make ``codec.cls`` describable and buildable under ``codec.name`` (names must be unique)."""
    existing = _BY_NAME.get(codec.name)
    if existing is not None and existing.cls is not codec.cls:
        raise ValueError(f"architecture type name {codec.name!r} is already used by {existing.cls.__name__}")
    _BY_NAME[codec.name] = codec
    _BY_CLASS[codec.cls] = codec
    return codec


def _leaf(name: str, cls: type[nn.Module], args: Callable[[Any], dict[str, Any]]) -> None:
    register(Codec(name, cls, args, lambda a, _children, cls=cls: cls(**a)))


def _conv_args(m: nn.Conv2d) -> dict[str, Any]:
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise ValueError(f"describe: Conv2d with padding={m.padding!r}/{m.padding_mode!r} is not supported")
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
    }


def _bn_args(m: nn.BatchNorm2d) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


_leaf("Conv2d", nn.Conv2d, _conv_args)
_leaf("BatchNorm2d", nn.BatchNorm2d, _bn_args)
_leaf("BatchNorm1d", nn.BatchNorm1d, _bn_args)
_leaf(
    "Linear",
    nn.Linear,
    lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
)
_leaf(
    "LayerNorm",
    nn.LayerNorm,
    lambda m: {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": m.bias is not None,
    },
)


def _size_arg(value: Any) -> Any:
    """A pooling size as JSON: an int (or None) stays, a tuple becomes a list."""
    return list(value) if isinstance(value, tuple | list) else value


def _pool(name: str, cls: type[nn.Module], fields: tuple[str, ...]) -> None:
    """Parameter-free pooling that a user's ``extract`` may use (``trace_layer_specs`` costs it already)."""
    sizes = ("output_size", "kernel_size", "stride", "padding", "dilation")

    def args(m: nn.Module) -> dict[str, Any]:
        if getattr(m, "return_indices", False):
            raise ValueError(f"describe: {name} with return_indices=True is not supported")
        return {f: _size_arg(getattr(m, f)) if f in sizes else getattr(m, f) for f in fields}

    def make(a: dict[str, Any], _children: list[tuple[str, nn.Module]]) -> nn.Module:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})

    register(Codec(name, cls, args, make))


_pool("AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d, ("output_size",))
_pool("MaxPool2d", nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode"))
_pool(
    "AvgPool2d",
    nn.AvgPool2d,
    ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
)
_leaf("ReLU", nn.ReLU, lambda m: {})
_leaf("ReLU6", nn.ReLU6, lambda m: {})
_leaf("Hardswish", nn.Hardswish, lambda m: {})
_leaf("Hardsigmoid", nn.Hardsigmoid, lambda m: {})
_leaf("GELU", nn.GELU, lambda m: {"approximate": m.approximate})
# The activations a latency lookup table can time (nas.hw.lut) besides those above.
_leaf("SiLU", nn.SiLU, lambda m: {})
_leaf("Sigmoid", nn.Sigmoid, lambda m: {})
_leaf("Tanh", nn.Tanh, lambda m: {})
_leaf("LeakyReLU", nn.LeakyReLU, lambda m: {"negative_slope": m.negative_slope})
_leaf("ELU", nn.ELU, lambda m: {"alpha": m.alpha})
_leaf("Mish", nn.Mish, lambda m: {})
_leaf("Identity", nn.Identity, lambda m: {})
_leaf("Dropout", nn.Dropout, lambda m: {"p": m.p})
_leaf("Dropout2d", nn.Dropout2d, lambda m: {"p": m.p})
_leaf("Flatten", nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim})
_leaf("ActQuant", ActQuant, lambda m: {"scale": m.scale, "zero_point": m.zero_point})
_leaf("GlobalAvgPool", GlobalAvgPool, lambda m: {"keepdim": m.keepdim})
_leaf(
    "SqueezeExcite",
    SqueezeExcite,
    lambda m: {"channels": m.reduce.in_channels, "mid_channels": m.reduce.out_channels},
)
_leaf("TakeToken", TakeToken, lambda m: {"index": m.index})
_leaf(
    "DotProductAttention", DotProductAttention, lambda m: {"num_heads": m.num_heads, "head_dim": m.head_dim}
)
_leaf(
    "PatchTokens",
    PatchTokens,
    lambda m: {
        "channels": m.pos_embed.shape[-1],
        "grid_h": m.grid[0],
        "grid_w": m.grid[1],
        "class_token": m.cls_token is not None,
    },
)
_leaf(
    "SelfAttention",
    SelfAttention,
    lambda m: {
        "embed_dim": m.qkv.in_features,
        "num_heads": m.attend.num_heads,
        "head_dim": m.attend.head_dim,
        "bias": m.qkv.bias is not None,
    },
)
register(Codec("Sequential", nn.Sequential, lambda m: {}, lambda a, ch: nn.Sequential(OrderedDict(ch)), True))
# Children "body" and, for a projection shortcut, "shortcut" (architectures written before it have only "body").
register(Codec("Residual", Residual, lambda m: {}, lambda a, ch: Residual(**dict(ch)), True))


def describe(module: nn.Module) -> dict[str, Any]:
    """The JSON-able description of a tree of registered modules.

    Raises ``TypeError`` naming the first module type that has no codec and where it sits in the tree.
    """
    return _describe(module, "root")


def _describe(module: nn.Module, path: str) -> dict[str, Any]:
    codec = _BY_CLASS.get(type(module))
    if codec is None:
        known = ", ".join(sorted(_BY_NAME))
        raise TypeError(
            f"describe: no codec for {type(module).__name__} (at {path}); registered types: {known}. "
            "Build the extracted subnet from those, or add the type with nas.static.register(Codec(...))"
        )
    spec: dict[str, Any] = {"type": codec.name, "args": codec.args(module)}
    if codec.container:
        spec["children"] = [
            [name, _describe(child, f"{path}.{name}")] for name, child in module.named_children()
        ]
    return spec


def build(architecture: dict[str, Any]) -> nn.Module:
    """Construct the module tree described by ``architecture`` (from :func:`describe`), untrained weights.

    The root module gets an ``architecture`` attribute holding (a copy of) the description.
    """
    module = _build(architecture, "root")
    module.architecture = json.loads(json.dumps(architecture))
    return module


def _build(spec: Any, path: str) -> nn.Module:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"build: {path} must be an object with a 'type' key, got {type(spec).__name__}")
    codec = _BY_NAME.get(spec["type"])
    if codec is None:
        raise ValueError(
            f"build: {path} has unknown type {spec['type']!r}; known: {', '.join(sorted(_BY_NAME))}"
        )
    args = spec.get("args", {})
    torch_layer = codec.cls.__module__.startswith("torch.")
    placement = sorted({"device", "dtype"} & set(args)) if torch_layer and isinstance(args, dict) else []
    if placement:
        # describe() never writes them for torch's layers; from a manifest they would put a layer elsewhere
        raise ValueError(
            f"build: {path} ({spec['type']}) has argument(s) {placement}, which describe() never writes"
        )
    children = [(str(name), _build(child, f"{path}.{name}")) for name, child in spec.get("children", [])]
    try:
        return codec.make(dict(args), children)
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"build: cannot construct {path} ({spec['type']}): {exc}") from exc


def finalize(module: nn.Module) -> nn.Module:
    """Attach ``module.architecture = describe(module)`` and return the module (eval mode untouched)."""
    module.architecture = describe(module)
    return module
